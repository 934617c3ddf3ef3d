"""A model's identity for caches: a hash of its weights, the same for the same file in any process."""

from __future__ import annotations

import hashlib

from torch import nn


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the weights (and buffers): the same file gives the same key in any process."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
