"""The models that ship in ``assets/``, made by one command: ``python -m kdviz make-assets``.

Two pairs, a teacher and a student each:
- ``digits``: the built-in set's half-width MobileNet-V2 pair (about three minutes on 2 cores);
- ``cifar10``: the fast recipe's pair, ``airnet_cifar`` and ``airnet_student_4x`` distilled from it
  with KD, so that photos meet a natural-image model on a machine with no network and no data.

Each asset folder holds ``model.safetensors``, ``card.json`` and ``history.json``. CIFAR-10 weights
are stored in float16 (half the size, under the 5 MB a shipped file may take) after checking that
the stored model's test accuracy equals the trained one's; the card says so. The CIFAR-10 runs go
through the workspace (``KDVIZ_HOME``), so an interrupted make resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file

from ..core import atomic, machine
from ..data import Dataset
from ..models.checkpoints import CARD, WEIGHTS, load_checkpoint
from ..models.evaluate import predict
from .loop import HISTORY, TrainEvent
from .workflows import TrainRequest, defaults_for, fast_config, train_run
from .workspace import Workspace

#: the CIFAR-10 pair and its schedule (epochs) per precision: sized to train in about half an hour
#: on 2 cores (see README, "Fast CPU training")
CIFAR_TEACHER, CIFAR_STUDENT = "airnet_cifar", "airnet_student_4x"
CIFAR_EPOCHS = {"float32": (10, 8), "bfloat16": (30, 14)}
#: KD settings of the CIFAR-10 student
CIFAR_KD = {"temperature": 4.0, "alpha": 0.5}
#: the most the stored float16 model's test accuracy may differ from the float32 one's
HALF_TOLERANCE = 0.002


@dataclass
class AssetReport:
    name: str
    path: Path
    test_accuracy: float
    test_accuracy_tta: float | None
    train_seconds: float


def make_assets(
    data: Dataset,
    out: str | Path,
    *,
    seed: int = 0,
    precision: str = "float32",
    epochs: tuple[int, int] | None = None,
    workspace: Workspace | None = None,
    callback: Callable[[str, TrainEvent], None] | None = None,
) -> list[AssetReport]:
    """Train the teacher and student for ``data`` (digits or CIFAR-10) and copy them into ``out``."""
    if data.source == "digits":
        return _digits(data, Path(out), seed, callback)
    if not data.source.startswith("cifar10"):
        raise ValueError(f"assets are made for digits or cifar10, not {data.source}")
    machine.check_precision(precision)
    return _cifar10(
        data,
        Path(out),
        seed,
        precision,
        epochs or CIFAR_EPOCHS[precision],
        workspace or Workspace(),
        callback,
    )


def _digits(data: Dataset, out: Path, seed: int, callback) -> list[AssetReport]:
    reports = []

    def relay(name: str) -> Callable[[TrainEvent], None] | None:
        return (lambda event: callback(name, event)) if callback else None

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(tmp)
        for role in ("teacher", "student"):
            arch, kwargs, cfg = defaults_for("digits", role)
            cfg.seed = seed
            name = f"digits_{role}"
            request = TrainRequest(
                name=name, arch=arch, dataset="digits", arch_kwargs=kwargs, role=role, config=cfg
            )
            run_dir, _ = train_run(
                request,
                workspace=ws,
                data=data,
                resume=False,
                callback=relay(name),
            )
            reports.append(_copy(run_dir, out / name, half=False, data=data))
    return reports


def _cifar10(
    data: Dataset, out: Path, seed: int, precision: str, epochs: tuple[int, int], ws: Workspace, callback
) -> list[AssetReport]:
    from .arms import DistillConfig
    from .distillation import DistillRequest, distill_run
    from .teacher import load_teacher

    teacher_epochs, student_epochs = epochs
    name = "cifar10_teacher"
    request = TrainRequest(
        name=f"assets-{name}",
        arch=CIFAR_TEACHER,
        dataset=data.source,
        role="teacher",
        config=fast_config(teacher_epochs, precision=precision, seed=seed),
    )
    teacher_dir, _ = train_run(
        request, workspace=ws, data=data, callback=(lambda e: callback(name, e)) if callback else None
    )
    reports = [_copy(teacher_dir, out / name, half=True, data=data)]

    name = "cifar10_student"
    base = fast_config(student_epochs, precision=precision, seed=seed).as_dict()
    cfg = DistillConfig(**{**base, "arm": "kd", **CIFAR_KD, "teacher": f"assets/{reports[0].name}"})
    teacher = load_teacher(teacher_dir, data)
    run_dir = ws.create(f"assets-{name}", exist_ok=True)
    distill_run(
        DistillRequest(name=f"assets-{name}", arch=CIFAR_STUDENT, dataset=data.source, config=cfg),
        teacher,
        data,
        run_dir,
        callback=(lambda e: callback(name, e)) if callback else None,
    )
    reports.append(_copy(run_dir, out / name, half=True, data=data))
    return reports


def _copy(run_dir: Path, target: Path, *, half: bool, data: Dataset) -> AssetReport:
    """Copy a finished run into ``target``; in float16 when ``half``, checked on the test split."""
    card = json.loads((run_dir / CARD).read_text())
    if not card["metrics"].get("complete"):
        raise RuntimeError(f"{run_dir} has not finished training; run the command again to resume it")
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy2(run_dir / HISTORY, staging / HISTORY)
    if half:
        state = load_file(str(run_dir / WEIGHTS))
        save_file(
            {k: v.half() if v.is_floating_point() else v for k, v in state.items()},
            str(staging / WEIGHTS),
            metadata={"arch": card["arch"], "stored": "float16"},
        )
        card["metrics"]["stored_dtype"] = "float16"
        atomic.write_json(staging / CARD, card)
        stored = load_checkpoint(staging).model
        acc = predict(stored, data.test, mean=card["mean"], std=card["std"]).accuracy
        trained = card["metrics"]["test_accuracy"]
        if abs(acc - trained) > HALF_TOLERANCE:
            raise RuntimeError(
                f"stored in float16, {target.name} scores {acc:.4f} against {trained:.4f}: kept float32"
            )
        card["metrics"]["test_accuracy_stored"] = acc
    else:
        shutil.copy2(run_dir / WEIGHTS, staging / WEIGHTS)
    card["name"] = target.name
    atomic.write_json(staging / CARD, card)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    m = card["metrics"]
    return AssetReport(
        target.name, target, m["test_accuracy"], m.get("test_accuracy_tta"), m.get("train_seconds", 0.0)
    )
