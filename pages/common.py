"""What several pages share: the model, the session's database connection, the PI sign-in, cached run reports."""

import streamlit as st

from kneeage.predict import DEFAULT_MODEL_DIR, Predictor


@st.cache_resource(show_spinner="Loading the model…")
def load_predictor(model_dir: str) -> Predictor:
    return Predictor(model_dir)


def predictor() -> Predictor:
    return load_predictor(str(st.session_state.get("model_dir", DEFAULT_MODEL_DIR)))


def store():
    """This browser session's own database connection (SQLite transactions are per connection, so
    sessions must not share one)."""
    from kneeage.store import Store, default_db

    path = default_db()
    if getattr(st.session_state.get("store"), "path", None) != path:
        st.session_state.store = Store(path)
    return st.session_state.store


def require_pi() -> None:
    """Stop the page unless this browser session has signed in with the PI password (first run: set it).
    Reader sessions never pass this: reading codes do not open PI pages."""
    from kneeage import KneeageError, access

    if st.session_state.get("pi"):
        return
    if not access.pi_configured():
        st.info("First run: set the PI password that protects the validation, pooling and study pages. "
                "Only its hash is stored (access.json in the study folder).")
        new = st.text_input("New PI password (at least 10 characters)", type="password", key="pi_new")
        again = st.text_input("Repeat it", type="password", key="pi_again")
        if st.button("Set password", key="pi_set", type="primary"):
            try:
                if new != again:
                    raise KneeageError("The two passwords differ.")
                access.set_pi_password(new)
                st.session_state.pi = True
                st.rerun()
            except KneeageError as e:
                st.error(str(e))
        st.stop()
    pw = st.text_input("PI password", type="password", key="pi_password")
    if st.button("Sign in", key="pi_login", type="primary"):
        try:
            access.check_pi_password(store(), pw)
            st.session_state.pi = True
            st.rerun()
        except KneeageError as e:
            st.error(str(e))
    st.stop()


@st.cache_data(show_spinner="Analysing the run…", max_entries=16)
def run_report(db_path: str, run_id: str, counts: str):
    """A validation run's cases, summary, metadata, figures and export files, recomputed only when the
    run's results change (``counts``), not on every widget interaction."""
    from kneeage import plots, report, validation

    from kneeage.store import Store

    cases, summary, meta = validation.results_for(Store(db_path), run_id)
    figs = plots.validation_figures(cases, summary, plots.DEMO_NOTE if meta["synthetic_demo"] else None)
    return cases, summary, meta, figs, report.validation_exports(cases, summary, meta, figs)


@st.cache_data(show_spinner="Saliency for the largest errors…", max_entries=16)
def worst_gallery(db_path: str, run_id: str, worst: list, _source):
    from kneeage import validation
    from kneeage.store import Store

    return validation.worst_gallery(Store(db_path), run_id, predictor(), worst, _source)
