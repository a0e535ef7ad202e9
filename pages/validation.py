"""External validation: a site uploads a cohort, checks it, runs the model and exports the results."""

import json

import pandas as pd
import streamlit as st

from kneeage import KneeageError, compare, predictions, report, validation
from kneeage.cohort import FolderSource, ZipSource, check_cohort, manifest_in, open_source, read_manifest
from kneeage.config import check_upload
from kneeage.predict import FLAG_TEXT, list_models
from pages.common import load_predictor, predictor, require_pi, run_report, store, worst_gallery

st.title("External validation")
require_pi()
st.caption("Images stay on this machine. The database keeps pseudonymous case ids, image hashes and derived "
           "ages — no names, patient ids, accession numbers or dates unless you opt in below.")

st.subheader("1 · Cohort")
c1, c2 = st.columns(2)
site = c1.text_input("Site", "My hospital", key="site")
name = c2.text_input("Cohort name", "knee cohort", key="cohort_name")
kind = st.radio("Images", ["Zip upload (images, optionally with manifest.csv inside)", "Folder on this server",
                         "No images: predictions made elsewhere (CSV with prediction columns)"], key="source_kind", horizontal=True)
only_predictions = kind.startswith("No images")
manifest_name = "manifest.csv"
try:
    if only_predictions:
        st.caption("Prediction columns: predicted_bone_age_months, or <method>_bone_age_months (e.g. "
                   "bonexpert_bone_age_months); each is validated as a model. No image column needed.")
        source, picked = predictions.NoImages(), None
    elif kind.startswith("Zip"):
        z = st.file_uploader("Cohort zip (kept in memory only, never stored)", type=["zip"], key="zip")
        if z:
            check_upload(z.name, z.size)
        source = ZipSource(z.getvalue(), f"upload:{z.name}") if z else None
        picked = z.file_id if z else None
    else:
        folder = st.text_input("Images folder (paths in the manifest are relative to it)", key="folder")
        source = FolderSource(folder) if folder else None
        picked = folder
    up = st.file_uploader("Manifest CSV (if not inside the zip)", type=["csv", "txt"], key="manifest")
    manifest = up.getvalue() if up else (manifest_in(source) if source else None)
    manifest_name = up.name if up else manifest_name
except KneeageError as e:
    st.error(str(e))
    source = manifest = picked = None
opt_in = st.checkbox("Keep identifying manifest columns (names, ids, dates) in the database", key="opt_in")
inputs = (kind, picked, manifest, opt_in)  # what the dry run was made from
if "cohort_check" in st.session_state and st.session_state.get("check_inputs") != inputs:
    del st.session_state["cohort_check"]  # a stale dry run (and its Run button) must not outlive its inputs
    st.info("The images, manifest or options changed since the dry run; check the cohort again.")

if source is not None and manifest is not None and st.button("Check cohort (dry run)", key="check", type="primary"):
    bar = st.progress(0.0, "Opening every image…")
    try:
        st.session_state.cohort_check = (predictions.check_predictions(manifest, manifest_name) if only_predictions else
                                         check_cohort(read_manifest(manifest), source, progress=lambda k, n: bar.progress(k / n),
                                                      input_size=predictor().input_size, opt_in_identifying=opt_in))
        st.session_state.check_source = source
        st.session_state.check_inputs = inputs
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
    methods = s.get("predictions")  # a predictions-only cohort: one run per prediction column
    models = list_models()
    chosen = [] if methods else st.multiselect("Models to run (several are compared below)", list(models), key="run_models",
                                               default=[n for n, d in models.items() if str(d) == str(predictor().model_dir)][:1])
    what = (f"Record {len(methods)} prediction column(s) of" if methods else
            "Run the model on" if len(chosen) == 1 else f"Run {len(chosen)} models on")
    if s["usable"] and (methods or chosen) and st.button(f"{what} {s['usable']} cases", key="run", type="primary"):
        db = store()
        if methods:
            rid = predictions.ingest(db, check, name, site, manifest_name)[1][0]
        else:
            cid = validation.ingest(db, check, name, site, st.session_state.check_source, opt_in)
            for m in chosen:
                bar = st.progress(0.0, f"Predicting with {m}…")
                rid = validation.run_model(db, cid, load_predictor(str(models[m])), st.session_state.check_source, cache=check.inputs,
                                           progress=lambda k, n: bar.progress(k / n, f"Predicting… {k} of {n}"))
        st.session_state.run_pick = rid  # the run just made is the one shown
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
if st.session_state.get("run_pick") not in ids:
    st.session_state.pop("run_pick", None)
rid = st.selectbox("Run", ids, format_func=label.get, key="run_pick")
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

insist = bool(pending) and st.checkbox("Make a site bundle from this partial run anyway", key="partial_bundle",
                                       help="A bundle for the study PI is normally made only from a finished run.")
cases, summary, meta, figs, exports = run_report(db.url, rid, json.dumps(db.counts(rid)), insist)
if report.partial_notice(summary):
    st.error(report.partial_notice(summary), icon=":material/hourglass_bottom:")
