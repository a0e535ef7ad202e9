"""Single case: one knee radiograph → bone age, interval, SDS, flags and saliency."""

import streamlit as st

from kneeage import KneeageError, case, cardview, growth, report, units
from kneeage.imaging import load_radiograph
from kneeage.phantom import DEMO_CASES, demo_case_dicom
from kneeage.plots import box_from_selection, crop_figure
from pages.common import predictor

st.title("Single case")
st.caption("Nothing is written to disk or to the database: the image and the result stay in this browser "
           "session's memory until you download them.")


@st.cache_data(show_spinner="Rendering a synthetic demo knee…")
def _demo(index: int):
    return demo_case_dicom(index)


left, right = st.columns([3, 2])
upload = left.file_uploader("Knee radiograph (DICOM, PNG, JPEG, TIFF)", key="file")
if (upload.file_id if upload else None) != st.session_state.get("upload_seen"):  # a new upload is the case to read
    st.session_state.upload_seen = upload.file_id if upload else None
    st.session_state.source_pick = "upload" if upload else st.session_state.get("source_pick")
with right:
    demo_label = st.selectbox("…or try a demo case (synthetic phantom)", [c[0] for c in DEMO_CASES], key="demo_pick")
    if st.button("Try a demo case", key="demo"):
        st.session_state.demo_index = [c[0] for c in DEMO_CASES].index(demo_label)
        st.session_state.source_pick = "demo"

if "demo_index" in st.session_state and (upload is None or st.session_state.get("source_pick") == "demo"):
    source = _demo(st.session_state.demo_index)
    if upload is not None:
        right.caption(f"Showing the demo case; your file {upload.name} is set aside.")
        if right.button(f"Read {upload.name} instead", key="back_to_upload"):
            st.session_state.source_pick = "upload"
            st.rerun()
elif upload is not None:
    source = (upload.name, upload.getvalue())
else:
    st.info("Upload a radiograph or try a demo case to begin.")
    st.stop()

try:
    rad = load_radiograph(source[1], name=source[0])
except KneeageError as e:
    st.error(str(e), icon=":material/block:")
    st.stop()

key = rad.content_hash[:12]  # widgets per image: a new image starts from its own header
st.session_state.setdefault(f"box_{key}", "")  # empty: the model's localiser finds the knee
file_age, age_problem = case.header_age(rad)
st.session_state.setdefault(f"age_{key}", units.years_months(file_age) if file_age is not None else "")
c1, c2, c3 = st.columns([1, 1, 1])
sex = c1.radio("Sex", ["F", "M"], index=["F", "M"].index(rad.sex) if rad.sex in ("F", "M") else None,
               key=f"sex_{key}", horizontal=True, format_func={"F": "Female", "M": "Male"}.get,
               help="Filled in from the DICOM header when present; change it if it is wrong.")
age_text = c2.text_input("Chronological age", key=f"age_{key}", placeholder="e.g. 12y 3m, or 147 (months)",
                         help="Years and months (\"12y 3m\") or months alone (\"147\"). From the DICOM birth and study "
                              "dates when present; leave empty if unknown (no SDS then).")
try:
    age = units.parse_age(age_text)
except KneeageError as e:
    c2.error(str(e))
    age = None
spacing = None
if rad.pixel_spacing_mm is None:
    spacing = c3.number_input("Pixel spacing (mm), if you know it", 0.02, 5.0, None, 0.01, format="%.3f", key=f"spacing_{key}",
                              help="This file has no header giving its pixel size. Without it the model estimates the "
                                   "scale from the anatomy, which is less accurate.")
if age_problem:
    st.warning(age_problem, icon=":material/event_busy:")
if rad.sex or file_age is not None:
    st.caption("Sex and age were read from the file's header (the dates themselves are not kept)."
               + (f" Age: {units.age_text(age)}." if age is not None else ""))
if sex is None:
    st.warning("The file does not say the patient's sex; choose it above to get a bone age.")
    st.stop()

override = st.session_state.get(f"override_{key}", False)
BOX_LABEL = "Knee box x0,y0,x1,y1 (pixels): empty lets the model find the knee; drag a box on the image or type one"
try:
    result, model_input = case.analyse(predictor(), rad, sex, age, st.session_state[f"box_{key}"], spacing, override)
except KneeageError as e:
    st.error(str(e))
    st.text_input(BOX_LABEL, key=f"box_{key}")  # so a wrong box can be corrected
    st.stop()

st.subheader("Result")
p = result.prediction
if p.synthetic_demo:
    st.error(case.DEMO_STATEMENT, icon=":material/science:")
for message in p.flag_messages:
    st.warning(message, icon=":material/flag:")
if p.refusal:
    st.error(p.refusal_text, icon=":material/block:")
    st.checkbox("Show the model's number anyway (the result and the report are marked as overridden)", key=f"override_{key}")
    if result.overridden:
        st.warning("OVERRIDDEN: the model withheld this number; it is shown because you asked for it.", icon=":material/warning:")
