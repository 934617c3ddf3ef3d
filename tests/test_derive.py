"""Students derived from a teacher through its library's width or depth knob, compression measured."""

from __future__ import annotations

import json

import pytest

from kdviz.models import count_params, create_model
from kdviz.models.derive import derived_students, nearest


def test_torchvision_mobilenet_v2_students_narrow_the_width():
    found = derived_students("torchvision:mobilenet_v2", ratio=3)
    best = found[0]
    assert best.arch == "torchvision:mobilenet_v2" and best.arch_kwargs == {"width_mult": 0.5}
    teacher = count_params(create_model("torchvision:mobilenet_v2"))
    student = count_params(create_model(best.arch, **best.arch_kwargs))
    assert best.params == student and best.compression == pytest.approx(teacher / student)


def test_timm_mobilenetv3_large_offers_small_and_narrower_variants():
    found = {s.arch: s for s in derived_students("timm:mobilenetv3_large_100")}
    assert found["timm:mobilenetv3_small_100"].knob == "size"
    assert found["timm:mobilenetv3_large_075"].knob == "width"
    assert all(s.compression > 1 for s in found.values())
    assert "timm:mobilenetv3_large_100" not in found


def test_resnet_depth_and_the_ratio_orders_them():
    found = derived_students("torchvision:resnet50", ratio=2)
    assert found[0].arch == "torchvision:resnet18" and found[0].knob == "depth"
    assert "torchvision:resnet101" not in {s.arch for s in found}  # larger: not a student
    assert nearest("resnet56", 3).arch == "resnet20"


def test_a_teacher_without_a_knob_says_so():
    assert derived_students("timm:vit_tiny_patch16_224") == []
    with pytest.raises(ValueError, match="no width or depth knob"):
        nearest("timm:vit_tiny_patch16_224", 4)


def test_the_cli_lists_them(capsys):
    from kdviz.cli import main

    assert main(["models", "--students-of", "torchvision:mobilenet_v2", "--ratio", "4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["arch_kwargs"] == {"width_mult": 0.5} and rows[0]["compression"] > 3
    assert main(["models", "--students-of", "timm:vit_tiny_patch16_224"]) == 1
    assert "no width or depth knob" in capsys.readouterr().err


def test_the_cli_searches_the_libraries(capsys):
    from kdviz.cli import main

    assert main(["models", "--search", "timm mobilenetv3_small", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert "timm:mobilenetv3_small_100" in hits and all(h.startswith("timm:") for h in hits)
    assert main(["models", "--search", "no-such-model-anywhere"]) == 1
