"""kneeage — Streamlit entry point: navigation and the shared sidebar, nothing else."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import streamlit as st  # noqa: E402

import kneeage  # noqa: E402

st.set_page_config(page_title="kneeage", page_icon=":bone:", layout="wide")

pages = [
    st.Page("pages/image_checker.py", title="Image checker", icon=":material/image_search:", default=True),
]
nav = st.navigation(pages)

with st.sidebar:
    st.caption(f"kneeage {kneeage.__version__} — runs locally; nothing leaves this machine.")

nav.run()
