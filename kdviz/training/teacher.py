"""The teacher's side of distillation: its logits for the KD loss, its IG cache.

The IG cache of a teacher is made once per teacher, data set and subset, reused when finished,
resumed when not, and refused when it was made by another teacher or for other images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from ..attribution.igcache import INDEX, IGCacheError, IGCacheSpec, IGMapStore, adopt, precompute
from ..core import settings
from ..data.base import Dataset
from ..data.loader import denormalize, normalize
from ..models.checkpoints import LoadedModel, load_model
from ..models.speedups import fused_for_inference
from .arms import DistillConfig
from .ddp import DistContext


def load_teacher(path: str | Path, data: Dataset, arch: str | None = None) -> LoadedModel:
    """The old name of ``load_model(path, arch, data=data)``, kept for ``kdviz.distill`` and until
    ``kdviz.training.assets`` moves."""
    return load_model(path, arch, data=data)


def teacher_view(
    teacher: LoadedModel, mean: Sequence[float], std: Sequence[float]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The teacher's logits for a batch normalised with ``mean``/``std`` (re-normalised when its own differ).

    The teacher only runs forward, so it runs fused and channels-last (:mod:`kdviz.models.speedups`): its
    pass is most of a KD step's extra cost. Its parameters are the checkpoint's, untouched.
    """
    device = next(iter(teacher.model.parameters()), torch.empty(0)).device
    size = teacher.card.image_size
    example = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    model = fused_for_inference(teacher.model.eval().requires_grad_(False), example)  # once per run
    to_teacher = _renormaliser(teacher, mean, std)

    @torch.no_grad()
    def logits(x: torch.Tensor) -> torch.Tensor:
        return model(to_teacher(x))

    return logits


def _renormaliser(
    teacher: LoadedModel, mean: Sequence[float], std: Sequence[float]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Batches normalised with ``mean``/``std`` → normalised the teacher's way (unchanged when alike)."""
    same = list(map(float, teacher.card.mean)) == list(map(float, mean)) and list(
        map(float, teacher.card.std)
    ) == list(map(float, std))
    if same:
        return lambda x: x
    return lambda x: normalize(denormalize(x, mean, std), teacher.card.mean, teacher.card.std)


#: What a distillation step asks the teacher: its logits (float32), and its spatial attention at the
#: matched block when attention transfer is on (None otherwise).
TeacherOutputs = Callable[[torch.Tensor], tuple[torch.Tensor, "torch.Tensor | None"]]


def teacher_outputs(
    teacher: LoadedModel, mean: Sequence[float], std: Sequence[float], *, attention_block: int | None = None
) -> TeacherOutputs:
    """The teacher's logits and (with ``attention_block``, see :func:`.attention.block_at`) its attention
    map of a batch, in float32, without gradients.

    Without attention the fused teacher of :func:`teacher_view` runs; with it the checkpoint's own
    modules run, since a forward hook needs the block that fusion dissolves.
    """
    if attention_block is None:
        view = teacher_view(teacher, mean, std)
        return lambda x: (view(x).float(), None)
    from .attention import attention_map, block_at, tap

    model = teacher.model.eval().requires_grad_(False)
    block = block_at(model, attention_block)
    to_teacher = _renormaliser(teacher, mean, std)

    @torch.no_grad()
    def outputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with tap(block) as found:
            logits = model(to_teacher(x))
        return logits.float(), attention_map(found["out"])

    return outputs


def ensure_ig_cache(
    teacher: LoadedModel,
    data: Dataset,
    folder: str | Path,
    *,
    steps: int = 32,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    ctx: DistContext | None = None,
    share: Iterable[Path] = (),
) -> IGMapStore:
    """The teacher's IG cache of ``data``'s training split in ``folder``: reused when finished, else
    made or resumed.

    A cache made by another teacher, or for other images, is refused with a message, never used.
    Under torchrun (``ctx``) the ranks share the work, each taking every ``world``-th image.
    ``share``: other cache folders; where ``folder`` has none yet and one of them is a finished cache
    of the same maps (teacher, images, IG options), ``folder`` takes its files instead of computing.
    """
    ctx = ctx or DistContext()
    folder = Path(folder)
    rule, baseline = "gausslegendre", "zero"
    if share and not (folder / INDEX).is_file():
        if ctx.rank == 0:
            twin = finished_twin(teacher, data, share, steps=steps, rule=rule, baseline=baseline)
            if twin is not None:
                adopt(twin, folder)
        ctx.barrier()
    if (folder / INDEX).is_file():
        store = IGMapStore(folder)
        if (
            store.spec.n != len(data.train)
            or store.spec.dataset != data.source
            or store.spec.split != "train"
        ):
            raise IGCacheError(
                f"{folder} holds {store.spec.n} maps of {store.spec.dataset}/{store.spec.split}, but "
                f"training uses {len(data.train)} images of {data.source}/train"
            )
        if store.spec.teacher != teacher.fingerprint:
            raise IGCacheError(
                f"{folder} was made with another teacher ({store.spec.teacher_name}); choose another folder"
            )
        if store.complete:
            return store
        steps, rule, baseline = (
            store.spec.steps,
            store.spec.rule,
            store.spec.baseline,
        )  # finish it as it was begun
    return precompute(
        teacher.model,
        data,
        folder,
        mean=teacher.card.mean,
        std=teacher.card.std,
        split="train",
        steps=steps,
        rule=rule,
        baseline=baseline,
        teacher_name=teacher.card.name or str(teacher.path),
        progress=progress,
        should_stop=should_stop,
        rank=ctx.rank,
        world=ctx.world,
        barrier=ctx.barrier,
    )


def finished_twin(
    teacher: LoadedModel,
    data: Dataset,
    folders: Iterable[Path],
    *,
    steps: int,
    rule: str = "gausslegendre",
    baseline: str = "zero",
) -> Path | None:
    """The first of ``folders`` holding a finished, whole IG cache of ``teacher`` on ``data``'s
    training images with these IG options; None where none does (unreadable folders are passed by)."""
    for candidate in folders:
        if not (Path(candidate) / INDEX).is_file():
            continue
        try:
            store = IGMapStore(candidate)
        except (IGCacheError, OSError, ValueError, TypeError):
            continue
        size = data.image_size
        wanted = IGCacheSpec(
            teacher.fingerprint, "", data.source, "train", len(data.train), size, size, steps, rule, baseline
        )
        if not wanted.differences(store.spec) and store.complete:
            return Path(candidate)
    return None


def default_ig_cache(teacher: LoadedModel, data: Dataset, cfg: DistillConfig) -> Path:
    """A cache folder under ``KDVIZ_CACHE/igcache`` named by teacher, data and subset: made once, reused."""
    import re

    source = re.sub(r"[^A-Za-z0-9._-]+", "-", data.source).strip("-")[-40:]
    part = f"subset{cfg.subset}-{cfg.subset_seed}" if cfg.subset else "all"
    return (
        settings.cache_dir() / "igcache" / f"{teacher.fingerprint[:16]}-{source}-{part}-{cfg.ig_steps}steps"
    )
