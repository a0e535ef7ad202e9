"""Reading room: a reader enters their code and reads their own worklist, blinded and timed."""

import time

import streamlit as st

from kneeage import KneeageError, readerstudy
from kneeage.imaging import to_uint8
from kneeage.plots import radiograph_figure
from kneeage.predict import overlay, years_months
from pages.common import client, predictor, store

st.title("Reading room")
db = store()

if "reader" not in st.session_state:
    st.write("Enter the personal access code the study PI gave you. You will see only your own cases.")
    code = st.text_input("Access code", type="password", key="code")
    if st.button("Enter", key="enter", type="primary") and code:
        try:
            st.session_state.reader = readerstudy.authenticate(db, code, client())
            st.rerun()
        except KneeageError as e:
            st.error(str(e))
    st.stop()

reader = st.session_state.reader
try:
    readerstudy.check_standing(db, reader)  # revoked, re-issued or expired since sign-in: out at once
except KneeageError as e:
    for k in ("reader", "started", "revisit_position"):
        st.session_state.pop(k, None)
    st.error(str(e))
    st.stop()
top = st.columns([3, 1])
top[0].caption(f"Reader: {reader['name']} · study {db.study(reader['study_id'])['name']}")
if top[1].button("Leave", key="leave"):
    for k in ("reader", "started", "revisit_position"):
        st.session_state.pop(k, None)
    st.rerun()

protocol, _ = readerstudy.study_protocol(db, reader["study_id"])
done, total = readerstudy.progress(db, reader)
if protocol.allow_changes and done:
    with st.expander("Change an earlier answer (this study allows it)"):
        answered = db.reads(reader_id=reader["id"]).position.tolist()
        pick = st.selectbox("Case", answered, format_func=lambda p: f"case {p + 1}", key="revisit_pick")
        if st.button("Open it", key="revisit"):
            st.session_state.revisit_position = pick
task = (readerstudy.revisit(db, reader, st.session_state.revisit_position) if "revisit_position" in st.session_state
        else readerstudy.next_task(db, reader))
st.progress(done / total if total else 1.0, f"{done} of {total} read")
if isinstance(task, str):
    st.success(task)
    st.stop()

started = st.session_state.setdefault("started", {})
started.setdefault(task.position, time.time())
rad = readerstudy.task_image(db, reader, task)

left, right = st.columns([3, 2])
with right:
    st.subheader(f"Changing your answer to case {task.position + 1}" if "revisit_position" in st.session_state
                 else f"Case {task.done + 1} of {task.total}")
    facts = [f"Sex: {'female' if task.sex == 'F' else 'male'}" if task.sex else None,
             f"Chronological age: {task.chronological_age_months / 12:.1f} years" if task.chronological_age_months is not None else None]
    st.write(" · ".join(f for f in facts if f) or "No clinical details are shown in this study.")
    level = st.slider("Brightness", -0.5, 0.5, 0.0, 0.05, key=f"level_{task.position}")
    contrast = st.slider("Contrast", 0.5, 3.0, 1.0, 0.1, key=f"contrast_{task.position}")
    if task.arm == "assisted" and task.model_estimate_months is not None:
        m = task.model_estimate_months
        demo = db.run(db.study(reader["study_id"])["run_id"])["synthetic_demo"]  # the card of the study's model
        st.info(f"Model's estimate: {years_months(m)} ({m:.0f} months)."
                + (" Synthetic demo model — for the study's demonstration only." if demo else ""), icon=":material/smart_toy:")
        p = predictor()
        if "gradcam" in p.saliency_methods:
            x = p.prepare(rad.pixels, "auto", rad.pixel_spacing_mm)
            st.image(overlay(x, p.saliency(x, task.sex or "F", "gradcam"), 0.5), caption="Model saliency (Grad-CAM)", width=260)
        else:
            st.caption("This model has no saliency map (its runtime gives no gradients).")
    y = st.number_input("Bone age: years", 0, 20, None, key=f"years_{task.position}")
    mo = st.number_input("and months", 0, 11, 0, key=f"months_{task.position}")
    conf = st.select_slider("Confidence (optional)", [None, 1, 2, 3, 4, 5], None, key=f"conf_{task.position}",
                            format_func=lambda v: "—" if v is None else str(v))
    bad = st.checkbox("I cannot read this case", key=f"bad_{task.position}")
    reason = st.text_input("Why not?", key=f"reason_{task.position}") if bad else None
    if st.button("Submit and next", key="submit", type="primary"):
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
with left:
    img = to_uint8(rad.pixels, 900).astype(float) / 255
    img = ((img - 0.5) * contrast + 0.5 + level).clip(0, 1)
    st.plotly_chart(radiograph_figure(img), key=f"img_{task.position}", config={"scrollZoom": True})
    st.caption("Drag to zoom, double-click to reset; scroll to zoom.")
