"""The paper's teacher, torchvision's MobileNet-V2 in its CIFAR form, and students cut from it.

CIFAR form (as in the authors' code): the stem's stride 2 and the second stage's stride 2 become 1,
so a 32×32 image keeps enough resolution; parameters are unchanged (2,236,682 at width 1.0).

Students, as in the paper: the teacher's ``features`` with the last ``cut`` modules removed, then
global average pooling and a linear layer. ``cut=5`` keeps the stem and 13 inverted-residual blocks:
543,498 parameters, 4.12× fewer than the teacher. Other cuts give the paper's compression sweep.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import MobileNetV2, mobilenet_v2

from .registry import register_model

#: cut -> compression ratio at width 1.0 with 10 classes (parameters counted; the paper's sweep).
CUT_RATIOS = {3: 2.19, 5: 4.12, 7: 7.29, 9: 12.04, 11: 28.97, 13: 54.59, 15: 139.43, 17: 1121.71}


def _no_inplace(model: nn.Module) -> nn.Module:
    """In-place activations break hook-based attributions (Grad-CAM, DeepLift): turn them off."""
    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            m.inplace = False
    return model


def _cifar_features(width_mult: float, num_classes: int) -> MobileNetV2:
    net = mobilenet_v2(num_classes=num_classes, width_mult=width_mult)
    net.features[0][0].stride = (1, 1)  # stem
    net.features[2].conv[1][0].stride = (1, 1)  # first block of the second stage (depthwise conv)
    return net


class CutMobileNetV2(nn.Module):
    """The first modules of a CIFAR MobileNet-V2's ``features``, pooled and classified linearly."""

    def __init__(self, features: nn.Sequential, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model(
    family="mobilenetv2",
    description="Teacher: MobileNet-V2, CIFAR strides (2.24 M parameters at width 1.0)",
)
def mobilenetv2_cifar(num_classes: int = 10, width_mult: float = 1.0, dropout: float = 0.2) -> nn.Module:
    net = _cifar_features(width_mult, num_classes)
    net.classifier[0].p = dropout
    return _no_inplace(net)


@register_model(
    family="mobilenetv2",
    description="Student: the teacher's features minus the last `cut` modules, pooled, linear",
)
def mobilenetv2_cifar_cut(
    num_classes: int = 10, cut: int = 5, width_mult: float = 1.0, stem_stride: int = 1
) -> nn.Module:
    full = _cifar_features(width_mult, num_classes)
    # stem_stride=2 halves the resolution at once: same parameters, about a quarter of the work
    full.features[0][0].stride = (stem_stride, stem_stride)
    n = len(full.features)
    if not 1 <= cut < n:
        raise ValueError(f"cut must be between 1 and {n - 1}, got {cut}")
    features = full.features[: n - cut]
    last = features[-1]
    channels = last.out_channels if hasattr(last, "out_channels") else last[0].out_channels
    return _no_inplace(CutMobileNetV2(features, channels, num_classes))


def _cut_student(cut: int, note: str = "") -> str:
    """The registry's description of the student that drops the teacher's last ``cut`` modules."""
    return f"Student: teacher cut by {cut} modules, {CUT_RATIOS[cut]}× smaller{note}"


@register_model(
    family="mobilenetv2",
    description=(
        "Student for CPUs: the paper's cut-by-5 student (4.12× smaller) with a stride-2 stem, 4× fewer MACs"
    ),
)
def mnv2_student_4x_fast(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """The paper's student is not much faster than the teacher on a CPU (README, Benchmarks): most of
    the work sits in the early full-resolution layers that the cut keeps. Downsampling in the stem
    removes that work."""
    return mobilenetv2_cifar_cut(num_classes=num_classes, cut=5, width_mult=width_mult, stem_stride=2)


#: Four inverted-residual blocks that reach 4×4 by the third: few layers, so little per-layer overhead.
EDGE_SETTING = [[1, 16, 1, 1], [6, 32, 1, 2], [6, 64, 1, 2], [6, 280, 1, 1]]


@register_model(
    family="mobilenetv2",
    description=(
        "Student for CPUs: 4 MobileNet-V2 blocks, downsampled early; 4.14× smaller, ≥4× faster at batch 1"
    ),
)
def mnv2_student_4x_edge(num_classes: int = 10, width_mult: float = 1.0, dropout: float = 0.2) -> nn.Module:
    """At batch 1 on a CPU much of the time is per-layer overhead, not arithmetic: the stride-2 stem
    student does 6× fewer MACs than the teacher yet keeps its 13 blocks and falls short of 4× the
    teacher's speed at batch 1. This one keeps the paper's 4.1× parameter ratio (540,218) in 4 blocks
    (torchvision's ImageNet strides, the last block wide) to clear 4×; benchmarks/bench_latency.py
    measures it (the figures: README, Benchmarks)."""
    net = mobilenet_v2(
        num_classes=num_classes,
        width_mult=width_mult,
        inverted_residual_setting=EDGE_SETTING,
        dropout=dropout,
    )
    return _no_inplace(net)


@register_model(family="mobilenetv2", description=_cut_student(3))
def mnv2_student_2x(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """MobileNet-V2 CIFAR student, cut=3 (2.19× fewer parameters than the teacher)."""
    return mobilenetv2_cifar_cut(num_classes=num_classes, cut=3, width_mult=width_mult)


@register_model(family="mobilenetv2", description=_cut_student(5, " (the paper's student)"))
def mnv2_student_4x(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """MobileNet-V2 CIFAR student, cut=5 (4.12× fewer parameters than the teacher)."""
    return mobilenetv2_cifar_cut(num_classes=num_classes, cut=5, width_mult=width_mult)


@register_model(family="mobilenetv2", description=_cut_student(7))
def mnv2_student_7x(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """MobileNet-V2 CIFAR student, cut=7 (7.29× fewer parameters than the teacher)."""
    return mobilenetv2_cifar_cut(num_classes=num_classes, cut=7, width_mult=width_mult)


@register_model(family="mobilenetv2", description=_cut_student(9))
def mnv2_student_12x(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """MobileNet-V2 CIFAR student, cut=9 (12.04× fewer parameters than the teacher)."""
    return mobilenetv2_cifar_cut(num_classes=num_classes, cut=9, width_mult=width_mult)