if not result.withheld:
    m1, m2 = st.columns([3, 2])
    m1.metric("Bone age", units.age_text(p.bone_age_months) + (" — OVERRIDDEN" if result.overridden else ""),
              help=f"{p.bone_age_months:.1f} months, the mean of the folds")
    m1.markdown(f"**{p.interval_level:.0%} interval:** {units.range_text(*p.interval_months, none='none (the card gives no interval rule)')}")
    if result.sds is not None:
        m2.metric("Bone-age SDS", f"{result.sds.sds:+.2f}", result.sds.category, delta_color="off", delta_arrow="off")
        m2.caption(result.sds.sentence())
    else:
        m2.metric("Bone-age SDS", "—", help="Needs the chronological age.")
    st.caption(case.interval_note(p) + " Per-fold values: " + ", ".join(units.age_text(v) for v in p.fold_values_months) + ".")

st.subheader("Knee region and where the model looked")
k1, k2, k3 = st.columns([4, 3, 3])
with k1:
    event = st.plotly_chart(crop_figure(rad.pixels, result.box), key="crop", on_select="rerun", selection_mode="box",
                            config={"displayModeBar": False})
    picked = box_from_selection(event.get("selection") if event else None)
    if picked and picked != result.box and st.session_state.get("last_pick") != picked:
        st.session_state.last_pick = picked
        st.session_state[f"box_{key}"] = ",".join(map(str, picked))
        st.rerun()
    st.text_input(BOX_LABEL, key=f"box_{key}")
    if result.framing is not None:
        f = result.framing
        sp = f"; pixel spacing {f.spacing_mm[0]:.3f} mm ({f.spacing_source})" if f.spacing_mm else ""
        st.caption(f"Box: {f.region_source}{sp}.")
k2.image((model_input * 255).astype("uint8"), caption="The model's input", width="stretch")
methods = list(predictor().saliency_methods or ["gradient"])
if st.session_state.get("saliency") not in methods:  # first view, or a model without the method chosen before
    st.session_state.saliency = predictor().default_saliency if predictor().default_saliency in methods else methods[0]
method = k3.selectbox("Saliency", methods, format_func=case.SALIENCY_METHODS.get, key="saliency",
                      help="The default is the method that puts most of its weight on the physes of phantom knees "
                           "(docs/saliency.md).")
opacity = k3.slider("Opacity", 0.0, 1.0, 0.5, 0.05, key="opacity")
try:
    over = case.saliency_overlay(predictor(), model_input, result.sex, method, opacity, result.chronological_age_months)
    k3.image(over, caption=f"{case.SALIENCY_METHODS[method]} on the model input (fold 0)", width="stretch")
except KneeageError as e:  # an ONNX model has no gradients; the sentence says so
    over = None
    k3.info(str(e), icon=":material/visibility_off:")

with st.expander(f"Model card: {p.model_name} · hash {p.model_hash}"):
    for head, text in cardview.card_sections(predictor().card, p.model_hash):
        st.markdown(f"**{head}**\n\n{text}")

st.subheader("Growth (decision support)")
growth_result = None
if not result.withheld and st.toggle("Show remaining growth, limb lengths and adult height", key="growth_on"):
    st.caption(growth.DECISION_SUPPORT)
    g = st.columns(4)
    height = g[0].number_input("Current height (cm)", 30.0, 230.0, None, 0.5, key="growth_height")
    femur = g[1].number_input("Femur length (cm)", 1.0, 130.0, None, 0.1, key="growth_femur")
    tibia = g[2].number_input("Tibia length (cm)", 1.0, 130.0, None, 0.1, key="growth_tibia")
    lld = g[3].number_input("Limb-length discrepancy (cm)", 0.0, 50.0, None, 0.1, key="growth_lld")
    try:
        growth_result = growth.growth_panel(p.bone_age_months, p.interval_months, result.sex,
                                            result.chronological_age_months, height, femur, tibia, lld)
    except KneeageError as e:
        st.error(str(e))
    if growth_result is not None:
        st.dataframe(report.growth_rows(growth_result), hide_index=True, key="growth_table")
        for note in growth_result.notes:
            st.info(note)
        st.caption(f"Ranges span the bone-age interval {units.range_text(*p.interval_months)}. Tables and sources: docs/growth.md.")

st.subheader("Report")
st.caption("Optional: typed here for the downloaded report only; never stored or sent anywhere.")
r1, r2, r3 = st.columns(3)
patient = {"Patient name": r1.text_input("Patient name", key="rep_name"), "Patient ID": r2.text_input("Patient ID", key="rep_id"),
           "Accession number": r3.text_input("Accession number", key="rep_acc")}
d1, d2 = st.columns(2)
stem = result.file.rsplit(".", 1)[0]
d1.download_button("Download report (HTML)", report.case_html(result, model_input, over, case.SALIENCY_METHODS[method] if over is not None else None,
                                                              growth_result, patient), f"{stem}_kneeage.html", "text/html", key="dl_html")
d2.download_button("Download result (JSON)", report.case_json(result, growth_result), f"{stem}_kneeage.json", "application/json",
                   key="dl_json")
