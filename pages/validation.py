"""External validation: a site uploads a cohort, checks it, runs the model and exports the results."""

import json

import pandas as pd
import streamlit as st

from kneeage import KneeageError, compare, predictions, readerstudy, report, validation
from kneeage.cohort import FolderSource, ZipSource, manifest_hint, manifest_in, reference_problem
from kneeage.config import check_upload
from kneeage.predict import FLAG_TEXT, list_models
from pages import results_view
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
        source = ZipSource(z.getvalue(), z.name) if z else None
        picked = z.file_id if z else None
    else:
        folder = st.text_input("Images folder (paths in the manifest are relative to it)", key="folder")
        source = FolderSource(folder) if folder else None
        picked = folder
    up = st.file_uploader("Manifest CSV (if not inside the zip)", type=["csv", "txt"], key="manifest")
    inside = None if up or source is None else manifest_in(source)  # a manifest.csv inside the zip: paths from its folder
    manifest, source = (up.getvalue(), source) if up else inside or (None, source)
    manifest_name = up.name if up else manifest_name
except KneeageError as e:
    st.error(str(e))
    source = manifest = picked = None
if source is not None and manifest is None and not only_predictions:
    st.info(manifest_hint(source), icon=":material/description:")  # a zip or folder without manifest.csv: say so
opt_in = st.checkbox("Keep identifying manifest columns (names, ids, dates) in the database", key="opt_in")
inputs = (kind, picked, manifest, opt_in)  # what the dry run was made from
if "cohort_check" in st.session_state and st.session_state.get("check_inputs") != inputs:
    del st.session_state["cohort_check"]  # a stale dry run (and its Run button) must not outlive its inputs
    st.info("The images, manifest or options changed since the dry run; check the cohort again.")

if source is not None and manifest is not None and st.button("Check cohort (dry run)", key="check", type="primary"):
    bar = st.progress(0.0, "Opening every image…")
    try:
        model = None if only_predictions else predictor()
        st.session_state.cohort_check = validation.dry_run(manifest, source, manifest_name, model, opt_in,
                                                           progress=lambda what, k, n: bar.progress(k / n))
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
    if why_not := reference_problem(check):
        st.warning(why_not, icon=":material/rule:")
    runnable = not why_not or st.checkbox("Run for predictions only (no agreement statistics)", key="no_reference")
    if s["usable"] and runnable and (methods or chosen) and st.button(f"{what} {s['usable']} cases", key="run", type="primary"):
        bar = st.progress(0.0, "Predicting…")
        done = validation.validate_cohort(store(), None, st.session_state.check_source, [load_predictor(str(models[m])) for m in chosen],
                                          name=name, site=site, manifest_name=manifest_name, check=check, opt_in_identifying=opt_in,
                                          progress=lambda what, k, n: bar.progress(k / n, f"{what.capitalize()}… {k} of {n}"))
        st.session_state.run_pick = done.run_ids[0 if methods else -1]  # the run just made is the one shown
        st.rerun()  # a clean page with the results

st.subheader("3 · Results")
db = store()
runs = db.runs()
runs = runs[~runs.cohort_id.isin(readerstudy.demo_cohort_ids(db))]  # reader-study demo cohorts are not validation runs
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
            bar = st.progress(0.0)
            validation.resume(db, rid, load_predictor, st.session_state.get("check_source"), progress=lambda k, n: bar.progress(k / n))
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
results_view.headline(summary)  # each number with its 95% CI on screen
if report.withheld_text(summary):
    st.info(f"Withheld by the model (no number, left out of the statistics): {report.withheld_text(summary)}.", icon=":material/block:")
for tab, (key, fig) in zip(st.tabs([k.replace("_", " ").capitalize() for k in figs]), figs.items()):
    tab.plotly_chart(fig, key=f"fig_{key}")
results_view.results(summary, meta)  # comparisons in plain sentences, coverage, tidy tables with units
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
st.write("**Clinical view of error** — would the error change a decision? (kneeage.growth.clinical_view; docs/growth.md)")
st.dataframe(pd.DataFrame(report.clinical_rows(summary.get("clinical")), columns=["measure", "value"]),
             hide_index=True, key="clinical")
if summary.get("recalibration"):
    rc = summary["recalibration"]
    st.write(f"**Site recalibration** (5-fold cross-validated line): MAE {rc['mae_before']:.2f} → {rc['mae_after']:.2f} "
             f"months, bias {rc['bias_before']:+.2f} → {rc['bias_after']:+.2f}; fitted line {rc['intercept']:.1f} + {rc['slope']:.3f}·x.")
st.write("**Largest errors**, with the model's default saliency map on its input (docs/saliency.md)")
results_view.worst(summary)
try:
    gallery = worst_gallery(db.url, rid, summary["worst_cases"][:4], st.session_state.get("check_source"))
except KneeageError as e:
    gallery = []
    st.caption(f"No gallery: {e}")
for col, g in zip(st.columns(4), gallery):
    col.image(g["framed"], caption=f"{g['case_id']}: where the model looked (orange: knee found, blue: its window)")
    col.image(g["overlay"], caption=f"{g['case_id']}: model {g['predicted']:.0f}, reference {g['reference']:.0f} months")

results_view.downloads(exports, meta)  # named with site, cohort and date
