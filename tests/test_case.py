"""The single-case pipeline and its reports (the demo model on rendered phantoms)."""

import json

import numpy as np
import pytest

from kneeage import case, report
from kneeage.errors import InputError
from kneeage.imaging import load_radiograph
from kneeage.phantom import DEMO_CASES, demo_case_dicom
from kneeage.plots import box_from_selection, crop_figure
from kneeage.predict import Predictor, list_models


@pytest.fixture(scope="module")
def predictor():
    return Predictor()


@pytest.fixture(scope="module")
def demo():
    name, data = demo_case_dicom(2)
    return load_radiograph(data, name=name)


def test_demo_cases_carry_sex_and_age_in_the_header(demo):
    label, ba, sex, chron = DEMO_CASES[2]
    assert demo.sex == sex and demo.chronological_age_months == pytest.approx(chron, abs=0.1)
    assert demo.body_part == "KNEE"


def test_analyse_gives_bone_age_sds_and_flags(predictor, demo):
    res, x = case.analyse(predictor, demo, demo.sex, demo.chronological_age_months)
    p = res.prediction
    assert x.shape == (predictor.input_size,) * 2 and 0 <= x.min() and x.max() <= 1
    assert p.interval_months[0] < p.bone_age_months < p.interval_months[1]
    assert res.sds is not None and res.sds.sds == pytest.approx(
        (p.bone_age_months - res.chronological_age_months) / res.sds.sd_months)
    d = res.as_dict()
    assert d["synthetic_demo"] and "not a clinical bone age" in d["notice"]
    assert d["bone_age_years_months"] == case.years_months(p.bone_age_months)
    assert case.analyse(predictor, demo, "F", None)[0].sds is None
    with pytest.raises(InputError, match="sex must be F or M"):
        case.analyse(predictor, demo, None, 100)
    with pytest.raises(InputError, match="outside 0-240 months"):
        case.analyse(predictor, demo, "F", 400)


def test_crop_boxes(demo):
    h, w = demo.shape
    assert case.check_box("full", demo) == "full"
    assert case.check_box("auto", demo) == "auto" == case.check_box("", demo) == case.check_box(None, demo)
    assert case.check_box("0,0,99999,99999", demo) == (0, 0, w, h)
    assert case.check_box("300,400,-20,10", demo) == (0, 10, 300, 400)  # sorted and clipped
    with pytest.raises(InputError, match="leaves less than 16 px"):
        case.check_box((0, 0, 10, 10), demo)
    with pytest.raises(InputError, match="is not four numbers"):
        case.check_box("a,b", demo)
    fig = crop_figure(demo.pixels, (1, 2, 100, 200))
    assert (fig.layout.shapes[0].x0, fig.layout.shapes[0].y1) == (1, 200)
    assert box_from_selection({"box": [{"x": [90.4, 10.2], "y": [5, 300.6]}]}) == (10, 5, 90, 301)
    assert box_from_selection({"box": [], "points": []}) is None and box_from_selection(None) is None


def test_saliency_overlay(predictor, demo):
    res, x = case.analyse(predictor, demo, "F", 146)
    for method in case.SALIENCY_METHODS:
        over = case.saliency_overlay(predictor, x, "F", method, 0.6)
        assert over.shape == (predictor.input_size, predictor.input_size, 3) and over.dtype == np.uint8
    plain = case.saliency_overlay(predictor, x, "F", "gradient", 0.0)
    assert np.array_equal(plain[..., 0], plain[..., 1])  # opacity 0: the grey input only
    with pytest.raises(InputError, match="opacity"):
        case.saliency_overlay(predictor, x, "F", "gradient", 2)


