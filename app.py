"""kneeage — Streamlit entry point: navigation and the shared sidebar, nothing else."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import streamlit as st  # noqa: E402

import kneeage  # noqa: E402
from kneeage.predict import list_models  # noqa: E402

st.set_page_config(page_title="kneeage", page_icon=":bone:", layout="wide")

pages = [
    st.Page("pages/single_case.py", title="Single case", icon=":material/radiology:", default=True),
    st.Page("pages/validation.py", title="External validation", icon=":material/fact_check:"),
    st.Page("pages/pooling.py", title="Pool sites", icon=":material/hub:"),
    st.Page("pages/reading_room.py", title="Reading room", icon=":material/visibility:"),
    st.Page("pages/study_admin.py", title="Reader studies (PI)", icon=":material/admin_panel_settings:"),
    st.Page("pages/image_checker.py", title="Image checker", icon=":material/image_search:"),
]
nav = st.navigation(pages)

with st.sidebar:
    models = list_models()
    if len(models) > 1:
        name = st.selectbox("Model", list(models), key="model_name")
        st.session_state.model_dir = str(models[name])
    elif models:
        st.caption(f"Model: {next(iter(models))}")
    st.caption(f"kneeage {kneeage.__version__} — runs locally; nothing leaves this machine.")

nav.run()
