"""Reader studies (PI): create a study, invite readers, follow progress, analyse and export."""

import pandas as pd
import streamlit as st

from kneeage import KneeageError, access, mrmc, planning, plots, readerstudy, report
from pages.common import client, predictor, require_pi, store

st.title("Reader studies (PI)")
db = store()

require_pi()

with st.expander("Change the PI password"):
    cur = st.text_input("Current password", type="password", key="pw_current")
    new = st.text_input("New password (at least 10 characters)", type="password", key="pw_new")
    if st.button("Change password", key="pw_change"):
        try:
            access.set_pi_password(new, cur, store=db, clients=client())
            st.success("The PI password was changed.")
        except KneeageError as e:
            st.error(str(e))

with st.expander("Create a study"):
    shipped = {p.name: p for p in sorted(readerstudy.SHIPPED.glob("*.toml"))}
    choice = st.selectbox("Protocol", list(shipped), key="protocol_file")
    cohorts = db.cohorts()
    options = {"": "the protocol's synthetic demo cohort"}
    options |= {r.id: f"{r.site} · {r.name} ({r.n_cases} cases)" for r in cohorts.itertuples()}
    cohort = st.selectbox("Cohort", list(options), format_func=options.get, key="study_cohort")
    if st.button("Create study", key="create_study") and choice:
        with st.spinner("Preparing the cohort and the model's estimates…"):
            try:
                p = readerstudy.Protocol.load(shipped[choice])
                st.session_state.study_id = readerstudy.setup_study(db, p, predictor() if p.assisted else None, cohort or None)
            except KneeageError as e:
                st.error(str(e))

with st.expander("Plan a study (sample size)"):
    st.caption("Validation cohort: MAE and limits-of-agreement precision, Archer/Riley (2021) criteria. Each row states "
               "its assumption; the cohort needs the largest n.")
    c = st.columns(5)
    mae = c[0].number_input("Anticipated MAE (months)", 0.1, 120.0, 5.0, key="plan_mae")
    half = c[1].number_input("MAE CI half-width", 0.05, 60.0, 0.5, key="plan_half")
    sde = c[2].number_input("SD of errors (months)", 0.1, 120.0, 6.3, key="plan_sde")
    loa = c[3].number_input("Limit CI half-width", 0.05, 60.0, 2.0, key="plan_loa")
    sdr = c[4].number_input("SD of reference ages", 1.0, 240.0, 50.0, key="plan_sdr")
    if st.button("Cohort size", key="plan_cohort"):
        try:
            st.dataframe(planning.plan_cohort(mae=mae, mae_half_width=half, sd_error=sde, loa_half_width=loa,
                                              sd_reference=sdr), hide_index=True, key="plan_cohort_table")
        except KneeageError as e:
            st.error(str(e))
    st.caption("Reader study: readers × cases to detect an MAE difference between the arms (Hillis-Obuchowski power for "
               "ORH; pilot error variance and covariances scaled by pilot cases / cases).")
    pilots = {"": "variance components entered below"} | dict(zip((known := db.studies()).id, known.name))
    pilot = st.selectbox("Pilot", list(pilots), format_func=pilots.get, key="plan_pilot")
    c = st.columns(7)
    effect = c[0].number_input("MAE difference", 0.01, 60.0, 1.0, key="plan_effect")
    comps = {k: c[i + 1].number_input(k, value=v, format="%.4g", key=f"plan_{k}") for i, (k, v) in enumerate(
        {"var_reader_condition": 0.3, "var_error": 0.5, "cov1": 0.3, "cov2": 0.2, "cov3": 0.15}.items())}
    comps["pilot_cases"] = c[6].number_input("pilot cases", 2, 100000, 50, key="plan_pilot_cases")
    if st.button("Readers × cases", key="plan_readers"):
        try:
            if pilot:
                comps = planning.pilot_from_reads(readerstudy.reads_table(db, pilot))
                comps.pop("observed_difference")
            st.dataframe(planning.plan_reader_study(effect, **comps), hide_index=True, key="plan_readers_table")
        except KneeageError as e:
            st.error(str(e))

studies = db.studies()
if not len(studies):
    st.info("No studies yet.")
    st.stop()
names = dict(zip(studies.id, studies.name + " (" + studies.id + ")"))
ids = list(names)[::-1]
sid = st.selectbox("Study", ids, format_func=names.get, key="study_pick",
                   index=ids.index(st.session_state.study_id) if st.session_state.get("study_id") in ids else 0)

