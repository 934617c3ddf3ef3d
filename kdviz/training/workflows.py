"""Named recipes shared by the CLI and the dashboard: default models per data set, and
``train_run`` which turns a request into a finished run folder, the same way from both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..core.lock import WriterLock
from ..data import Dataset, load_dataset, split_size
from ..models import create_model
from ..models.checkpoints import ModelCard, load_model, make_card, save_checkpoint
from ..models.pretrained import ByteProgress, pretrained_model
from .loop import TrainConfig, TrainEvent, TrainResult, train
from .workspace import Workspace

#: airbench's learning rate per example of a batch (11.5 per 1024 examples, divided by Nesterov
#: momentum 0.85's step gain 1 + 1/(1 - 0.85)) for a mean loss; and its weight decay, which then
#: needs no scaling with the batch.
FAST_LR_PER_EXAMPLE = 11.5 / (1024 * (1 + 1 / (1 - 0.85)))
FAST_WEIGHT_DECAY = 0.0153 / 11.5

#: the techniques of the fast recipe and the TrainConfig values that switch each one off
FAST_TECHNIQUES: dict[str, dict] = {
    "whiten": {"whiten": False},
    "lookahead": {"lookahead": False},
    "label_smoothing": {"label_smoothing": 0.0},
    "alternate_flip": {"flip_mode": "random"},
    "translate": {"crop_padding": 0},
    "bias_lr": {"bias_lr_scale": 1.0},
    "triangle": {"schedule": "cosine"},
    "muon": {"optimizer": "sgd"},
}


def fast_config(
    epochs: int = 10,
    batch_size: int = 1024,
    *,
    precision: str = "float32",
    off: tuple[str, ...] = (),
    **overrides,
) -> TrainConfig:
    """The fast CPU recipe (after airbench94): a ~94 %-in-10-epochs schedule for the airnet family.

    Muon for the convolution filters and Nesterov SGD for the rest (airbench94_muon's split; see
    :mod:`kdviz.training.optimizers`) at batch 1024 with a triangular learning rate, label
    smoothing 0.2, a whitened and frozen stem (its bias trained 3 epochs), look-ahead weight
    averaging, batch-norm biases at 64× the learning rate, reflect-padded 2-px translations with
    alternating flips, and test-time augmentation measured at the end. ``off`` names techniques
    (of :data:`FAST_TECHNIQUES`) to switch off; ``overrides`` sets any other field.
    """
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer="muon",
        lr=FAST_LR_PER_EXAMPLE * batch_size,
        momentum=0.85,
        weight_decay=FAST_WEIGHT_DECAY,
        warmup_epochs=0.0,
        label_smoothing=0.2,
        crop_padding=2,
        hflip=True,
        schedule="triangle",
        bias_lr_scale=64.0,
        lookahead=True,
        whiten=True,
        whiten_bias_epochs=3,
        pad_mode="reflect",
        flip_mode="alternate",
        precision=precision,
        tta=True,
        recipe="fast",
    )
    for name in off:
        if name not in FAST_TECHNIQUES:
            raise ValueError(f"unknown technique {name!r}; the fast recipe has {', '.join(FAST_TECHNIQUES)}")
        overrides = {**FAST_TECHNIQUES[name], **overrides}
    return TrainConfig(**{**cfg.as_dict(), **overrides})


def finetune_config(epochs: int = 5, batch_size: int = 64, **overrides) -> TrainConfig:
    """The fine-tuning recipe for a pretrained backbone (``--pretrained``): the classifier head is
    new (made for the data set's classes) and learns at the full rate, the backbone at a tenth of it.

    SGD with Nesterov momentum at a modest rate (0.01 for the head), a short warm-up so the random
    head's first gradients do not wreck the backbone, cosine decay, light weight decay, crop and
    flip. A few epochs suffice: the features are already there.
    """
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        weight_decay=1e-4,
        warmup_epochs=0.5,
        backbone_lr_scale=0.1,
        recipe="finetune",
    )
    return TrainConfig(**{**cfg.as_dict(), **overrides})


#: The default teacher and student per data set: (architecture, its arguments, training config).
DEFAULTS: dict[str, dict[str, tuple[str, dict, TrainConfig]]] = {
    # Half-width MobileNet-V2 on the small built-in set: ≥97 % / ≥95 % in under two minutes on 2 cores.
    # No flips: a mirrored digit is another glyph.
    "digits": {
        "teacher": ("mobilenetv2_cifar", {"width_mult": 0.5}, TrainConfig(epochs=10, lr=0.05, hflip=False)),
        "student": ("mnv2_student_4x", {"width_mult": 0.5}, TrainConfig(epochs=8, lr=0.05, hflip=False)),
    },
    # The paper's pair: teacher and the cut-by-5 student (4.12× fewer parameters).
    "cifar10": {
        "teacher": ("mobilenetv2_cifar", {}, TrainConfig(epochs=100, lr=0.05, batch_size=128)),
        "student": ("mnv2_student_4x", {}, TrainConfig(epochs=100, lr=0.05, batch_size=128)),
    },
}


#: the named recipes: what ``--recipe`` on ``train`` and ``distill`` and the Models page offer
RECIPES = {
    "default": "SGD with warm-up and cosine decay, crop and flip: the paper's kind of schedule",
    "fast": "airbench-style: a CIFAR-10 teacher in minutes on a CPU (see fast_config)",
    "finetune": "a pretrained backbone at a tenth of the new head's learning rate (see finetune_config)",
}
#: the fine-tuning recipe's models: ImageNet architectures with pretrained weights in their library
FINETUNE_MODELS = {"teacher": "timm:mobilenetv3_large_100", "student": "timm:mobilenetv3_small_100"}
#: the fast recipe's models, for any data set
FAST_MODELS = {"teacher": "airnet_cifar", "student": "airnet_student_4x"}


def default_recipe(source: str) -> str:
    """The Models page's default: fast for CIFAR-10 and image folders, the default one for digits."""
    return "default" if split_size(source)[0] == "digits" else "fast"


def defaults_for(source: str, role: str, recipe: str = "default") -> tuple[str, dict, TrainConfig]:
    """(architecture, its arguments, training configuration) of a role for a data set and recipe."""
    source = split_size(source)[0]  # the size does not change the recipe
    if recipe == "fast":
        cfg = fast_config(10)
        if source == "digits":
            cfg.hflip = False  # a mirrored digit is another glyph
        return FAST_MODELS[role], {}, cfg
    if recipe == "finetune":
        cfg = finetune_config()
        if source == "digits":
            cfg.hflip = False
        return FINETUNE_MODELS[role], {}, cfg
    if recipe != "default":
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    key = "cifar10" if source.startswith("cifar10") else "digits" if source == "digits" else "cifar10"
    arch, kwargs, cfg = DEFAULTS[key][role]
    return arch, dict(kwargs), TrainConfig(**asdict(cfg))


@dataclass
class TrainRequest:
    """Everything that defines a training run; stored in the card so the run can be redone."""

    name: str
    arch: str
    dataset: str = "digits"
    arch_kwargs: dict = field(default_factory=dict)
    role: str = "teacher"
    config: TrainConfig = field(default_factory=TrainConfig)
    teacher: str | None = None  # recorded in the card (distillation fills it)
    #: start from pretrained weights: "download" (the library's own) or a file's path; None: from scratch
    pretrained: str | None = None


def initial_model(
    request: TrainRequest, num_classes: int, download_progress: ByteProgress | None = None
) -> tuple[torch.nn.Module, dict]:
    """The model a run starts from, and where its weights came from (empty: random initialisation).

    Pretrained weights keep everything but the classifier head, which is made for ``num_classes``
    (:func:`kdviz.models.pretrained.pretrained_model`); a download reports its bytes to
    ``download_progress`` where given (a page's bar), else the library draws its terminal bar.
    """
    if not request.pretrained:
        return create_model(request.arch, num_classes=num_classes, **request.arch_kwargs), {}
    return pretrained_model(
        request.arch,
        num_classes,
        request.pretrained,
        arch_kwargs=request.arch_kwargs,
        progress=download_progress or True,
    )


def card_for(
    request: TrainRequest, data: Dataset, model: torch.nn.Module, pretrained: dict | None = None
) -> ModelCard:
    """The card of ``request``'s run, made the one way cards are made (:func:`kdviz.models.make_card`);
    ``pretrained`` is where its starting weights came from (:func:`initial_model`)."""
    return make_card(
        request.arch,
        data=data,
        model=model,
        arch_kwargs=request.arch_kwargs,
        role=request.role,
        teacher=request.teacher,
        name=request.name,
        train_config=request.config.as_dict(),
        pretrained=dict(pretrained or {}),
    )


def train_run(
    request: TrainRequest,
    *,
    workspace: Workspace | None = None,
    data: Dataset | None = None,
    callback: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "cpu",
    resume: bool = True,
    lock_description: str | None = None,
    download_progress: ByteProgress | None = None,
) -> tuple[Path, TrainResult]:
    """Train ``request`` into the workspace folder of its name; an existing folder is resumed.

    The run's writer lock is taken first, so a second writer of the same name is refused
    (:class:`~kdviz.core.lock.LockHeld`) before it loads anything; ``lock_description`` is what
    that writer is told about this one (default: this process's command line).
    """
    workspace = workspace or Workspace()
    workspace.check_free(request.name)  # a run another writer holds is refused before loading
    data = data or load_dataset(request.dataset)
    torch.manual_seed(request.config.seed)  # the initial weights are part of what the seed fixes
    # a failed download leaves no folder
    model, pretrained = initial_model(request, data.num_classes, download_progress)
    run_dir = workspace.create(request.name, exist_ok=resume)
    with WriterLock(run_dir, lock_description):
        card = card_for(request, data, model, pretrained)
        result = train(
            model,
            data,
            request.config,
            run_dir=run_dir,
            card=card,
            callback=callback,
            should_stop=should_stop,
            device=device,
            resume=resume,
        )
    return run_dir, result


def import_checkpoint(
    file: str | Path,
    arch: str,
    data: Dataset,
    name: str,
    *,
    workspace: Workspace | None = None,
    role: str = "model",
    arch_kwargs: dict | None = None,
) -> Path:
    """Turn a foreign weights file into a workspace run with a card (for uploads and the CLI).

    The file is read safely and its card made by :func:`kdviz.models.load_model`: the data set's
    classes and normalisation, and where the weights came from; saving adds the statistics.
    """
    workspace = workspace or Workspace()
    loaded = load_model(file, arch, data=data, arch_kwargs=arch_kwargs)
    loaded.card.name, loaded.card.role = name, role
    run_dir = workspace.create(name)
    with WriterLock(run_dir, f"importing {Path(file).name} as {name}"):
        save_checkpoint(run_dir, loaded.model, loaded.card)
    return run_dir
