"""What several pages share: the model in use, loaded once per process."""

import streamlit as st

from kneeage.predict import DEFAULT_MODEL_DIR, Predictor


@st.cache_resource(show_spinner="Loading the model…")
def load_predictor(model_dir: str) -> Predictor:
    return Predictor(model_dir)


def predictor() -> Predictor:
    return load_predictor(str(st.session_state.get("model_dir", DEFAULT_MODEL_DIR)))


@st.cache_resource
def _store(path: str):
    from kneeage.store import Store

    return Store(path)


def store():
    from kneeage.store import default_db

    return _store(str(default_db()))
