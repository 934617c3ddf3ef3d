"""The old import paths the README documented still work for one release (``CHANGELOG.md``): each
re-exports the very objects of its new home and says, with a DeprecationWarning, where that is."""

from __future__ import annotations

import importlib
import sys

import pytest

OLD_TO_NEW = {
    "kdviz.overlay": "kdviz.attribution.render",
    "kdviz.augment": "kdviz.training.ig_overlay",
    "kdviz.igcache": "kdviz.attribution.igcache",
    "kdviz.train": "kdviz.training.loop",
    "kdviz.distill": "kdviz.training",
    "kdviz.samples": "kdviz.data.samples",
}


@pytest.mark.parametrize("old", sorted(OLD_TO_NEW))
def test_an_old_path_re_exports_the_new_one_and_warns(old, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)  # import it afresh, so that it warns again
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {OLD_TO_NEW[old]}"):
        module = importlib.import_module(old)
    new = importlib.import_module(OLD_TO_NEW[old])
    assert module.__all__, old
    for name in module.__all__:
        obj = getattr(module, name)
        if hasattr(new, name):
            assert obj is getattr(new, name), f"{old}.{name}"
        else:  # from a module of the new package (kdviz.distill's torchrun helpers: kdviz.training.ddp)
            assert obj.__module__.startswith(f"{OLD_TO_NEW[old]}."), f"{old}.{name}: {obj.__module__}"


def test_the_documented_names_are_there(monkeypatch):
    """What the README showed under the old paths (and tests of the old modules used)."""
    for old in OLD_TO_NEW:
        monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning):
        from kdviz.augment import OverlayConfig, overlay  # noqa: F401
        from kdviz.distill import DistillConfig, kd_loss, load_teacher  # noqa: F401
        from kdviz.igcache import IGMapStore, precompute  # noqa: F401
        from kdviz.overlay import blend, heatmap, shared_scale  # noqa: F401
        from kdviz.samples import load_sample  # noqa: F401
        from kdviz.train import TrainConfig, read_history, train  # noqa: F401
