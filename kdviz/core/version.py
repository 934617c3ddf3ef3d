"""The version written into every card, cache index and study: one place, importable from any layer."""

__version__ = "0.1.0"
