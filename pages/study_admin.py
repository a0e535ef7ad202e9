"""Reader studies (PI): create a study, invite readers, follow progress, analyse and export."""

import pandas as pd
import streamlit as st

from kneeage import KneeageError, access, plots, readerstudy, report
from pages.common import predictor, require_pi, store

st.title("Reader studies (PI)")
db = store()

require_pi()

with st.expander("Change the PI password"):
    cur = st.text_input("Current password", type="password", key="pw_current")
    new = st.text_input("New password (at least 10 characters)", type="password", key="pw_new")
    if st.button("Change password", key="pw_change"):
        try:
            access.set_pi_password(new, cur)
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
if analysis.get("model"):
    st.write(f"Model on the same cases: MAE {analysis['model']['mae']:.2f} months (BCa CI {analysis['model']['mae_ci'][0]:.2f}–"
             f"{analysis['model']['mae_ci'][1]:.2f}).")
for r in analysis.get("inter_reader_icc", []):
    st.write(f"Inter-reader {r['mcgraw_wong']} ({r['description']}): {r['icc']:.3f} ({r['ci_lower']:.3f}–{r['ci_upper']:.3f}).")
av = analysis.get("assisted_vs_unassisted")
if av:
    moved = av["share_moved_toward_model"]
    st.write(f"Assisted − unassisted MAE, pooled: {av['pooled_mae_difference']:+.2f} months (bootstrap over readers and cases "
             f"{av['ci'][0]:+.2f} to {av['ci'][1]:+.2f}); reads moved toward the model: {moved:.0%}." if moved is not None else "")
for r in analysis.get("intra_reader", []):
    st.write(f"Intra-reader ({r['reader_id']}, {r['n']} repeats): bias {r['bias']:+.1f}, limits {r['loa'][0]:.1f} to {r['loa'][1]:.1f}, ICC(1) {r['icc1']:.2f}.")
figs = plots.study_figures(reads, analysis)
for k, fig in figs.items():
    st.plotly_chart(fig, key=f"study_{k}")
files = report.study_exports(db, sid, reads, analysis, figs)
for col, (name, data) in zip(st.columns(len(files)), files.items()):
    col.download_button(f"Download {name}", data, name, key=f"dl_{name}")
