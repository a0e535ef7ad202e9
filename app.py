"""kneeage — Streamlit entry point: navigation and the shared sidebar, nothing else."""

import streamlit as st

import kneeage  # sets HF_HUB_OFFLINE=1 before anything can reach a model hub
from kneeage.predict import list_models

# A signed-in reader (or a reload carrying their session token) sees the reading room and nothing else:
# no PI pages, no model name, no sidebar.
reader = "reader" in st.session_state or "session" in st.query_params
st.set_page_config(page_title="kneeage", page_icon=":bone:", layout="wide",
                   initial_sidebar_state="collapsed" if reader else "auto")

reading_room = st.Page("pages/reading_room.py", title="Reading room", icon=":material/visibility:")
pages = [reading_room] if reader else [
    st.Page("pages/single_case.py", title="Single case", icon=":material/radiology:", default=True),
    st.Page("pages/validation.py", title="External validation", icon=":material/fact_check:"),
    st.Page("pages/pooling.py", title="Pool sites", icon=":material/hub:"),
    reading_room,
    st.Page("pages/study_admin.py", title="Reader studies (PI)", icon=":material/admin_panel_settings:"),
    st.Page("pages/image_checker.py", title="Image checker", icon=":material/image_search:"),
]
nav = st.navigation(pages, position="hidden")  # the links are drawn below, for everyone but a reader
if reader:
    nav.run()
    st.stop()

with st.sidebar:
    for page in pages:
        st.page_link(page)
    st.divider()
    models = list_models()
    if len(models) > 1:
        name = st.selectbox("Model", list(models), key="model_name")
        st.session_state.model_dir = str(models[name])
    elif models:
        st.caption(f"Model: {next(iter(models))}")
    st.caption(f"kneeage {kneeage.__version__} — runs locally; nothing leaves this machine.")

nav.run()
