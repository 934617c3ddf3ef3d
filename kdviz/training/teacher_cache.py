"""The teacher's outputs for every view a study's arms will ask about, computed once and shared.

In a study the arms of one seed are paired: they see the same images in the same order with the same
crops and flips, and the IG arms the same overlays (:mod:`.batches`). So the KD and attention-transfer
arms of a seed ask the teacher about the same batches, and only the first needs to run it. A
:class:`TeacherCache` holds, for one *view* (a seed with or without IG overlays) and every epoch, the
teacher's logits and attention map of each training image, by data-set index::

    key.json                 what the view is (seed, augmentation, overlay, teacher, block); checked
    epoch-001.safetensors    logits (N, C), attention (N, H, W), checksum (N,): one file per finished epoch

The first arm of a view computes and writes each epoch when it finishes (atomically; an unfinished
epoch is dropped and recomputed); the others read it. Every image's checksum (the sum of the
normalised pixels it was given) is compared on reading, so an arm whose batches are not the
view's fails loudly instead of learning from another view's teacher.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..core import atomic
from .loop import BatchSource
from .teacher import TeacherOutputs

KEY = "key.json"


class TeacherCacheError(RuntimeError):
    """A cached view that does not match the batches an arm sees (pairing broken)."""


class TeacherCache:
    """One view's teacher outputs, epoch by epoch; wrap the batch source with :meth:`batches` and ask
    the teacher through :meth:`outputs`."""

    def __init__(self, folder: str | Path, key: dict, n: int, compute: TeacherOutputs) -> None:
        self.folder, self.key, self.n, self.compute = Path(folder), json.loads(json.dumps(key)), n, compute
        self.epoch = 0
        self._read: dict[str, torch.Tensor] | None = None
        self._new: dict[str, torch.Tensor] = {}
        self.computed_batches = self.read_batches = 0
        stored = self.folder / KEY
        if stored.is_file() and json.loads(stored.read_text()) != self.key:
            shutil.rmtree(self.folder)  # another view's (a changed study): a derived file, made again
        self.folder.mkdir(parents=True, exist_ok=True)
        if not stored.is_file():
            atomic.write_json(stored, self.key)

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch:03d}.safetensors"

    def batches(self, source: BatchSource) -> BatchSource:
        """``source`` with the cache following its epochs: an epoch read whole is kept, a finished
        epoch computed here is written when its last batch has been used."""

        def wrapped(epoch: int, gen: torch.Generator):
            self.epoch, self._new = epoch, {}
            atomic.remove_leftovers(self.folder)
            self._read = load_file(str(self.path(epoch))) if self.path(epoch).is_file() else None
            yield from source(epoch, gen)
            if self._read is None and self._new:
                filled = self._new.pop("filled")
                if bool(filled.all()):
                    with atomic.atomic_path(self.path(epoch)) as tmp:
                        save_file({k: v.contiguous() for k, v in self._new.items()}, str(tmp))
            self._new = {}

        return wrapped

    def outputs(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's logits and attention of batch ``x`` (images ``idx`` of the training split)."""
        checksum = x.detach().double().sum(dim=(1, 2, 3)).cpu()
        rows = idx.cpu().long()
        if self._read is not None:
            if not torch.equal(self._read["checksum"][rows], checksum):
                raise TeacherCacheError(
                    f"the teacher cache {self.folder} (epoch {self.epoch}) holds other views of these "
                    "images: "
                    "this arm's batches are not paired with the arm that made it"
                )
            self.read_batches += 1
            att = self._read.get("attention")
            return self._read["logits"][rows].to(x.device), None if att is None else att[rows].to(x.device)
        logits, att = self.compute(x)
        self.computed_batches += 1
        if not self._new:
            self._new = {
                "logits": torch.zeros(self.n, logits.shape[1]),
                "checksum": torch.zeros(self.n, dtype=torch.float64),
                "filled": torch.zeros(self.n, dtype=torch.bool),
            }
            if att is not None:
                self._new["attention"] = torch.zeros(self.n, *att.shape[1:])
        self._new["logits"][rows] = logits.detach().float().cpu()
        self._new["checksum"][rows] = checksum
        self._new["filled"][rows] = True
        if att is not None:
            self._new["attention"][rows] = att.detach().float().cpu()
        return logits, att
