"""``python -m kdviz``, driven as a person would: a subprocess, its stdout JSON, exit code and stderr.

The eval contract other tests rely on::

    python -m kdviz eval --weights FILE_OR_RUN [--arch NAME] --data SOURCE --split test --json

prints ONE strict-JSON object with at least ``accuracy`` (a fraction in [0, 1]) and ``n``.
Every failure a person can cause ends with one ``kdviz: error:`` line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from conftest import pretrained

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR10 = SHARED_DATA / "cifar10"
RESNET20_TH = pretrained("resnet20")
ASSET_TEACHER = ROOT / "assets" / "digits_teacher"
TEACHER_PARAMS = 2_236_682
SUBCOMMANDS = ("data", "models", "train", "eval", "runs", "make-assets")
TINY = [
    "--data",
    "digits",
    "--arch",
    "resnet20",
    "--train-limit",
    "128",
    "--eval-limit",
    "100",
    "--batch-size",
    "64",
]


# --------------------------------------------------------------------------- helpers


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: real-data tests need ../shared/data beside the project (see README)")
    return path


def kdviz(
    *args: str, home: Path | None = None, timeout: float = 240, drop_env: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Run the CLI from the repository root with this process's environment (the conftest's KDVIZ_HOME)."""
    env = dict(os.environ)
    env.setdefault("KDVIZ_DEVICE", "cpu")
    env.pop("KDVIZ_DEBUG", None)
    for key in drop_env:
        env.pop(key, None)
    if home is not None:
        env["KDVIZ_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "kdviz", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _reject_constant(name: str):
    raise ValueError(f"not strict JSON: {name}")


def strict_json(text: str):
    return json.loads(text, parse_constant=_reject_constant)


def one_json(proc: subprocess.CompletedProcess):
    """A successful run that printed exactly one line of strict JSON on stdout."""
    assert proc.returncode == 0, f"exit {proc.returncode}; stderr:\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line on stdout, got:\n{proc.stdout}"
    return strict_json(lines[0])


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """A failure: non-zero exit, one ``kdviz: error:`` line on stderr, no traceback."""
    assert proc.returncode != 0, f"expected a failure; stdout:\n{proc.stdout}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert lines[0].startswith("kdviz: error:"), lines[0]
    return lines[0]


def check_eval(result: dict, n: int | None = None) -> None:
    assert isinstance(result, dict)
    assert isinstance(result["accuracy"], float) and 0.0 <= result["accuracy"] <= 1.0
    assert isinstance(result["n"], int) and result["n"] > 0
    if n is not None:
        assert result["n"] == n
    assert result["correct"] == round(result["accuracy"] * result["n"])


def resnet20_file(path: Path, *, wrap: bool = True) -> Path:
    """A resnet20 state dict saved the way the pretrained CIFAR files are ('module.' prefix, wrapped)."""
    from kdviz.models import create_model

    state = create_model("resnet20").state_dict()
    if wrap:
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "best_prec1": 91.7}
    torch.save(state, path)
    return path


# --------------------------------------------------------------------------- help


def test_top_level_help_lists_every_command():
    proc = kdviz("--help")
    assert proc.returncode == 0, proc.stderr
    for command in SUBCOMMANDS:
        assert command in proc.stdout
    assert "--version" in proc.stdout