st.caption(f"Predictions: {meta['prediction_source']}.")
if meta["synthetic_demo"]:
    st.error("Synthetic demo model: these numbers show how validation works; they are not evidence about a clinical model.")
if summary.get("note"):
    st.info(summary["note"])
    st.stop()
for name, reason in summary.get("not_computed", {}).items():
    st.warning(f"Not computed — {name}: {reason}", icon=":material/calculate:")
for flag, n in summary["flags"].items():
    st.warning(f"{n} case(s): {FLAG_TEXT[flag]}", icon=":material/flag:")
m = st.columns(4)
m[0].metric("Cases", f"{summary['n']} / {summary['n_cases']}", help=f"{summary['n_failed']} could not be read")
if report.withheld_text(summary):
    st.info(f"Withheld by the model (no number, left out of the statistics): {report.withheld_text(summary)}.", icon=":material/block:")
if "mae" in summary and "loa_lower" in summary:
    m[1].metric("MAE (months)", f"{summary['mae']:.2f}", help="BCa bootstrap 95% CI {:.2f}–{:.2f}".format(*summary["mae_ci"]))
    m[2].metric("Bias (months)", f"{summary['bias']:+.2f}", help="model − reference; t 95% CI {:.2f}–{:.2f}".format(*summary["bias_ci"]))
    m[3].metric("95% limits of agreement", f"{summary['loa_lower']:.1f} to {summary['loa_upper']:.1f}")
if report.coverage_text(summary):
    st.caption(f"Interval coverage: {report.coverage_text(summary)}.")
for tab, (key, fig) in zip(st.tabs([k.replace("_", " ").capitalize() for k in figs]), figs.items()):
    tab.plotly_chart(fig, key=f"fig_{key}")
if summary["comparisons"]:
    st.write("**Model against naive and comparator estimates** (difference in MAE, paired bootstrap)")
    st.dataframe(pd.DataFrame([{"versus": k, "MAE model": v["mae_a"], "MAE other": v["mae_other"],
                                "difference": v["mae_difference"], "CI low": v["mae_difference_ci"][0],
                                "CI high": v["mae_difference_ci"][1], "Wilcoxon p": v["wilcoxon_p"]}
                               for k, v in summary["comparisons"].items()]), hide_index=True, key="comparisons")
same = runs[(runs.cohort_id == db.run(rid)["cohort_id"]) & (runs.id != rid)]
others = st.multiselect("Compare with other models on this cohort (pairwise, same cases)", list(same.id),
                        format_func=label.get, key="compare_runs") if len(same) else []
if others:
    try:
        cmp = compare.compare_models(db, [rid, *others])
        st.dataframe(cmp.table, hide_index=True, key="model_comparison")
        st.plotly_chart(compare.forest(cmp), key="fig_compare")
        st.download_button("Download comparison.csv", compare.exports(cmp)["comparison.csv"], "comparison.csv", key="dl_compare")
    except KneeageError as e:
        st.error(str(e))
st.write("**By sex and age band**")
st.dataframe(pd.DataFrame(summary["stratified"]), hide_index=True, key="strata")
st.write("**Clinical view of error** — would the error change a decision? (kneeage.growth.clinical_view; docs/growth.md)")
st.dataframe(pd.DataFrame(report.clinical_rows(summary.get("clinical")), columns=["measure", "value"]),
             hide_index=True, key="clinical")
if summary.get("recalibration"):
    rc = summary["recalibration"]
    st.write(f"**Site recalibration** (5-fold cross-validated line): MAE {rc['mae_before']:.2f} → {rc['mae_after']:.2f} "
             f"months, bias {rc['bias_before']:+.2f} → {rc['bias_after']:+.2f}; fitted line {rc['intercept']:.1f} + {rc['slope']:.3f}·x.")
st.write("**Largest errors**, with Grad-CAM saliency on the model input")
st.dataframe(pd.DataFrame(summary["worst_cases"]), hide_index=True, key="worst")
try:
    spec = cohorts.at[db.run(rid)["cohort_id"], "source"]
    if spec.startswith(predictions.PREFIX):
        raise KneeageError("the predictions were made elsewhere; this cohort has no images.")
    src = st.session_state.get("check_source") if spec.startswith("upload:") else None
    gallery = worst_gallery(db.url, rid, summary["worst_cases"][:4], src)
except KneeageError as e:
    gallery = []
    st.caption(f"No gallery: {e}")
for col, g in zip(st.columns(4), gallery):
    col.image(g["framed"], caption=f"{g['case_id']}: where the model looked (orange: knee found, blue: its window)")
    col.image(g["overlay"], caption=f"{g['case_id']}: model {g['predicted']:.0f}, reference {g['reference']:.0f} months")

cols = st.columns(4)
for col, (fname, data) in zip(cols, exports.items()):
    col.download_button(f"Download {fname}", data, fname, key=f"dl_{fname}")
