"""What several pages share: the model, the session's database connection, the PI sign-in, cached run reports."""

import streamlit as st

from kneeage import KneeageError
from kneeage.config import default_model_dir
from kneeage.predict import Predictor


@st.cache_resource(show_spinner="Loading the model…")
def load_predictor(model_dir: str) -> Predictor:
    return Predictor(model_dir)


def predictor() -> Predictor:
    return load_predictor(str(st.session_state.get("model_dir") or default_model_dir()))


def store():
    """This browser session's study database (SQLite, or PostgreSQL when KNEEAGE_DATABASE_URL says so). Its
    connections come from a pool shared by the process; each write is its own transaction."""
    from kneeage.store import Store, database_url

    url = database_url()
    if getattr(st.session_state.get("store"), "url", None) != url:
        try:
            st.session_state.store = Store(url)
        except KneeageError as e:
            st.error(str(e))
            st.stop()
    return st.session_state.store


def client() -> tuple[str, ...]:
    """This browser session as a lock-out key. Not the network address: behind the hospital's proxy every
    user shares one, and one stranger's wrong codes would lock them all out."""
    import secrets

    return (f"session:{st.session_state.setdefault('client_id', secrets.token_hex(8))}",)


def require_pi() -> None:
    """Stop the page unless this browser session has signed in with the PI password. On a fresh install
    the password is set on the server, or here with the one-time setup token from the server log; never
    by whoever opens the page first. Reader sessions never pass this: reading codes do not open PI pages."""
    from kneeage import KneeageError, access

    if st.session_state.get("pi"):
        return
    if not access.pi_configured():
        st.info("No PI password is set yet. " + access.setup_token_hint())
        token = st.text_input("One-time setup token", type="password", key="pi_token")
        new = st.text_input("New PI password (at least 10 characters)", type="password", key="pi_new")
        again = st.text_input("Repeat it", type="password", key="pi_again")
        if st.button("Set password", key="pi_set", type="primary"):
            try:
                if new != again:
                    raise KneeageError("The two passwords differ.")
                access.set_pi_password(new, setup_token=token or "", store=store(), clients=client())
                st.session_state.pi = True
                st.rerun()
            except KneeageError as e:
                st.error(str(e))
        st.stop()
    pw = st.text_input("PI password", type="password", key="pi_password")
    if st.button("Sign in", key="pi_login", type="primary"):
        try:
            access.check_pi_password(store(), pw, client())
            st.session_state.pi = True
            st.rerun()
        except KneeageError as e:
            st.error(str(e))
    st.stop()


@st.cache_data(show_spinner="Analysing the run…", max_entries=16)
def run_report(db_url: str, run_id: str, counts: str, partial_bundle: bool = False):
    """A validation run's cases, summary, metadata, figures and export files, recomputed only when the
    run's results change (``counts``), not on every widget interaction. An interrupted run gets a site
    bundle only with ``partial_bundle``."""
    from kneeage import report

    from kneeage.store import Store

    run = report.run_report(Store(db_url), run_id, partial_bundle)
    return run.cases, run.summary, run.meta, run.figures, run.files


@st.cache_data(show_spinner="Saliency for the largest errors…", max_entries=16)
def worst_gallery(db_url: str, run_id: str, worst: list, _source):
    from pathlib import Path

    from kneeage import validation
    from kneeage.store import Store

    def load(model_dir: str):  # the run's own model where it is here
        return load_predictor(model_dir) if Path(model_dir).is_dir() else predictor()

    return validation.worst_gallery(Store(db_url), run_id, load, worst, _source)
