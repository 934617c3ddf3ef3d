"""What this machine can do: its CPU's name, and whether it computes bfloat16 natively.

bfloat16 autocast on a CPU is only a speed-up where the instructions exist (AVX-512 BF16 or AMX);
elsewhere oneDNN emulates it and training gets slower. kdviz asks before offering it, and writes
the answer into every card it trains, so a figure always names the machine it came from.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


@functools.cache
def cpu_name() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@functools.cache
def native_bfloat16() -> bool:
    """True where the CPU has bfloat16 instructions (torch's oneDNN check, or the kernel's flags)."""
    try:
        import torch

        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        if check is not None:
            return bool(check())
    except (ImportError, RuntimeError, AttributeError):
        pass
    flags = set(_cpuinfo().split())
    return any(flag in flags for flag in _BF16_FLAGS)


def describe() -> dict:
    """The facts a card or a benchmark records next to a timing."""
    import torch

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "native_bfloat16": native_bfloat16(),
        "torch": torch.__version__,
    }


class PrecisionError(ValueError):
    """bfloat16 was asked for on a CPU that would only emulate it."""


def check_precision(precision: str, advice: str = "train in float32") -> None:
    """Refuse a precision this CPU cannot run at speed; ``advice`` is what the message tells the user
    to do instead (a study cannot simply switch to float32: its runs share one recipe)."""
    if precision not in ("float32", "bfloat16"):
        raise PrecisionError(f"precision must be 'float32' or 'bfloat16', not {precision!r}")
    if precision == "bfloat16" and not native_bfloat16():
        raise PrecisionError(
            f"this CPU ({cpu_name()}) has no native bfloat16 instructions (AVX-512 BF16 or AMX): "
            f"autocast would be emulated and slower than float32; {advice}"
        )


_THREADS_SET: int | None = None


def default_torch_threads(cores: int) -> int:
    """Torch threads for a server of ``cores`` cores: one core is left to the pages."""
    return max(1, cores - 1)


def set_torch_threads_once(n: int | None = None) -> int:
    """Set torch's intra-op threads for the whole process, once (later calls keep the first value).

    A server runs all its interactive torch work on one compute thread (:mod:`kdviz.core.scheduler`)
    with one pool, not a pool per session. The default leaves one core to the pages' own work
    (script threads drawing, the websocket, a training job's step): an OpenMP pool as wide as all
    the cores stalls at every layer when one of its threads loses its core (on two busy cores that
    made calls 10-20x slower, see tests/conftest.py; measured in a real server on 2 cores, one
    thread gave 1.0 s to an upload's maps against 1.3 s with two, and 27 s against 48 s with eight
    sessions at once: ``benchmarks/bench_room.py``). ``KDVIZ_TORCH_THREADS`` overrides the number.
    Returns the number in use.
    """
    global _THREADS_SET
    if _THREADS_SET is None:
        import torch

        from .scheduler import cores

        wanted = n or int(os.environ.get("KDVIZ_TORCH_THREADS", "0") or 0) or default_torch_threads(cores())
        torch.set_num_threads(max(1, wanted))
        _THREADS_SET = torch.get_num_threads()
    return _THREADS_SET
