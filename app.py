"""kdviz dashboard: ``streamlit run app.py``.

The entry point only sets up navigation and the shared sidebar; each page lives in ``pages/``.
"""

import streamlit as st

from kdviz.ui import sidebar

st.set_page_config(page_title="kdviz: distillation made visible", page_icon="🔬", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon="🏠", default=True),
    st.Page("pages/lesson.py", title="Lesson", icon="🎓"),
    st.Page("pages/models.py", title="Models", icon="🧠"),
    st.Page("pages/attributions.py", title="Attributions", icon="🔥"),
    st.Page("pages/compare.py", title="Compare", icon="⚖️"),
    st.Page("pages/ablations.py", title="Ablations", icon="🧪"),
    st.Page("pages/benchmark.py", title="Benchmark", icon="⏱️"),
]

page = st.navigation(PAGES)
sidebar.render()
page.run()
