"""kdviz.models.speedups: channels-last weights and a fused frozen teacher compute what the model computes;
a model that cannot be fused is used as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from kdviz.models import create_model
from kdviz.models.checkpoints import LoadedModel, ModelCard, load_model, save_checkpoint
from kdviz.models.speedups import channels_last, fused_for_inference
from kdviz.training import teacher_view

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trained_like(arch: str) -> nn.Module:
    """A model whose batch norms hold non-trivial statistics, as a trained one's do."""
    torch.manual_seed(0)
    model = create_model(arch)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32) * 2 + 0.5)
    return model.eval()


def test_channels_last_keeps_values_and_saved_files(tmp_path):
    model = trained_like("resnet20")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        channels_last(model)
        after = model(x)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    save_checkpoint(tmp_path / "run", model, ModelCard(arch="resnet20"))
    loaded = load_model(tmp_path / "run").model
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=False):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("arch", ["resnet20", "mnv2_student_4x"])
def test_a_fused_teacher_gives_the_same_logits_and_leaves_the_model_alone(arch):
    model = trained_like(arch)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 3, 32, 32)
    fast = fused_for_inference(model, x)
    assert fast is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())  # every BN folded
    assert not any(p.requires_grad for p in fast.parameters())
    with torch.no_grad():
        want, got = model(x), fast(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k


class ValueBranching(nn.Module):
    """Branches on a tensor's value: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y.mean((2, 3)) if y.sum() > 0 else y.amax((2, 3))


def test_what_cannot_be_fused_is_used_as_it_is():
    odd = ValueBranching().eval()
    assert fused_for_inference(odd, torch.randn(2, 3, 8, 8)) is odd
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()).eval()  # no batch norm: nothing to fold
    assert fused_for_inference(plain, torch.randn(2, 3, 8, 8)) is plain


def test_the_teacher_view_gives_the_teachers_own_logits():
    model = trained_like("resnet20")
    teacher = LoadedModel(model, ModelCard(arch="resnet20", mean=[0.5] * 3, std=[0.25] * 3), Path("t"))
    view = teacher_view(teacher, [0.5] * 3, [0.25] * 3)
    for seed in (1, 2):  # the first batch chooses the fused copy; later batches use it
        x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            want = model(x)
        torch.testing.assert_close(view(x), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_the_fused_copy_gives_the_same_input_gradients_and_leaves_the_original_trainable():
    """ig-precompute runs IG on the fused copy: its gradients with respect to the input must match."""
    model = trained_like("resnet20")
    x = torch.randn(4, 3, 32, 32)
    fast = fused_for_inference(model, x)
    assert fast is not model and all(p.requires_grad for p in model.parameters())
    grads = []
    for m in (model, fast):
        xi = x.clone().requires_grad_()
        m(xi)[:, 3].sum().backward()
        grads.append(xi.grad)
    scale = float(grads[0].abs().max())
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=5e-3 * scale)
