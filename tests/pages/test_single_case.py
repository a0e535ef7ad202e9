"""AppTest of the single-case page: demo case, DICOM upload with header values, edited sex and age,
a PNG without a header, flags, crop box, saliency and downloads."""

import io
import json
import re
from datetime import date

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from kneeage.phantom import demo_case_dicom, render_hand, write_dicom
from tests.conftest import ROOT


def _app():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception
    return at


def _key(at, prefix):
    """The key of this image's widget (widgets are keyed per image)."""
    return next(w.key for w in at.text_input if w.key and w.key.startswith(prefix))


def _metrics(at):
    return {m.label: m.value for m in at.metric}


def test_demo_case_shows_a_full_result():
    at = _app()
    assert at.title[0].value == "Single case"
    assert "Upload a radiograph or try a demo case" in at.info[0].value
    at.button(key="demo").click().run()
    assert not at.exception
    m = _metrics(at)
    assert re.fullmatch(r"\d+ y \d+ mo \(\d+ mo\)", m["Bone age"])  # years and months, months in brackets
    assert any(re.fullmatch(r"\*\*95% interval:\*\* \d+ y \d+ mo – \d+ y \d+ mo \(\d+–\d+ mo\)", md.value) for md in at.markdown)
    assert m["Bone-age SDS"] != "—"
    assert any("synthetic demo model" in e.value for e in at.error)  # the plain statement
    assert any("Brush Foundation" in c.value for c in at.caption)  # the SDS reference is named
    assert any("Per-fold values" in c.value for c in at.caption)
    assert [b.proto.label for b in at.get("download_button")] == ["Download report (HTML)", "Download result (JSON)"]
    assert len(at.get("image")) == 2  # model input and saliency overlay
    assert at.selectbox(key="saliency").value == "gradient"  # the measured default (docs/saliency.md)
    assert not any("not_a_knee" in w.value for w in at.warning)
    card = " ".join(md.value for md in at.markdown)  # the model card, readable: no JSON tree
    assert all(h in card for h in ("**What it is**", "**Trained on**", "**Inputs**", "**Metrics**", "**Intended use**",
                                   "**Synthetic demo**")) and not at.get("json")


def test_dicom_upload_fills_sex_and_age_and_edits_change_the_sds():
    at = _app()
    name, data = demo_case_dicom(1)  # a boy of 134 months, bone age delayed
    at.file_uploader(key="file").upload(name, data, "application/dicom").run()
    assert not at.exception
    assert at.radio[0].value == "M" and at.text_input(key=_key(at, "age_")).value == "11 y 2 mo"  # 134 months
    sds_boy = _metrics(at)["Bone-age SDS"]
    at.radio[0].set_value("F").run()
    assert _metrics(at)["Bone-age SDS"] != sds_boy  # girls' SDs differ
    at.text_input(key=_key(at, "age_")).set_value("5y").run()
    assert float(_metrics(at)["Bone-age SDS"]) > 2  # much older bone age than a 5-year-old's
    assert [m.delta for m in at.metric if m.label == "Bone-age SDS"] == ["advanced"]


def test_png_without_header_needs_sex_and_gives_no_sds():
    at = _app()
    from kneeage.phantom import render_knee

    ph = render_knee(100, "F", 3, 256)
    buf = io.BytesIO()
    Image.fromarray((ph.pixels * 65535).astype(np.uint16)).save(buf, format="PNG")
    at.file_uploader(key="file").upload("knee.png", buf.getvalue(), "image/png").run()
    assert not at.exception
    assert any("does not say the patient's sex" in w.value for w in at.warning)
    assert not at.metric
    at.radio[0].set_value("F").run()
    assert any("estimated from the anatomy" in c.value for c in at.caption)  # no header: the scale is a guess, said so
    at.number_input[0].set_value(ph.truth.pixel_spacing_mm).run()  # the spacing the site knows
    assert any("(given)" in c.value for c in at.caption)
    assert _metrics(at)["Bone-age SDS"] == "—"
    assert at.text_input(key=_key(at, "age_")).value == ""
    at.text_input(key=_key(at, "age_")).set_value("8y 4m").run()  # ages typed as years and months …
    assert _metrics(at)["Bone-age SDS"] != "—"
    at.text_input(key=_key(at, "age_")).set_value("100").run()  # … or months alone (the same age)
    sds = _metrics(at)["Bone-age SDS"]
    at.text_input(key=_key(at, "age_")).set_value("8 years 4 months").run()
    assert _metrics(at)["Bone-age SDS"] == sds
    at.text_input(key=_key(at, "age_")).set_value("8y 14m").run()
    assert any("month part must be 0-11" in e.value for e in at.error)


