"""Reader studies (PI): create a study, invite readers, follow progress, analyse and export."""

import pandas as pd
import streamlit as st

from kneeage import KneeageError, access, mrmc, paper, planning, plots, readerstudy, report
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
                st.code(readerstudy.describe(db, st.session_state.study_id), language=None)  # what it made, what next
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
analysis = readerstudy.analyse(db, sid, reads=reads).as_dict()
st.subheader("Analysis")
if not analysis["n_reads"]:
    st.info("No reads yet.")
    st.stop()
st.dataframe(paper.reader_table(analysis), hide_index=True, key="reader_table")
orh = analysis.get("orh") or {}
if len(orh_table := mrmc.study_table(orh)):
    st.markdown(f"**Primary analysis: ORH MRMC** — {orh['method']}. Differences are the first condition minus the second.")
    st.dataframe(orh_table, hide_index=True, key="orh_table")
for k, v in orh.get("not_computed", {}).items():
    st.caption(f"ORH not computed ({k}): {v}")
for text in paper.study_sentences(analysis):
    st.write(text)
for what, why in readerstudy.why_missing(analysis, reads, readerstudy.study_protocol(db, sid)[0]).items():
    st.info(f"{what}: {why}", icon=":material/hourglass_empty:")  # why a result is not there yet
figs = plots.study_figures(reads, analysis)
for k, fig in figs.items():
    st.plotly_chart(fig, key=f"study_{k}")
files = report.study_exports(db, sid, reads, analysis, figs)
for col, (name, data) in zip(st.columns(len(files)), files.items()):
    col.download_button(f"Download {name}", data, name, key=f"dl_{name}")
