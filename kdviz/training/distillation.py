"""One distilled student: :func:`distill_run` trains it into a folder, :func:`distill_student` is the
whole workflow (subset, the teacher's IG cache, the run in the workspace) that ``python -m kdviz
distill`` runs and a page can run the same way.

A distilled student is an ordinary :func:`kdviz.training.train` call with two hooks: an objective
that adds the teacher's softened outputs to the cross-entropy (Hinton et al. 2015,
:mod:`.losses`), and a batch source that lays the teacher's precomputed IG maps onto some training
images (the paper's augmentation, :mod:`.ig_overlay`; :mod:`.batches`). Everything else (schedule,
resume, atomic saving, progress, stop) is train()'s. The four arms of the paper's ablation are the
four combinations of the two. The teacher sees exactly the view the student sees, overlay
included, in eval mode and without gradients.

Under ``torchrun`` every rank takes its own shard of each epoch's shuffled indices, gradients are
averaged by DistributedDataParallel (:mod:`.ddp`), and only rank 0 writes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from ..attribution.igcache import IGCacheError, IGMapStore
from ..core.lock import WriterLock
from ..data.base import Dataset
from ..models.checkpoints import LoadedModel
from ..models.pretrained import ByteProgress
from . import ddp
from .arms import DistillConfig
from .batches import distill_batches, holdout_split, subset_dataset
from .ddp import DistContext
from .loop import TrainEvent, TrainResult, train, train_indices
from .losses import distill_objective
from .teacher import default_ig_cache, ensure_ig_cache, teacher_outputs
from .teacher_cache import TeacherCache
from .workflows import TrainRequest, card_for, initial_model
from .workspace import Workspace


@dataclass
class DistillRequest(TrainRequest):
    """A student to distil: a training run (name, architecture, data set) whose configuration adds the
    arm and its settings (:class:`DistillConfig`)."""

    role: str = "student"
    config: DistillConfig = field(default_factory=DistillConfig)


def distill_run(
    request: DistillRequest,
    teacher: LoadedModel,
    data: Dataset,
    run_dir: str | Path,
    *,
    store: IGMapStore | None = None,
    callback: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "cpu",
    resume: bool = True,
    ctx: DistContext | None = None,
    teacher_cache: str | Path | None = None,
    attention_block: int | None = None,
    download_progress: ByteProgress | None = None,
) -> tuple[nn.Module, TrainResult]:
    """Train one student of ``request``'s arm into ``run_dir`` (resumed if it holds a finished epoch).

    ``data`` is the data set already cut to ``config.subset`` (see :func:`subset_dataset`); IG arms
    need ``store``, the teacher's IG cache of exactly its training images. ``teacher_cache`` is the
    folder of this run's view in a study's cache of teacher outputs (:mod:`.teacher_cache`), shared
    with the other arms of its seed; ``attention_block`` makes the teacher report its attention map
    there even for an arm that does not use it (so every arm of a view writes the same cache).
    """
    cfg, ctx = request.config, ctx or DistContext()
    if cfg.uses_ig:
        if store is None:
            raise ValueError(
                f"the {cfg.arm} arm needs the teacher's IG cache "
                "(make one with `python -m kdviz ig-precompute`)"
            )
        if len(store) != len(data.train):
            raise IGCacheError(
                f"the IG cache holds {len(store)} maps but training uses {len(data.train)} images"
            )
    data, store_index = holdout_split(data, cfg.holdout)
    cfg.world_size = ctx.world
    torch.manual_seed(cfg.seed)  # the initial weights are part of what the seed fixes
    model, pretrained = initial_model(request, data.num_classes, download_progress)
    model = model.to(device)
    teacher_name = request.teacher or cfg.teacher or str(teacher.path)
    card = card_for(
        replace(request, dataset=data.source, role="student", teacher=teacher_name), data, model, pretrained
    )
    teacher.model.to(device)
    forward = ddp.wrap(model, ctx, device)  # None in one process: the model runs as it is
    block = cfg.at_block if cfg.uses_at else attention_block
    indexed, cache = None, None
    if cfg.uses_teacher:
        compute = teacher_outputs(teacher, data.mean, data.std, attention_block=block)
        if teacher_cache is not None and ctx.world == 1:
            cache = TeacherCache(
                teacher_cache, _view_key(cfg, teacher, data, block), len(data.train), compute
            )
            indexed = cache.outputs
        else:

            def indexed(x, idx):
                return compute(x)

    objective = distill_objective(cfg, None, forward, teacher_outputs=indexed)
    batches = distill_batches(
        data.train,
        cfg,
        mean=data.mean,
        std=data.std,
        indices=train_indices(len(data.train), cfg),
        store=store if cfg.uses_ig else None,
        store_index=store_index,
        rank=ctx.rank,
        world=ctx.world,
        device=device,
    )
    if cache is not None:
        batches = cache.batches(batches)
    result = train(
        model,
        data,
        cfg,
        run_dir=run_dir,
        card=card,
        objective=objective,
        batches=batches,
        callback=callback if ctx.is_writer else None,
        should_stop=ddp.synced_stop(should_stop, ctx, device),
        device=device,
        resume=resume,
        write=ctx.is_writer,
    )
    return model, result


def _view_key(cfg: DistillConfig, teacher: LoadedModel, data: Dataset, block: int | None) -> dict:
    """Everything that fixes what the teacher is asked in one view: the seed's batches, the overlays."""
    view = {k: getattr(cfg, k) for k in ("seed", "batch_size", "epochs", "holdout", "subset", "subset_seed")}
    view.update(
        {k: getattr(cfg, k) for k in ("crop_padding", "hflip", "pad_mode", "flip_mode", "train_limit")}
    )
    if cfg.uses_ig:
        view.update(overlay=asdict(cfg.overlay()), ig_cache=cfg.ig_cache)
    return {
        "view": view,
        "teacher": teacher.fingerprint,
        "attention_block": block,
        "precision": cfg.precision,
        "images": len(data.train),
    }


