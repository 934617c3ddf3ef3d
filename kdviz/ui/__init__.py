"""Streamlit helpers shared by the pages. The rest of ``kdviz`` never imports Streamlit."""
