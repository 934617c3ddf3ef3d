"""A CIFAR network shaped for fast training on a CPU, after the airbench speed records.

Keller Jordan's airbench (2024) reaches 94 % on CIFAR-10 in about ten epochs with a small VGG-like
network: a 2×2 convolution whose weights whiten image patches, then three groups of
conv → max-pool → batch norm → GELU → conv → batch norm → GELU, a global max-pool and a linear layer
whose output is scaled down. Plain 3×3 convolutions and no depthwise layers: on a CPU they run
close to the machine's peak, where MobileNet-V2's depthwise layers run far below it.

The same shape at smaller widths gives the students: the width of each group is the knob, and each
student below is named by its measured compression against the teacher (10 classes).
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model

#: the teacher's widths (airbench94's); the students' are chosen for their compression ratios
TEACHER_WIDTHS = (64, 256, 256)


class TunedBatchNorm(nn.BatchNorm2d):
    """Batch norm as airbench tunes it: scale frozen at one, a tiny epsilon, a fast running average.

    ``tuned=False`` gives the ordinary layer (learned scale, eps 1e-5, momentum 0.1), so the technique
    can be switched off and measured.
    """

    def __init__(self, channels: int, tuned: bool = True) -> None:
        if tuned:
            super().__init__(channels, eps=1e-12, momentum=0.4)
            self.weight.requires_grad_(False)
        else:
            super().__init__(channels)


class ConvGroup(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, tuned_bn: bool) -> None:
        first = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        second = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        for conv in (first, second):
            _dirac_init(conv)
        super().__init__(
            first,
            nn.MaxPool2d(2),
            TunedBatchNorm(c_out, tuned_bn),
            nn.GELU(),
            second,
            TunedBatchNorm(c_out, tuned_bn),
            nn.GELU(),
        )


def _dirac_init(conv: nn.Conv2d) -> None:
    """Default init, with the first filters an identity: a deep plain net then starts near a shallow one."""
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(conv.in_channels, conv.out_channels)])


class AirNet(nn.Module):
    """Whitening stem, three conv groups, global max-pool, scaled linear head."""

    def __init__(
        self,
        num_classes: int = 10,
        widths: tuple[int, int, int] = TEACHER_WIDTHS,
        tuned_bn: bool = True,
        whiten_kernel: int = 2,
        head_scale: float = 1 / 9,
    ) -> None:
        super().__init__()
        stem_width = 2 * 3 * whiten_kernel**2  # every whitened direction, with both signs
        self.whiten = nn.Conv2d(3, stem_width, whiten_kernel, padding=0, bias=True)
        nn.init.zeros_(self._whiten_bias())
        self.act = nn.GELU()
        w1, w2, w3 = widths
        self.layers = nn.Sequential(
            ConvGroup(stem_width, w1, tuned_bn), ConvGroup(w1, w2, tuned_bn), ConvGroup(w2, w3, tuned_bn)
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(w3, num_classes, bias=False)
        self.head_scale = head_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.act(self.whiten(x)))
        return self.head(self.pool(x).flatten(1)) * self.head_scale

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the stem to whiten the patches of ``images`` (normalised, N×3×H×W).

        The eigenvectors of the patch covariance, scaled by 1/√(eigenvalue + eps), each used with
        both signs: the stem's outputs are decorrelated with unit variance, which the first epochs
        would otherwise spend learning.
        """
        k = self.whiten.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k).double()
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)  # largest first
        filters = (eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps).view(-1, 1)).view(-1, 3, k, k)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight.dtype))

    def _whiten_bias(self) -> torch.Tensor:
        bias = self.whiten.bias
        assert bias is not None  # built with bias=True
        return bias

    def set_whitening_trainable(self, weight: bool, bias: bool) -> None:
        """The fast recipe freezes the whitened filters and trains their bias for the first epochs only."""
        self.whiten.weight.requires_grad_(weight)
        self._whiten_bias().requires_grad_(bias)


def _airnet(num_classes: int, widths: tuple[int, int, int], tuned_bn: bool) -> AirNet:
    return AirNet(num_classes, tuple(int(w) for w in widths), tuned_bn)  # type: ignore[arg-type]


@register_model(
    family="airnet",
    description="Teacher for fast CPU training: airbench94's network (1.97 M parameters, 3×3 convs)",
)
def airnet_cifar(num_classes: int = 10, widths: tuple = TEACHER_WIDTHS, tuned_bn: bool = True) -> nn.Module:
    return _airnet(num_classes, widths, tuned_bn)


@register_model(family="airnet", description="Student: widths 48/176/176, 2.1× fewer parameters")
def airnet_student_2x(num_classes: int = 10, tuned_bn: bool = True) -> nn.Module:
    return _airnet(num_classes, (48, 176, 176), tuned_bn)


@register_model(
    family="airnet", description="Student: widths 32/128/120, 4.2× fewer parameters (the paper's ratio)"
)
def airnet_student_4x(num_classes: int = 10, tuned_bn: bool = True) -> nn.Module:
    return _airnet(num_classes, (32, 128, 120), tuned_bn)


@register_model(family="airnet", description="Student: widths 32/88/84, 8.1× fewer parameters")
def airnet_student_8x(num_classes: int = 10, tuned_bn: bool = True) -> nn.Module:
    return _airnet(num_classes, (32, 88, 84), tuned_bn)


@register_model(family="airnet", description="Student: widths 24/64/56, 16× fewer parameters")
def airnet_student_16x(num_classes: int = 10, tuned_bn: bool = True) -> nn.Module:
    return _airnet(num_classes, (24, 64, 56), tuned_bn)


@register_model(family="airnet", description="Student: widths 16/44/40, 32× fewer parameters")
def airnet_student_32x(num_classes: int = 10, tuned_bn: bool = True) -> nn.Module:
    return _airnet(num_classes, (16, 44, 40), tuned_bn)


@register_model(family="airnet", description="Student: widths 16/28/28, 62× fewer parameters")
def airnet_student_64x(num_classes: int = 10, tuned_bn: bool = True) -> nn.Module:
    return _airnet(num_classes, (16, 28, 28), tuned_bn)
