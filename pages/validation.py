"""External validation: a site uploads a cohort, checks it, runs the model and exports the results."""

import json

import pandas as pd
import streamlit as st

from kneeage import KneeageError, validation
from kneeage.cohort import FolderSource, ZipSource, check_cohort, manifest_in, open_source, read_manifest
from kneeage.config import check_upload
from kneeage.predict import FLAG_TEXT
from pages.common import predictor, require_pi, run_report, store, worst_gallery

st.title("External validation")
require_pi()
st.caption("Images stay on this machine. The database keeps pseudonymous case ids, image hashes and derived "
           "ages — no names, patient ids, accession numbers or dates unless you opt in below.")

st.subheader("1 · Cohort")
c1, c2 = st.columns(2)
site = c1.text_input("Site", "My hospital", key="site")
name = c2.text_input("Cohort name", "knee cohort", key="cohort_name")
kind = st.radio("Images", ["Zip upload (images, optionally with manifest.csv inside)", "Folder on this server"],
                key="source_kind", horizontal=True)
try:
    if kind.startswith("Zip"):
        z = st.file_uploader("Cohort zip (kept in memory only, never stored)", type=["zip"], key="zip")
        if z:
            check_upload(z.name, z.size)
        source = ZipSource(z.getvalue(), f"upload:{z.name}") if z else None
    else:
        folder = st.text_input("Images folder (paths in the manifest are relative to it)", key="folder")
        source = FolderSource(folder) if folder else None
    up = st.file_uploader("Manifest CSV (if not inside the zip)", type=["csv", "txt"], key="manifest")
    manifest = up.getvalue() if up else (manifest_in(source) if source else None)
except KneeageError as e:
    st.error(str(e))
    source = manifest = None
opt_in = st.checkbox("Keep identifying manifest columns (names, ids, dates) in the database", key="opt_in")

if source is not None and manifest is not None and st.button("Check cohort (dry run)", key="check", type="primary"):
    bar = st.progress(0.0, "Opening every image…")
    try:
        st.session_state.cohort_check = check_cohort(read_manifest(manifest), source, progress=lambda k, n: bar.progress(k / n),
                                              input_size=predictor().input_size, opt_in_identifying=opt_in)
        st.session_state.check_source = source
    except KneeageError as e:
        st.error(str(e))
    bar.empty()

check = st.session_state.get("cohort_check")
if check is not None:
    st.subheader("2 · Dry run")
    s = check.summary
    m = st.columns(5)
    m[0].metric("Rows", s["rows"])
    m[1].metric("Usable", s["usable"])
    m[2].metric("Errors (excluded)", s["errors"])
    m[3].metric("Warnings", s["warnings"])
    m[4].metric("Ages (months)", "—" if not s["age_range_months"] else "{:.0f}–{:.0f}".format(*s["age_range_months"]))
    st.write("Sexes: " + ", ".join(f"{k} {v}" for k, v in s["sexes"].items()))
    for a in check.assumptions:
        st.info(a, icon=":material/info:")
    if len(check.problems):
        st.dataframe(check.problems, hide_index=True, key="problems")
    if s["usable"] and st.button(f"Run the model on {s['usable']} cases", key="run", type="primary"):
        pred = predictor()
        db = store()
        cid = validation.ingest(db, check, name, site, st.session_state.check_source, opt_in)
        bar = st.progress(0.0, "Predicting…")
        rid = validation.run_model(db, cid, pred, st.session_state.check_source, cache=check.inputs,
                                   progress=lambda k, n: bar.progress(k / n, f"Predicting… {k} of {n}"))
        st.session_state.run_id = rid
        st.rerun()  # a clean page with the results

st.subheader("3 · Results")
db = store()
runs = db.runs()
if not len(runs):
    st.info("No validation runs yet.")
    st.stop()
cohorts = db.cohorts().set_index("id")
label = {r.id: f"{cohorts.at[r.cohort_id, 'site']} · {cohorts.at[r.cohort_id, 'name']} · {r.model_name} ({r.model_hash}) · {r.created}"
         for r in runs.itertuples()}
ids = list(label)[::-1]
rid = st.selectbox("Run", ids, index=ids.index(st.session_state.run_id) if st.session_state.get("run_id") in ids else 0,
                   format_func=label.get, key="run_pick")