def test_reports_hold_the_numbers_and_nothing_identifying(predictor):
    from datetime import date

    from kneeage.phantom import render_knee, write_dicom
    import io

    ph = render_knee(130, "M", 1, 256)
    buf = io.BytesIO()
    write_dicom(buf, ph.stored, ph.truth, birth=date(2014, 3, 9), study=date(2025, 2, 1), patient_id="SECRET42")
    rad = load_radiograph(buf.getvalue(), name="knee.dcm")
    res, x = case.analyse(predictor, rad, rad.sex, rad.chronological_age_months)
    over = case.saliency_overlay(predictor, x, "M", "gradcam")
    page = report.case_html(res, x, over, "Grad-CAM")
    d = json.loads(report.case_json(res))
    from kneeage.units import age_text, range_text

    assert age_text(d["bone_age_months"]) in page and range_text(*d["interval_months"]) in page  # y m (mo)
    assert "Report date" in page and "synthetic demo model" in page and "Brush Foundation" in page
    assert 'width:18rem;height:18rem' in page  # the model input and the overlay at one size
    assert page.count("data:image/png;base64,") == 2 and "<script" not in page and "http" not in page
    for secret in ("SECRET42", "PHANTOM", "2014", "20140309", "2025-02-01"):
        assert secret not in page and secret not in json.dumps(d)
    assert set(d) >= {"file", "bone_age_months", "interval_months", "flags", "bone_age_sds", "model_hash"}
    typed = report.case_html(res, x, over, "Grad-CAM", patient={"Patient name": "Doe^Jane", "Accession number": "A77"})
    assert "Doe^Jane" in typed and "A77" in typed and "typed by the user" in typed  # the report the user asked for …
    assert "Doe^Jane" not in report.case_json(res)  # … and nothing else carries them


def test_fold_disagreement_widens_the_interval_to_hold_every_fold(predictor):
    """Issue #18: folds spanning 34-131 months must not give an interval of 75-103."""
    import numpy as np

    folds = np.array([34.0, 80.0, 90.0, 100.0, 131.0])  # raw outputs: the model's output calibration maps each
    p = predictor._prediction(float(folds.mean()), folds, None, None, "F")
    lo, hi = p.interval_months
    shown = p.fold_values_months  # … onto the scale the user sees
    assert max(shown) - min(shown) > 80 and p.interval_widened and "folds_disagree" in p.flags
    assert lo <= min(shown) and hi >= max(shown)
    assert "widened to hold every fold" in case.interval_note(p)
    calm = predictor._prediction(87.0, np.array([85.0, 86.0, 87.0, 88.0, 89.0]), None, None, "F")
    hw = (calm.interval_months[1] - calm.interval_months[0]) / 2
    assert not calm.interval_widened and hw > 2  # typical agreement: the calibrated interval, unchanged


def test_a_chest_film_is_refused_and_its_report_carries_no_number(predictor):
    """Issue #18: a chest film (DICOM, or a PNG of one) gets no bone age unless the user overrides, marked so."""
    import io

    from PIL import Image
    from pydicom.data import get_testdata_file

    from kneeage.imaging import to_uint8

    chest = load_radiograph(open(get_testdata_file("RG1_UNCI.dcm"), "rb").read(), name="chest.dcm")
    buf = io.BytesIO()
    Image.fromarray(to_uint8(chest.pixels, 1024)).save(buf, format="PNG")
    for rad in (chest, load_radiograph(buf.getvalue(), name="chest.png")):
        res, x = case.analyse(predictor, rad, "F", 100.0)
        # "not a knee" (the DICOM's body part, or features far from any knee), or "too unlike the training
        # images" (v7's equalised features put the chest PNG between the two distance thresholds): no number
        assert res.withheld and res.prediction.refusal in ("not_a_knee", "unlike_training") and res.sds is None
        assert res.prediction.refusal_text.startswith("No bone age")
        d = res.as_dict()
        assert d["bone_age_months"] is None and d["interval_months"] is None
        assert "withheld" in report.case_html(res, x)
        over, _ = case.analyse(predictor, rad, "F", 100.0, override=True)
        assert over.overridden and "OVERRIDDEN" in report.case_html(over, x)


def test_list_models(tmp_path):
    assert list(list_models())[0] == "demo"
    for name in ("b_model", "a_model"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_card.json").write_text("{}")
    (tmp_path / "not_a_model").mkdir()
    assert list(list_models(tmp_path)) == ["a_model", "b_model"]
