"""Reading room: a reader enters their code and reads their own worklist, blinded and timed."""

import time

import streamlit as st

from kneeage import KneeageError, readerstudy, units
from kneeage.predict import overlay
from kneeage.viewer import viewer_html
from pages.common import client, predictor, store

db = store()
SIGNED_IN = ("reader", "started", "revisit_position")


def _sign_out(message=None):
    for k in SIGNED_IN:
        st.session_state.pop(k, None)
    st.query_params.pop("session", None)
    if message:
        st.error(message)


if "reader" not in st.session_state and st.query_params.get("session"):  # a reload: the signed token, never the code
    try:
        reader = readerstudy.reader_from_token(db, st.query_params["session"])
        if reader is None:
            _sign_out("Your reading session has ended; enter your access code again.")
        else:
            st.session_state.reader = reader
    except KneeageError as e:
        _sign_out(str(e))

if "reader" not in st.session_state:
    st.title("Reading room")
    st.write("Enter the personal access code the study PI gave you (case and dashes do not matter). You will see "
             "only your own cases.")
    with st.form("sign_in", border=False):
        code = st.text_input("Access code", type="password", key="code")
        if st.form_submit_button("Enter", type="primary", key="enter") and code:
            try:
                st.session_state.reader = readerstudy.authenticate(db, code, client())
                st.query_params["session"] = readerstudy.session_token(db, st.session_state.reader)
                st.rerun()
            except KneeageError as e:
                st.error(str(e))
    st.stop()

reader = st.session_state.reader
try:
    readerstudy.check_standing(db, reader)  # revoked, re-issued or expired since sign-in: out at once
except KneeageError as e:
    _sign_out(str(e))
    st.stop()

protocol, _ = readerstudy.study_protocol(db, reader["study_id"])
done, total = readerstudy.progress(db, reader)
top = st.columns([4, 3, 1.2], vertical_alignment="center")
top[0].markdown(f"**Reading room** · {reader['name']} · study {db.study(reader['study_id'])['name']}")
top[1].progress(done / total if total else 1.0, f"{done} of {total} read")
if top[2].button("Leave", key="leave"):
    _sign_out()
    st.rerun()
if protocol.allow_changes and done:
    with st.expander("Change an earlier answer (this study allows it)"):
        answered = db.reads(reader_id=reader["id"]).position.tolist()
        pick = st.selectbox("Case", answered, format_func=lambda p: f"case {p + 1}", key="revisit_pick")
        if st.button("Open it", key="revisit"):
            st.session_state.revisit_position = pick
task = (readerstudy.revisit(db, reader, st.session_state.revisit_position) if "revisit_position" in st.session_state
        else readerstudy.next_task(db, reader))
if isinstance(task, str):
    st.success(task)
    st.stop()

started = st.session_state.setdefault("started", {})
started.setdefault(task.position, time.time())
rad = readerstudy.task_image(db, reader, task)

left, right = st.columns([5, 2])
with left:
    st.iframe(viewer_html(rad.pixels, label=f"case {task.position + 1}"), height=560)  # sizes itself to the window
with right:
    st.subheader(f"Changing your answer to case {task.position + 1}" if "revisit_position" in st.session_state
                 else f"Case {task.done + 1} of {task.total}")
    facts = [f"Sex: {'female' if task.sex == 'F' else 'male'}" if task.sex else None,
             f"Chronological age: {units.age_text(task.chronological_age_months)}" if task.chronological_age_months is not None else None]
    st.write(" · ".join(f for f in facts if f) or "No clinical details are shown in this study.")
    if task.arm == "assisted" and task.model_estimate_months is not None:
        demo = db.run(db.study(reader["study_id"])["run_id"])["synthetic_demo"]  # the card of the study's model
        st.info(f"Model's estimate: {units.age_text(task.model_estimate_months)}."
                + (" Synthetic demo model — for the study's demonstration only." if demo else ""), icon=":material/smart_toy:")
        p = predictor()
        if p.saliency_methods:
            x = p.prepare(rad.pixels, "auto", rad.pixel_spacing_mm)
            st.image(overlay(x, p.saliency(x, task.sex or "F", p.default_saliency), 0.5), width=220,
                     caption=f"Where the model looked ({p.default_saliency} saliency; docs/saliency.md)")
        else:
            st.caption("This model has no saliency map (its runtime gives no gradients).")
    with st.form(f"answer_{task.position}", border=False):
        a, b = st.columns(2)
        y = a.number_input("Bone age: years", 0, 20, None, key=f"years_{task.position}")
        mo = b.number_input("and months", 0, 11, 0, key=f"months_{task.position}")
        conf = st.select_slider("Confidence (optional): 1 a guess · 3 fairly sure · 5 certain", [None, 1, 2, 3, 4, 5], None,
                                key=f"conf_{task.position}", format_func=lambda v: readerstudy.CONFIDENCE.get(v, "not given"))
        bad = st.checkbox("I cannot read this case", key=f"bad_{task.position}")
        reason = st.text_input("If you cannot read it: why not?", key=f"reason_{task.position}")
        submitted = st.form_submit_button("Submit and next", type="primary", key="submit", help="Enter in a field also submits.")
    if submitted:
        try:
            est = None if bad or y is None else y * 12 + mo
            if not bad and y is None:
                raise KneeageError("Enter the bone age in years and months, or mark the case unreadable with a reason.")
            if bad and not (reason or "").strip():
                raise KneeageError("Give a reason why the case cannot be read.")
            readerstudy.submit(db, reader, task, est, time.time() - started[task.position], conf, reason if bad else None)
            st.session_state.pop("revisit_position", None)
            started.pop(task.position, None)
            st.rerun()
        except KneeageError as e:
            st.error(str(e))
