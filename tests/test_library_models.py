"""torchvision: and timm: architectures through the registry, their pretrained weights (downloads
faked: tests never download) and the fine-tuning recipe."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from safetensors.torch import save_file

from kdviz.models import create_model, get_spec, list_models, load_model, make_card, save_checkpoint
from kdviz.models.checkpoints import checkpoint_problem
from kdviz.models.library import classifier_head, search
from kdviz.models.pretrained import PretrainedError, pretrained_model
from kdviz.models.registry import UnknownModelError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL_TIMM = "timm:mobilenetv3_small_050"
SMALL_TV = "torchvision:mobilenet_v3_small"


@pytest.mark.parametrize("arch", [SMALL_TIMM, SMALL_TV, "torchvision:resnet18"])
@pytest.mark.parametrize("size", [32, 96])
def test_library_architectures_build_with_the_data_sets_classes(arch, size):
    model = create_model(arch, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, size, size)).shape == (2, 7)
    assert get_spec(arch).library == arch.partition(":")[0]


def test_library_names_are_resolved_not_registered():
    registered = {s.name for s in list_models()}
    create_model(SMALL_TIMM)
    assert SMALL_TIMM not in registered and all(":" not in n for n in {s.name for s in list_models()})


def test_an_unknown_library_name_is_refused_with_near_names():
    with pytest.raises(
        UnknownModelError, match=r"timm has no classification model .*timm:mobilenetv3_small_050"
    ):
        get_spec("timm:mobilenetv3_small_05")
    with pytest.raises(UnknownModelError, match="torchvision has no classification model 'fasterrcnn"):
        get_spec("torchvision:fasterrcnn_resnet50_fpn")  # a detection model, not a classifier


def test_search_finds_names_of_both_libraries():
    hits = search("mobilenet_v3", limit=500)
    assert "torchvision:mobilenet_v3_small" in hits
    assert all("mobilenet_v3" in h for h in hits)
    assert search("timm resnet18", limit=5)[0] == "timm:resnet18"


def test_torchvision_arguments_are_offered():
    assert get_spec("torchvision:mobilenet_v2").signature()["width_mult"] == 1.0
    narrow = create_model("torchvision:mobilenet_v2", num_classes=10, width_mult=0.5)
    wide = create_model("torchvision:mobilenet_v2", num_classes=10)
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in wide.parameters()) / 2


def test_a_card_with_a_library_arch_rebuilds_the_model(tmp_path):
    torch.manual_seed(0)
    model = create_model(SMALL_TIMM, num_classes=5).eval()
    card = make_card(SMALL_TIMM, model=model, num_classes=5, image_size=96)
    save_checkpoint(tmp_path / "run", model, card)
    assert checkpoint_problem(tmp_path / "run") is None
    loaded = load_model(tmp_path / "run")
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert loaded.card.arch == SMALL_TIMM


@pytest.mark.parametrize("arch", [SMALL_TIMM, SMALL_TV, "torchvision:squeezenet1_1"])
def test_the_classifier_head_is_found(arch):
    model = create_model(arch, num_classes=9)
    path, head = classifier_head(model)
    assert head.weight.shape[0] == 9, path


# ----------------------------------------------------------------------------- pretrained


def _imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {k: v.clone() for k, v in create_model(arch, num_classes=1000).state_dict().items()}


def _backbone_equal(model, state) -> bool:
    own = model.state_dict()
    head_path = classifier_head(model)[0]
    shared = [k for k in own if not k.startswith(head_path + ".")]
    return bool(shared) and all(torch.equal(own[k], state[k]) for k in shared)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_from_a_file_keeps_the_backbone_and_makes_a_new_head(tmp_path, suffix):
    state = _imagenet_state(SMALL_TIMM)
    file = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(file))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, file)
    model, provenance = pretrained_model(SMALL_TIMM, 10, str(file))
    assert _backbone_equal(model, state)
    assert classifier_head(model)[1].weight.shape[0] == 10
    assert provenance["source"] == "file" and provenance["file"] == str(file)
    assert provenance["head"] == "replaced" and len(provenance["sha256"]) == 64


def test_pretrained_file_of_another_architecture_is_refused(tmp_path):
    file = tmp_path / "other.safetensors"
    save_file(_imagenet_state(SMALL_TV), str(file))
    with pytest.raises(PretrainedError, match="another architecture"):
        pretrained_model(SMALL_TIMM, 10, str(file))


def test_torchvision_download_is_the_librarys_own(monkeypatch):
    import torchvision.models._api as api

    state = _imagenet_state(SMALL_TV)
    asked = {}

    def fake_download(url, *args, **kwargs):
        asked.update(url=url, progress=kwargs.get("progress"))
        return state

    monkeypatch.setattr(api, "load_state_dict_from_url", fake_download)
    model, provenance = pretrained_model(SMALL_TV, 10)
    assert asked["url"].startswith("https://download.pytorch.org/models/mobilenet_v3_small")
    assert asked["progress"] is True
    assert _backbone_equal(model, state)
    assert provenance["source"] == "torchvision"
    assert provenance["weights"] == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"


def test_timm_download_goes_through_the_hub_and_records_the_licence(monkeypatch, tmp_path):
    import timm.models._hub as hub

    state = _imagenet_state(SMALL_TIMM)
    save_file(state, str(tmp_path / "model.safetensors"))
    asked = {}

    def fake_hf_hub_download(repo_id=None, filename=None, **kwargs):
        asked.update(repo=repo_id, filename=filename)
        return str(tmp_path / "model.safetensors")

    monkeypatch.setattr(hub, "hf_hub_download", fake_hf_hub_download)
    model, provenance = pretrained_model(SMALL_TIMM, 10)
    assert asked["repo"].startswith("timm/mobilenetv3_small_050")
    assert _backbone_equal(model, state)
    assert provenance["source"] == "timm" and provenance["license"] == "apache-2.0"
    assert provenance["head"] == "replaced"


def test_a_timm_file_in_torchvisions_old_layout_is_renamed_by_timms_own_filter(tmp_path):
    """torchvision's densenet121 file names its layers ``norm.1`` where timm says ``norm1``; timm's
    filter for that model renames them, and every backbone tensor comes from the file."""
    import re

    state = _imagenet_state("timm:densenet121")
    old_layout = {
        re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    }
    assert len(set(old_layout) - set(state)) > 100
    file = tmp_path / "densenet121-old.safetensors"
    save_file(old_layout, str(file))
    model, provenance = pretrained_model("timm:densenet121", 10, str(file))
    assert _backbone_equal(model, state)
    assert classifier_head(model)[1].weight.shape[0] == 10 and provenance["head"] == "replaced"


def test_a_page_sees_the_timm_download_in_bytes(monkeypatch, tmp_path):
    """With a function for ``progress``, the hub's download reports to it through its tqdm class;
    timm then reads the file the hub cached."""
    import huggingface_hub
    import timm.models._hub as hub

    state = _imagenet_state(SMALL_TIMM)
    save_file(state, str(tmp_path / "model.safetensors"))
    size = (tmp_path / "model.safetensors").stat().st_size

    def fake_hub_download(repo_id=None, filename=None, tqdm_class=None, **kwargs):
        if tqdm_class is not None:  # the hub's own downloader: one bar, updated per chunk
            bar = tqdm_class(total=size)
            for _ in range(4):
                bar.update(size // 4)
            bar.close()
        return str(tmp_path / "model.safetensors")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hub_download)
    monkeypatch.setattr(hub, "hf_hub_download", fake_hub_download)
    seen = []
    model, _ = pretrained_model(SMALL_TIMM, 10, progress=lambda done, total: seen.append((done, total)))
    assert [d for d, _ in seen] == [size // 4 * i for i in range(1, 5)]
    assert {t for _, t in seen} == {size}
    assert _backbone_equal(model, state)


def test_a_page_sees_the_torchvision_download_in_bytes_and_a_damaged_one_is_refused(monkeypatch, tmp_path):
    import hashlib
    import io

    import torchvision.models as tvm

    from kdviz.models import pretrained as pretrained_module

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    weights = tvm.get_model_weights("mobilenet_v3_small").DEFAULT
    state = _imagenet_state(SMALL_TV)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    good = buffer.getvalue()

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(good))}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    body = {"bytes": good[:-1] + bytes([good[-1] ^ 1])}  # one bit flipped: its hash no longer fits
    monkeypatch.setattr(
        pretrained_module.urllib.request, "urlopen", lambda url, timeout=None: Response(body["bytes"])
    )
    with pytest.raises(PretrainedError, match="damaged"):
        pretrained_model(SMALL_TV, 10, progress=lambda done, total: None)
    cached = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    assert not cached.exists() and not list(cached.parent.iterdir())  # nothing half-written is left

    # a file whose SHA-256 starts as its name says: what torchvision's loader then reads
    expected = torch.hub.HASH_REGEX.search(cached.name).group(1)
    monkeypatch.setattr(hashlib, "sha256", _sha_starting_with(expected))
    body["bytes"] = good
    seen = []
    model, provenance = pretrained_model(
        SMALL_TV, 10, progress=lambda done, total: seen.append((done, total))
    )
    assert cached.is_file() and seen[-1] == (len(good), len(good))
    assert _backbone_equal(model, state) and provenance["source"] == "torchvision"


def _sha_starting_with(prefix: str):
    """A sha256 whose hex digest starts with ``prefix`` (the fake download cannot match the real
    file's hash); the rest of hashlib is untouched."""
    import hashlib

    real = hashlib.sha256

    class Fixed:
        def __init__(self, *args):
            self._inner = real(*args)

        def update(self, data):
            self._inner.update(data)

        def hexdigest(self):
            return prefix + self._inner.hexdigest()[len(prefix) :]

    return Fixed


def _offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_no_network_names_the_file_to_provide_torchvision(monkeypatch):
    import torchvision.models._api as api

    monkeypatch.setattr(api, "load_state_dict_from_url", _offline)
    with pytest.raises(PretrainedError) as err:
        pretrained_model(SMALL_TV, 10)
    message = str(err.value)
    assert "\n" not in message
    assert "https://download.pytorch.org/models/mobilenet_v3_small" in message
    assert "--pretrained PATH" in message


def test_no_network_names_the_file_to_provide_timm(monkeypatch):
    import timm.models._hub as hub

    monkeypatch.setattr(hub, "hf_hub_download", _offline)
    with pytest.raises(PretrainedError) as err:
        pretrained_model(SMALL_TIMM, 10)
    message = str(err.value)
    assert "https://huggingface.co/timm/mobilenetv3_small_050" in message
    assert "model.safetensors" in message and "--pretrained PATH" in message


def test_the_cli_says_the_same_in_one_line(monkeypatch, capsys):
    import timm.models._hub as hub

    from kdviz.cli import main

    monkeypatch.setattr(hub, "hf_hub_download", _offline)
    code = main(["train", "--data", "digits", "--arch", SMALL_TIMM, "--pretrained", "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("kdviz: error: cannot download") and "--pretrained PATH" in err[0]


def test_the_cli_refuses_finetune_without_pretrained_weights(capsys):
    from kdviz.cli import main

    code = main(["train", "--data", "digits", "--recipe", "finetune", "--epochs", "1"])
    assert code == 1
    assert "--pretrained" in capsys.readouterr().err


# ----------------------------------------------------------------------------- fine-tuning


def test_finetune_recipe_trains_the_backbone_at_a_tenth_of_the_heads_rate():
    from kdviz.training.loop import make_optimizer
    from kdviz.training.workflows import RECIPES, defaults_for

    assert "finetune" in RECIPES
    arch, _, cfg = defaults_for("digits", "teacher", "finetune")
    assert arch.startswith("timm:") and cfg.recipe == "finetune" and cfg.backbone_lr_scale == 0.1
    model = create_model(SMALL_TIMM, num_classes=10)
    optimizer = make_optimizer(model, cfg)
    head = {id(p) for p in classifier_head(model)[1].parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert group["lr_scale"] == (1.0 if id(p) in head else 0.1)
    counted = sum(len(g["params"]) for g in optimizer.param_groups)
    assert counted == len(list(model.parameters()))


def test_a_finetuned_run_records_its_weights_in_the_card(tmp_path):
    from kdviz.data import load_dataset
    from kdviz.training.workflows import TrainRequest, finetune_config, train_run

    state = _imagenet_state(SMALL_TIMM)
    file = tmp_path / "imagenet.safetensors"
    save_file(state, str(file))
    cfg = finetune_config(epochs=1, batch_size=32, train_limit=64, eval_limit=64)
    request = TrainRequest(
        name="ft", arch=SMALL_TIMM, dataset="digits", config=cfg, pretrained=str(file), role="teacher"
    )
    run_dir, result = train_run(request, data=load_dataset("digits"))
    loaded = load_model(run_dir)
    assert loaded.card.pretrained["file"] == str(file)
    assert loaded.card.train_config["recipe"] == "finetune"
    assert loaded.card.arch == SMALL_TIMM and len(result.history) == 1


# ----------------------------------------------------------------------------- attribution


def test_grad_cam_finds_the_last_spatial_layer_of_a_timm_model():
    from kdviz.attribution import attribute, last_conv_layer

    model = create_model(SMALL_TIMM, num_classes=10).eval()
    x = torch.randn(2, 3, 96, 96)
    layer = last_conv_layer(model, x)
    assert layer is not model.conv_head  # timm's 1x1 conv after the pooling is passed over
    maps = attribute(model, x, mean=[0.5] * 3, std=[0.5] * 3, method="gradcam", cache=False)
    assert maps.maps.shape[-2:] == (96, 96)
    assert float(maps.maps[0].std()) > 0  # a map with structure, not one flat value


def test_distill_derives_the_student_from_a_library_teacher(tmp_path, capsys):
    from kdviz.cli import main
    from kdviz.data import load_dataset
    from kdviz.training.workspace import Workspace

    digits = load_dataset("digits")
    torch.manual_seed(0)
    teacher = create_model("timm:mobilenetv3_large_100", num_classes=10).eval()
    run = save_checkpoint(tmp_path / "teacher", teacher, make_card("timm:mobilenetv3_large_100", data=digits))
    argv = ["distill", "--teacher", str(run), "--data", "digits", "--student-ratio", "4", "--arm", "kd"]
    code = main(
        [*argv, "--epochs", "1", "--subset", "64", "--eval-limit", "64", "--name", "derived", "--json"]
    )
    assert code == 0, capsys.readouterr().err
    assert "timm:mobilenetv3_small_075" in capsys.readouterr().err  # 4.10x, the nearest to 4
    card = load_model(Workspace().path("derived")).card
    assert card.arch == "timm:mobilenetv3_small_075" and card.teacher
