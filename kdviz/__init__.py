"""kdviz: make knowledge distillation with Integrated Gradients visible.

The library knows nothing of Streamlit; the dashboard (``app.py``, ``pages/``) and the CLI
(``python -m kdviz``) are thin layers over it, so every result can be reproduced headless.
"""

__version__ = "0.1.0"