pending = db.pending(rid)
if pending:
    st.warning(f"{len(pending)} cases of this run have no result yet (the run was interrupted).")
    if st.button("Resume the run", key="resume"):
        try:
            run = db.run(rid)
            spec = cohorts.at[run["cohort_id"], "source"]
            src = st.session_state.get("check_source") if spec.startswith("upload:") else open_source(spec)
            if src is None:
                open_source(spec)  # says how to continue
            bar = st.progress(0.0)
            validation.run_model(db, run["cohort_id"], predictor(), src, progress=lambda k, n: bar.progress(k / n))
            st.rerun()
        except KneeageError as e:
            st.error(str(e))

cases, summary, meta, figs, exports = run_report(str(db.path), rid, json.dumps(db.counts(rid)))
if meta["synthetic_demo"]:
    st.error("Synthetic demo model: these numbers show how validation works; they are not evidence about a clinical model.")
if summary.get("note"):
    st.info(summary["note"])
    st.stop()
for flag, n in summary["flags"].items():
    st.warning(f"{n} case(s): {FLAG_TEXT[flag]}", icon=":material/flag:")
m = st.columns(4)
m[0].metric("Cases", f"{summary['n']} / {summary['n_cases']}", help=f"{summary['n_failed']} could not be read")
m[1].metric("MAE (months)", f"{summary['mae']:.2f}", help="BCa bootstrap 95% CI {:.2f}–{:.2f}".format(*summary["mae_ci"]))
m[2].metric("Bias (months)", f"{summary['bias']:+.2f}", help="model − reference; t 95% CI {:.2f}–{:.2f}".format(*summary["bias_ci"]))
m[3].metric("95% limits of agreement", f"{summary['loa_lower']:.1f} to {summary['loa_upper']:.1f}")
for tab, (key, fig) in zip(st.tabs([k.replace("_", " ").capitalize() for k in figs]), figs.items()):
    tab.plotly_chart(fig, key=f"fig_{key}")
if summary["comparisons"]:
    st.write("**Model against naive and comparator estimates** (difference in MAE, paired bootstrap)")
    st.dataframe(pd.DataFrame([{"versus": k, "MAE model": v["mae_a"], "MAE other": v["mae_other"],
                                "difference": v["mae_difference"], "CI low": v["mae_difference_ci"][0],
                                "CI high": v["mae_difference_ci"][1], "Wilcoxon p": v["wilcoxon_p"]}
                               for k, v in summary["comparisons"].items()]), hide_index=True, key="comparisons")
same = runs[(runs.cohort_id == db.run(rid)["cohort_id"]) & (runs.id != rid)]
if len(same):
    other = st.selectbox("Compare with another model version on this cohort", list(same.id), format_func=label.get,
                         key="compare_run")
    c = validation.compare_runs(db, rid, other)
    st.write(f"MAE {c['mae_a']:.2f} (this run) vs {c['mae_b']:.2f} months on the same {c['n']} cases: difference "
             f"{c['mae_difference']:+.2f} (paired bootstrap 95% CI {c['mae_difference_ci'][0]:+.2f} to "
             f"{c['mae_difference_ci'][1]:+.2f}; Wilcoxon p {c['wilcoxon_p']:.3g}).")
st.write("**By sex and age band**")
st.dataframe(pd.DataFrame(summary["stratified"]), hide_index=True, key="strata")
if summary.get("recalibration"):
    rc = summary["recalibration"]
    st.write(f"**Site recalibration** (5-fold cross-validated line): MAE {rc['mae_before']:.2f} → {rc['mae_after']:.2f} "
             f"months, bias {rc['bias_before']:+.2f} → {rc['bias_after']:+.2f}; fitted line {rc['intercept']:.1f} + {rc['slope']:.3f}·x.")
st.write("**Largest errors**, with Grad-CAM saliency on the model input")
st.dataframe(pd.DataFrame(summary["worst_cases"]), hide_index=True, key="worst")
try:
    spec = cohorts.at[db.run(rid)["cohort_id"], "source"]
    src = st.session_state.get("check_source") if spec.startswith("upload:") else None
    gallery = worst_gallery(str(db.path), rid, summary["worst_cases"][:4], src)
except KneeageError as e:
    gallery = []
    st.caption(f"No gallery: {e}")
for col, g in zip(st.columns(4), gallery):
    col.image(g["overlay"], caption=f"{g['case_id']}: model {g['predicted']:.0f}, reference {g['reference']:.0f} months")

cols = st.columns(4)
for col, (fname, data) in zip(cols, exports.items()):
    col.download_button(f"Download {fname}", data, fname, key=f"dl_{fname}")
