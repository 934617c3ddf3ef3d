"""The bottom layer: where kdviz reads and writes (settings), how it writes (atomic), background jobs,
the version. It imports no other kdviz package, so every other layer may use it."""

from . import atomic, integrity, jobs, lock, settings
from .version import __version__

__all__ = ["__version__", "atomic", "integrity", "jobs", "lock", "settings"]
