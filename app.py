"""kdviz dashboard: ``streamlit run app.py``.

The entry point only sets up navigation and the shared sidebar; each page lives in ``pages/``.
"""

import streamlit as st

from kdviz.ui import shell, sidebar

st.set_page_config(page_title="kdviz: distillation made visible", page_icon="🔬", layout="wide")

# Material icons, not emoji: emoji show as empty boxes on machines without an emoji font.
PAGES = {
    "Start": [
        st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
        st.Page("pages/lesson.py", title="Lesson", icon=":material/school:"),
    ],
    "Look": [
        st.Page("pages/attributions.py", title="Attributions", icon=":material/local_fire_department:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/balance:"),
    ],
    "Build and measure": [
        st.Page("pages/models.py", title="Models", icon=":material/model_training:"),
        st.Page("pages/ablations.py", title="Ablations", icon=":material/science:"),
        st.Page("pages/benchmark.py", title="Benchmark", icon=":material/timer:"),
    ],
}

page = st.navigation(PAGES)
shell.enter_app()
sidebar.render()
page.run()