@pytest.mark.parametrize(
    "command, options",
    [
        ("data", ["--download", "--json"]),
        ("models", ["--num-classes", "--json"]),
        (
            "train",
            [
                "--data",
                "--role",
                "--arch",
                "--arch-kwargs",
                "--name",
                "--epochs",
                "--batch-size",
                "--lr",
                "--seed",
                "--train-limit",
                "--eval-limit",
                "--no-resume",
                "--device",
                "--json",
            ],
        ),
        (
            "eval",
            [
                "--weights",
                "--arch",
                "--data",
                "--split",
                "--mean",
                "--std",
                "--limit",
                "--batch-size",
                "--json",
            ],
        ),
        ("runs", ["list", "rename", "delete", "--json"]),
        ("make-assets", ["--out", "--seed"]),
    ],
)
def test_subcommand_help_lists_its_options(command, options):
    proc = kdviz(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m kdviz {command}")
    for option in options:
        assert option in proc.stdout, f"{command} --help does not mention {option}"


def test_version_and_missing_command():
    from kdviz.core.version import __version__

    proc = kdviz("--version")
    assert proc.returncode == 0 and __version__ in proc.stdout
    proc = kdviz()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- data and models


def test_data_lists_sources():
    listing = one_json(kdviz("data", "--json"))
    sources = [s["source"] for s in listing["sources"]]
    assert "digits" in sources
    assert "data_root" in listing
    if CIFAR10.exists():  # the default data root is ../shared/data beside the project
        assert "cifar10" in sources


def test_data_digits_summary():
    summary = one_json(kdviz("data", "digits", "--json"))
    assert len(summary["classes"]) == 10
    assert summary["train"] == 1437 and summary["test"] == 360
    assert sum(summary["train_per_class"]) == 1437
    assert len(summary["mean"]) == 3 and len(summary["std"]) == 3


@pytest.fixture(scope="module")
def models_listing() -> list[dict]:
    return one_json(kdviz("models", "--json"))


def test_models_lists_the_registry_with_params(models_listing):
    by_name = {row["name"]: row for row in models_listing}
    for name in (
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "mobilenetv2_cifar",
        "mnv2_student_2x",
        "mnv2_student_4x",
        "mnv2_student_7x",
        "mnv2_student_12x",
    ):
        assert name in by_name, f"{name} missing from `models --json`"
        row = by_name[name]
        assert isinstance(row["params"], int) and row["params"] > 0
        assert row["macs"] > 0 and row["size_bytes"] > 0
    assert by_name["mobilenetv2_cifar"]["params"] == TEACHER_PARAMS
    assert by_name["resnet20"]["params"] == 269_722
    assert by_name["resnet56"]["params"] == 853_018
    assert (
        by_name["resnet20"]["params"]
        < by_name["resnet32"]["params"]
        < by_name["resnet44"]["params"]
        < by_name["resnet56"]["params"]
    )
    # the students' names say how many times fewer parameters than the teacher they have (roughly)
    for factor in (2, 4, 7, 12):
        ratio = TEACHER_PARAMS / by_name[f"mnv2_student_{factor}x"]["params"]
        assert abs(ratio / factor - 1) < 0.15, (factor, ratio)


# --------------------------------------------------------------------------- eval contract and failures
#
# These evaluations need no training and are mostly interpreter start-up (torch, sklearn), so they run
# two at a time in one module fixture; each test below asserts on its own case.


class _Hostile:
    """Pickles as a call to ``os.system('touch MARKER')``: unpickling it unsafely runs the command."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def evals(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("cli_eval")
    notes = d / "notes.pt"
    notes.write_text("these are my notes, not a checkpoint\n" * 20)
    empty = d / "empty.pth"
    empty.touch()
    evil = d / "evil.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": _Hostile(d / "PWNED")}, evil)
    resnet20 = resnet20_file(d / "resnet20.th")
    not_data = d / "holiday_photos"
    (not_data / "misc").mkdir(parents=True)
    (not_data / "misc" / "readme.txt").write_text("nothing here")

    teacher = ["eval", "--weights", "digits_teacher", "--data", "digits", "--json"]
    foreign = ["--data", "digits", "--json"]
    cases = {
        "asset_path": [
            "eval",
            "--weights",
            "assets/digits_teacher",
            "--data",
            "digits",
            "--split",
            "test",
            "--json",
        ],
        "asset_name": [
            "eval",
            "--weights",
            "digits_teacher",
            "--data",
            "digits",
            "--split",
            "test",
            "--json",
        ],
        "mean_std": [*teacher, "--mean", "5,5,5", "--std", "0.01 0.01 0.01"],
        "bad --mean": [*teacher, "--mean", "1,2"],
        "bad --std": [*teacher, "--std", "a,b,c"],
        "three_images": [*teacher, "--limit", "3"],
        "missing": ["eval", "--weights", d / "nope.pt", "--arch", "resnet20", *foreign],
        "text": ["eval", "--weights", notes, "--arch", "resnet20", *foreign],
        "empty": ["eval", "--weights", empty, "--arch", "resnet20", *foreign],
        "hostile": ["eval", "--weights", evil, "--arch", "resnet20", *foreign],
        "wrong_arch": ["eval", "--weights", resnet20, "--arch", "resnet56", *foreign],
        "unknown_arch": ["eval", "--weights", resnet20, "--arch", "resnet9000", *foreign],
        "not_data": ["eval", "--weights", "digits_teacher", "--data", not_data, "--json"],
        "cardless": ["eval", "--weights", resnet20, *foreign],
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(kdviz, *args, home=d / "home") for name, args in cases.items()}
        results = {name: future.result() for name, future in futures.items()}
    results["dir"] = d
    return results


def test_eval_asset_by_path(evals):
    result = one_json(evals["asset_path"])
    check_eval(result, n=360)
    assert result["accuracy"] >= 0.95
    assert result["arch"] == "mobilenetv2_cifar"
    assert result["split"] == "test"


def test_eval_asset_by_name_matches_path(evals):
    by_name = one_json(evals["asset_name"])
    check_eval(by_name, n=360)
    assert by_name["accuracy"] >= 0.95
    assert by_name["accuracy"] == one_json(evals["asset_path"])["accuracy"]
    card = json.loads((ASSET_TEACHER / "card.json").read_text())
    assert by_name["accuracy"] == pytest.approx(card["metrics"]["test_accuracy"], abs=1e-9)
    assert by_name["mean"] == pytest.approx(card["mean"]) and by_name["std"] == pytest.approx(card["std"])


def test_eval_explicit_mean_std_are_used_and_reported(evals):
    result = one_json(evals["mean_std"])
    check_eval(result, n=360)
    assert result["mean"] == [5.0, 5.0, 5.0]
    assert result["std"] == [0.01, 0.01, 0.01]
    # far from the normalisation it was trained with (0.30 / 0.32), the accuracy collapses: the flags
    # took effect
    assert result["accuracy"] < 0.5


@pytest.mark.parametrize("case", ["bad --mean", "bad --std"])
def test_eval_bad_mean_std_is_one_line(evals, case):
    line = one_line_error(evals[case])
    assert case.split()[1] in line and "three numbers" in line


def test_eval_json_is_strict_even_with_empty_classes(evals):
    """Three images leave most classes unseen: their accuracy must be null, never NaN."""
    result = one_json(evals["three_images"])  # strict: NaN / Infinity would raise
    check_eval(result, n=3)
    per_class = result["per_class_accuracy"]
    assert len(per_class) == 10
    assert sum(v is None for v in per_class.values()) == 7
    assert "NaN" not in evals["three_images"].stdout


@pytest.mark.slow
def test_eval_pretrained_resnet20_on_cifar10():
    weights = require_shared(RESNET20_TH)
    cifar = require_shared(CIFAR10)
    by_path = one_json(
        kdviz(
            "eval",
            "--weights",
            weights,
            "--arch",
            "resnet20",
            "--data",
            cifar,
            "--split",
            "test",
            "--limit",
            "1000",
            "--json",
        )
    )
    check_eval(by_path, n=1000)
    assert by_path["accuracy"] >= 0.80  # measured 0.821 on this even spread of 1,000 test images
    assert by_path["arch"] == "resnet20"
    # `cifar10` alone is found through the default data root (../shared/data beside the project)
    by_name = one_json(
        kdviz(
            "eval",
            "--weights",
            weights,
            "--arch",
            "resnet20",
            "--data",
            "cifar10",
            "--split",
            "test",
            "--limit",
            "1000",
            "--json",
            drop_env=("KDVIZ_DATA",),
        )
    )
    check_eval(by_name, n=1000)
    assert by_name["accuracy"] == by_path["accuracy"]
    assert len(by_name["per_class_accuracy"]) == 10 and "airplane" in by_name["per_class_accuracy"]


def test_eval_missing_file(evals):
    assert "nope.pt" in one_line_error(evals["missing"])


def test_eval_text_file_renamed_pt(evals):
    line = one_line_error(evals["text"])
    assert "notes.pt" in line and "not a readable" in line


def test_eval_empty_file(evals):
    line = one_line_error(evals["empty"])
    assert "empty.pth" in line and "is empty" in line


def test_eval_hostile_pickle_is_refused_and_never_run(evals):
    marker, evil = evals["dir"] / "PWNED", evals["dir"] / "evil.pt"
    line = one_line_error(evals["hostile"])
    assert "evil.pt" in line and "refused" in line
    assert not marker.exists(), "the CLI ran the code inside the pickle"
    # the file really is hostile: an unsafe load runs it (so the check above could have failed)
    torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()


def test_eval_wrong_architecture_names_missing_tensors(evals):
    line = one_line_error(evals["wrong_arch"])
    assert "does not fit" in line and "missing" in line
    assert "layer1.3." in line  # resnet56 has 9 blocks per stage, resnet20 has 3


def test_eval_unknown_arch(evals):
    line = one_line_error(evals["unknown_arch"])
    assert "resnet9000" in line and "resnet20" in line  # names the bad one and lists the real ones


def test_eval_folder_that_is_not_a_dataset(evals):
    line = one_line_error(evals["not_data"])
    assert "holiday_photos" in line and "not an image folder" in line


def test_eval_cardless_file_without_arch(evals):
    line = one_line_error(evals["cardless"])
    assert "resnet20.th" in line and "--arch" in line and "card" in line


# --------------------------------------------------------------------------- train, resume, eval by run name


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny training run in a workspace of its own (module scope: trained once)."""
    home = tmp_path_factory.mktemp("cli_train")
    proc = kdviz("train", *TINY, "--epochs", "1", "--name", "tiny", "--json", home=home)
    return home, one_json(proc)


def test_train_tiny_run(tiny):
    home, out = tiny
    assert out["run"] == "tiny"
    assert Path(out["path"]) == home / "tiny"
    assert out["epochs_done"] == 1 and out["resumed_from"] == 0 and out["stopped"] is False
    assert isinstance(out["test_accuracy"], float) and 0.0 <= out["test_accuracy"] <= 1.0

    run = home / "tiny"
    for name in ("card.json", "model.safetensors", "history.json", "resume.safetensors"):
        assert (run / name).is_file(), f"{name} missing from the run folder"
    card = json.loads((run / "card.json").read_text())
    assert card["arch"] == "resnet20" and card["dataset"] == "digits" and card["name"] == "tiny"
    assert card["class_names"] == [str(d) for d in range(10)]
    assert len(card["mean"]) == 3 and len(card["std"]) == 3 and all(s > 0 for s in card["std"])
    cfg = card["train_config"]
    assert (cfg["epochs"], cfg["train_limit"], cfg["eval_limit"], cfg["batch_size"]) == (1, 128, 100, 64)
    assert card["stats"]["params"] == 269_722
    assert card["metrics"]["complete"] is True and card["metrics"]["epochs_done"] == 1
    assert card["metrics"]["test_accuracy"] == pytest.approx(out["test_accuracy"])
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1]


