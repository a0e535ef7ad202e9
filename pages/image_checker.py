"""Image checker: drop radiographs and see each one as kneeage decodes it, or why it is refused."""

import streamlit as st

from kneeage import KneeageError
from kneeage.imaging import load_radiograph, to_uint8
from pages.common import predictor

st.title("Image checker")
st.write(
    "Drop the radiographs your site exports (DICOM, PNG, JPEG, TIFF) to check that kneeage decodes them "
    "before a study. Files are read in memory only; nothing is stored."
)
files = st.file_uploader("Radiographs", accept_multiple_files=True, key="files")

for f in files or []:
    try:
        r = load_radiograph(f, name=f.name)
    except KneeageError as e:
        st.error(str(e), icon=":material/block:")
        continue
    with st.container(border=True):
        left, mid, right = st.columns([1, 1, 1])
        left.image(to_uint8(r.pixels, 512), caption=f"{r.name} — {r.shape[1]}×{r.shape[0]} px, bone bright", clamp=True)
        framing = predictor().frame(r.pixels, "auto", r.pixel_spacing_mm)
        x = predictor().prepare(r.pixels, framing=framing)
        sp = f", pixel spacing {framing.spacing_mm[0]:.3f} mm ({framing.spacing_source})" if framing.spacing_mm else ""
        mid.image(to_uint8(x), caption=f"What the model sees: {framing.region_source}{sp}", clamp=True)
        right.success(f"{r.name}: decoded as {r.format}.", icon=":material/check_circle:")
        right.json(r.metadata(), expanded=True)