@dataclass
class DistillOutcome:
    """What :func:`distill_student` did: the run folder, and the student unless it stopped before training."""

    run_dir: Path
    model: nn.Module | None  # None when stopped while the teacher's IG cache was being made
    result: TrainResult | None
    store: IGMapStore | None  # the IG cache the overlays read (IG arms)

    @property
    def stopped(self) -> bool:
        return self.result is None or self.result.stopped


def distill_student(
    request: DistillRequest,
    teacher: LoadedModel,
    data: Dataset,
    *,
    workspace: Workspace | None = None,
    ig_cache: str | Path | None = None,
    ig_progress: Callable[[int, int, float], None] | None = None,
    ig_done: Callable[[IGMapStore], None] | None = None,
    callback: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "cpu",
    resume: bool = True,
    ctx: DistContext | None = None,
    lock_description: str | None = None,
    download_progress: ByteProgress | None = None,
) -> DistillOutcome:
    """Distil ``request``'s student from ``teacher`` into the workspace run of its name.

    The counterpart of :func:`kdviz.training.train_run` for students, so the command line and the
    dashboard distil the same way: the training split is cut to the configuration's subset, the
    teacher's IG cache of exactly those images is reused or made (IG arms; in ``ig_cache``, else a
    folder under ``KDVIZ_CACHE/igcache``, with ``ig_progress`` and then ``ig_done`` called), and the
    student is trained, resumed when its run holds finished epochs (``resume=False`` refuses an
    existing run). ``data`` is the whole data set; under torchrun ``ctx`` says which rank this is.
    The writer holds the run's lock throughout (see :func:`kdviz.training.train_run`).
    """
    cfg, ctx = request.config, ctx or DistContext()
    workspace = workspace or Workspace()
    run_dir = workspace.path(request.name)
    cfg.teacher = str(teacher.path)
    with ExitStack() as held:  # the writer holds the run's lock from before its first file
        if ctx.is_writer:
            workspace.create(request.name, exist_ok=resume)
            held.enter_context(WriterLock(run_dir, lock_description))
        train_data = subset_dataset(data, cfg.subset, cfg.subset_seed)
        store = None
        if cfg.uses_ig:
            folder = Path(ig_cache) if ig_cache else default_ig_cache(teacher, train_data, cfg)
            store = ensure_ig_cache(
                teacher,
                train_data,
                folder,
                steps=cfg.ig_steps,
                progress=ig_progress,
                should_stop=should_stop,
                ctx=ctx,
            )
            if ig_done is not None:
                ig_done(store)
            if not store.complete:
                return DistillOutcome(run_dir, None, None, store)
            cfg.ig_cache = str(store.folder)
        model, result = distill_run(
            request,
            teacher,
            train_data,
            run_dir,
            store=store,
            callback=callback,
            should_stop=should_stop,
            device=device,
            resume=resume,
            ctx=ctx,
            download_progress=download_progress,
        )
    return DistillOutcome(run_dir, model, result, store)