def test_eval_by_run_name(tiny):
    home, _ = tiny
    card = json.loads((home / "tiny" / "card.json").read_text())
    result = one_json(
        kdviz(
            "eval",
            "--weights",
            "tiny",
            "--data",
            "digits",
            "--split",
            "test",
            "--limit",
            "100",
            "--json",
            home=home,
        )
    )
    check_eval(result, n=100)
    assert Path(result["weights"]) == home / "tiny"
    assert result["arch"] == "resnet20"
    # the same 100 images the training run evaluated on: the same accuracy (to one image, for float noise)
    assert result["accuracy"] == pytest.approx(card["metrics"]["test_accuracy"], abs=0.0101)
    assert result["mean"] == pytest.approx(card["mean"])


def test_train_same_name_resumes(tiny):
    home, _ = tiny
    out = one_json(kdviz("train", *TINY, "--epochs", "2", "--name", "tiny", "--json", home=home))
    assert out["resumed_from"] == 1 and out["epochs_done"] == 2 and out["stopped"] is False
    history = json.loads((home / "tiny" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    card = json.loads((home / "tiny" / "card.json").read_text())
    assert card["metrics"]["epochs_done"] == 2 and card["metrics"]["complete"] is True


def test_train_name_cannot_escape_workspace():
    home = Path(os.environ["KDVIZ_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    before_parent, before_home = set(os.listdir(home.parent)), set(os.listdir(home))
    line = one_line_error(kdviz("train", *TINY, "--epochs", "1", "--name", "../evil", "--json"))
    assert "../evil" in line
    assert set(os.listdir(home.parent)) == before_parent and set(os.listdir(home)) == before_home
    assert (
        not (home.parent / "evil").exists()
        and not (ROOT / "evil").exists()
        and not (ROOT.parent / "evil").exists()
    )


def test_train_interrupt_keeps_finished_epochs_and_resumes(tmp_path):
    home = Path(os.environ["KDVIZ_HOME"])
    run = home / "long"
    args = [
        "train",
        "--data",
        "digits",
        "--arch",
        "resnet20",
        "--train-limit",
        "128",
        "--eval-limit",
        "50",
        "--batch-size",
        "32",
        "--name",
        "long",
        "--json",
    ]
    env = dict(os.environ)
    env.pop("KDVIZ_DEBUG", None)
    stderr_file = tmp_path / "train.stderr"
    with open(stderr_file, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kdviz", *args, "--epochs", "30"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            deadline = time.monotonic() + 180
            while not (run / "history.json").is_file():
                assert proc.poll() is None, (
                    f"train ended early ({proc.returncode}): {stderr_file.read_text()}"
                )
                assert time.monotonic() < deadline, "no epoch finished within 180 s"
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            stdout, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = stderr_file.read_text()
    assert proc.returncode == 130, f"exit {proc.returncode}; stderr:\n{stderr}"
    assert "Traceback" not in stderr
    out = strict_json(stdout.strip())
    assert out["stopped"] is True

    history = json.loads((run / "history.json").read_text())
    kept = len(history)
    assert 1 <= kept < 30 and out["epochs_done"] == kept
    assert [r["epoch"] for r in history] == list(range(1, kept + 1))
    card = json.loads((run / "card.json").read_text())
    assert card["metrics"]["complete"] is False and card["metrics"]["epochs_done"] == kept
    assert (run / "resume.safetensors").is_file()

    resumed = one_json(kdviz(*args, "--epochs", str(kept + 1)))
    assert (
        resumed["resumed_from"] == kept and resumed["epochs_done"] == kept + 1 and resumed["stopped"] is False
    )
    assert len(json.loads((run / "history.json").read_text())) == kept + 1


# --------------------------------------------------------------------------- runs


def test_runs_list_rename_delete():
    home = Path(os.environ["KDVIZ_HOME"])
    shutil.copytree(ASSET_TEACHER, home / "alpha")

    rows = one_json(kdviz("runs", "list", "--json"))
    assert [r["name"] for r in rows] == ["alpha"]
    assert rows[0]["arch"] == "mobilenetv2_cifar" and rows[0]["status"] == "complete"
    assert rows[0]["dataset"] == "digits" and rows[0]["test_accuracy"] >= 0.95

    proc = kdviz("runs", "rename", "alpha", "beta")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == home / "beta"
    assert not (home / "alpha").exists() and (home / "beta" / "card.json").is_file()
    assert json.loads((home / "beta" / "card.json").read_text())["name"] == "beta"

    proc = kdviz("runs", "delete", "beta")
    assert proc.returncode == 0, proc.stderr
    assert "beta" in proc.stdout
    assert not (home / "beta").exists() and os.listdir(home) == []


@pytest.mark.parametrize("bad", ["../outside", "has space"])
def test_runs_rename_to_invalid_name_fails(bad):
    home = Path(os.environ["KDVIZ_HOME"])
    shutil.copytree(ASSET_TEACHER, home / "alpha")
    before_parent = set(os.listdir(home.parent))
    line = one_line_error(kdviz("runs", "rename", "alpha", bad))
    assert "invalid run name" in line
    assert (home / "alpha" / "card.json").is_file()
    assert sorted(os.listdir(home)) == ["alpha"] and set(os.listdir(home.parent)) == before_parent


def test_runs_errors_are_one_line():
    home = Path(os.environ["KDVIZ_HOME"])
    shutil.copytree(ASSET_TEACHER, home / "alpha")
    shutil.copytree(ASSET_TEACHER, home / "beta")
    assert "ghost" in one_line_error(kdviz("runs", "delete", "ghost"))
    assert "beta" in one_line_error(kdviz("runs", "rename", "alpha", "beta"))
    assert one_line_error(kdviz("runs", "delete")) == "kdviz: error: name the run"
    assert (home / "alpha").is_dir() and (home / "beta").is_dir()
