"""kdviz: make knowledge distillation with Integrated Gradients visible.

The library knows nothing of Streamlit; the dashboard (``app.py``, ``pages/``) and the CLI
(``python -m kdviz``) are thin layers over it, so every result can be reproduced headless.
"""

from .core.version import __version__

__all__ = ["__version__"]