c1, c2 = st.columns([2, 1])
who = c1.text_input("Invite a reader (name)", key="invite_name")
if c2.button("Create access code", key="invite") and who:
    st.session_state.new_code = (who, readerstudy.invite(db, sid, who))
if st.session_state.get("new_code"):
    st.success(f"Access code for {st.session_state.new_code[0]} (shown once — copy it now):")
    st.code(st.session_state.new_code[1])

readers = db.readers(sid)
if len(readers):
    prog = pd.DataFrame([{"reader": r["name"], "id": r["id"], "read": d, "of": t, "expires": r["expires"],
                          "withdrawn": bool(r["revoked"])}
                         for r in readers.to_dict("records") for d, t in [readerstudy.progress(db, r)]])
    st.dataframe(prog, hide_index=True, key="progress")
    who = dict(zip(readers.id, readers.name + " (" + readers.id + ")"))
    c1, c2, c3 = st.columns([2, 1, 1])
    rid = c1.selectbox("Reader", list(who), format_func=who.get, key="access_reader")
    try:
        if c2.button("Withdraw code", key="revoke"):
            readerstudy.revoke(db, sid, rid)
            st.rerun()
        if c3.button("Issue a new code", key="reissue", help="The old code and any session opened with it stop working."):
            st.session_state.new_code = (who[rid], readerstudy.reissue(db, sid, rid))
            st.rerun()
    except KneeageError as e:
        st.error(str(e))

reads = readerstudy.reads_table(db, sid)
analysis = readerstudy.analyse(db, sid, reads=reads)
st.subheader("Analysis")
if not analysis["n_reads"]:
    st.info("No reads yet.")
    st.stop()
rows = []
for r in analysis["readers"]:
    for arm in ("unassisted", "assisted"):
        if arm in r:
            a = r[arm]
            mm = a.get("minus_model", {})
            rows.append({"reader": r["reader"], "arm": arm, "n": a["n"], "MAE": a["mae"], "MAE CI": "{:.1f}–{:.1f}".format(*a["mae_ci"]),
                         "bias": a["bias"], "MAE − model": mm.get("difference"),
                         "CI": "{:.1f}–{:.1f}".format(*mm["ci"]) if mm else "", "median s": r["median_seconds"]})
st.dataframe(pd.DataFrame(rows), hide_index=True, key="reader_table")
orh = analysis.get("orh") or {}
if len(orh_table := mrmc.study_table(orh)):
    st.markdown(f"**Primary analysis: ORH MRMC** — {orh['method']}. Differences are the first condition minus the second.")
    st.dataframe(orh_table, hide_index=True, key="orh_table")
for k, v in orh.get("not_computed", {}).items():
    st.caption(f"ORH not computed ({k}): {v}")
if analysis.get("model"):
    st.write(f"Model on the same cases: MAE {analysis['model']['mae']:.2f} months (BCa CI {analysis['model']['mae_ci'][0]:.2f}–"
             f"{analysis['model']['mae_ci'][1]:.2f}).")
for r in analysis.get("inter_reader_icc", []):
    st.write(f"Inter-reader {r['mcgraw_wong']} ({r['description']}): {r['icc']:.3f} ({r['ci_lower']:.3f}–{r['ci_upper']:.3f}).")
av = analysis.get("assisted_vs_unassisted")
if av:
    moved = av["share_moved_toward_model"]
    st.write(f"Sensitivity analysis (bootstrap): assisted − unassisted MAE, pooled: {av['pooled_mae_difference']:+.2f} months (bootstrap over readers and cases "
             f"{av['ci'][0]:+.2f} to {av['ci'][1]:+.2f}); reads moved toward the model: {moved:.0%}." if moved is not None else "")
for r in analysis.get("intra_reader", []):
    st.write(f"Intra-reader ({r['reader_id']}, {r['n']} repeats): bias {r['bias']:+.1f}, limits {r['loa'][0]:.1f} to {r['loa'][1]:.1f}, ICC(1) {r['icc1']:.2f}.")
figs = plots.study_figures(reads, analysis)
for k, fig in figs.items():
    st.plotly_chart(fig, key=f"study_{k}")
files = report.study_exports(db, sid, reads, analysis, figs)
for col, (name, data) in zip(st.columns(len(files)), files.items()):
    col.download_button(f"Download {name}", data, name, key=f"dl_{name}")