def test_a_hand_film_is_flagged_before_the_number():
    at = _app()
    ph = render_hand(120, "M", 5, 384)
    buf = io.BytesIO()
    write_dicom(buf, ph.stored, ph.truth, birth=date(2015, 1, 1), study=date(2025, 1, 1), patient_id="H1",
                body_part="HAND")
    at.file_uploader(key="file").upload("hand.dcm", buf.getvalue(), "application/dicom").run()
    assert not at.exception
    assert any("does not look like a knee" in w.value for w in at.warning)
    assert any(e.value.startswith("No bone age") for e in at.error) and not at.metric  # withheld: no number
    assert not any(md.value.startswith("**95% interval") for md in at.markdown)  # no interval either
    at.checkbox[0].check().run()  # the user deliberately asks for it
    assert not at.exception and "OVERRIDDEN" in _metrics(at)["Bone age"]
    assert any("OVERRIDDEN" in w.value for w in at.warning)
    # flags come before the result metrics on the page
    order = [type(el).__name__ for el in at.main if type(el).__name__ in ("Warning", "Metric")]
    assert order.index("Warning") < order.index("Metric")


def test_crop_box_and_saliency_controls():
    at = _app()
    at.button(key="demo").click().run()
    box = at.text_input(key=_key(at, "box_"))
    default = box.value
    assert default == "" and any(c.value.startswith("Box: localiser") for c in at.caption)  # the model finds the knee
    box.set_value("0,0,200,200").run()
    assert any(c.value.startswith("Box: user box") for c in at.caption)
    assert not at.exception and at.text_input(key=_key(at, "box_")).value == "0,0,200,200"
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [(r["x0"], r["y0"], r["x1"], r["y1"]) for r in spec["layout"]["shapes"]] == [(0, 0, 200, 200)]
    at.text_input(key=_key(at, "box_")).set_value("0,0,5,5").run()
    assert any("leaves less than 16 px" in e.value for e in at.error)
    at.text_input(key=_key(at, "box_")).set_value(default).run()
    for method in ("smoothgrad", "gradcam"):
        at.selectbox(key="saliency").set_value(method).run()
        assert not at.exception
    at.slider(key="opacity").set_value(0.9).run()
    assert not at.exception and len(at.get("image")) == 2


def test_non_image_is_refused():
    at = _app()
    at.file_uploader(key="file").upload("notes.txt", b"not an x-ray", "text/plain").run()
    assert [e.value for e in at.error] == ["notes.txt: it is not an image file (neither DICOM nor PNG, JPEG or TIFF)."]


def test_header_age_outside_the_range_is_a_message_and_an_empty_field():
    """An adult's film (or a wrong birth date) must not crash the age field (issue 14.1)."""
    from kneeage.phantom import render_knee

    at = _app()
    ph = render_knee(150, "M", 4, 256)
    buf = io.BytesIO()
    write_dicom(buf, ph.stored, ph.truth, birth=date(1960, 1, 1), study=date(2025, 1, 1), patient_id="A1")
    at.file_uploader(key="file").upload("adult.dcm", buf.getvalue(), "application/dicom").run()
    assert not at.exception
    assert any("outside the 0-240 months" in w.value for w in at.warning)
    assert at.text_input(key=_key(at, "age_")).value == ""
    at.text_input(key=_key(at, "age_")).set_value("12y 6m").run()
    assert not at.exception and _metrics(at)["Bone-age SDS"] != "—"


def test_a_demo_case_while_a_file_is_uploaded_and_back():
    """Issue #18: "Try a demo case" works while a file is uploaded, and says the file is set aside."""
    at = _app()
    name, data = demo_case_dicom(1)  # a boy
    at.file_uploader(key="file").upload("boy.dcm", data, "application/dicom").run()
    assert at.radio[0].value == "M"
    at.selectbox(key="demo_pick").set_value(at.selectbox(key="demo_pick").options[0]).run()  # the 6-year-old girl
    at.button(key="demo").click().run()
    assert not at.exception and at.radio[0].value == "F"  # the demo case is read
    assert any("boy.dcm is set aside" in c.value for c in at.caption)
    at.button(key="back_to_upload").click().run()
    assert at.radio[0].value == "M" and not any("set aside" in c.value for c in at.caption)
