"""Physical framing, the localiser and refusals (issue #17): the same knee gives the same input in
millimetres whatever the pixel size; the shipped localiser finds the knee in noisy, dark and tightly
collimated films; the demo model withholds a number for real adult films, a hand and a mature knee."""

import json

import numpy as np
import pandas as pd
import pydicom.data
import pytest
from click.testing import CliRunner

from kneeage import validation
from kneeage.cli import main
from kneeage.imaging import load_radiograph
from kneeage.localise import Framer, load_trained, spacing_column
from kneeage.model import ModelConfig
from kneeage.phantom import render_hand, render_knee, write_cohort, write_dicom
from kneeage.predict import Predictor
from kneeage.preprocess import window_input
from kneeage.train import TrainSettings, train
from tests.conftest import ROOT

DEMO = ROOT / "models" / "demo"


def _centre(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


@pytest.mark.parametrize("age", [30, 100, 170])
def test_window_is_the_same_in_millimetres_across_pixel_sizes(age):
    inputs = []
    for size in (320, 640, 1280):  # the same knee on the same detector at three pixel sizes
        k = render_knee(age, "F", rng=1, size=size, standard=True)
        sp = k.truth.pixel_spacing_mm
        inputs.append(window_input(k.pixels, _centre(k.truth.region_px), (sp, sp), 96, 1.0))
    k = render_knee(age, "F", rng=1, size=640, standard=True)
    sp = k.truth.pixel_spacing_mm
    # Quantum noise, texture and the detector's blur differ with the pixel size (0.014-0.043 here); the
    # anatomy does not: every film agrees with the coarsest better than a 10% error of scale would.
    off_scale = np.abs(window_input(k.pixels, _centre(k.truth.region_px), (1.1 * sp, 1.1 * sp), 96, 1.0) - inputs[0]).mean()
    for x in inputs[1:]:
        assert np.abs(x - inputs[0]).mean() < min(0.05, off_scale), off_scale
    # and a window that is twice as wide in mm shows the knee half as wide
    wide = window_input(k.pixels, _centre(k.truth.region_px), (sp, sp), 96, 2.0)
    assert np.corrcoef(wide[24:72, 24:72].ravel(), inputs[1][::2, ::2].ravel())[0, 1] > 0.9  # intensities are rescaled


def test_equalised_window_ignores_gamma_and_contrast():
    """intensity="equalise": the window's pixels become their ranks, so a gamma of 0.5 or 2 or a contrast of
    ×0.3 on the film gives the same input (up to resampling), where the percentile window alone moves;
    what lies off the film stays 0."""
    k = render_knee(120, "M", rng=3, size=384, standard=True)
    sp = (k.truth.pixel_spacing_mm,) * 2
    x0, y0, x1, y1 = k.truth.region_px
    centre = (x0 - 40, (y0 + y1) / 2)  # a 144 mm window whose left quarter lies off the film

    def win(p, intensity):
        return window_input(p, centre, sp, 96, 1.5, intensity=intensity)

    base = win(k.pixels, "equalise")
    on = base[:, 30:]
    assert base[:, :20].max() == 0 and 0.45 < on.mean() < 0.55 and on.std() > 0.25  # ranks are uniform over the film
    for changed in (k.pixels ** 0.5, k.pixels ** 2, 0.5 + 0.3 * (k.pixels - 0.5)):
        assert np.abs(win(changed, "equalise") - base).mean() < 0.01
    assert np.abs(win(k.pixels ** 2, "percentile") - win(k.pixels, "percentile")).mean() > 0.05


def test_dicom_spacing_is_corrected_for_magnification(tmp_path):
    k = render_knee(100, "M", rng=2, size=256)
    from datetime import date

    write_dicom(tmp_path / "k.dcm", k.stored, k.truth, birth=date(2010, 1, 1), study=date(2018, 6, 1), patient_id="1",
                syntax="1.2.840.10008.1.2.1", body_part="KNEE")
    r = load_radiograph(tmp_path / "k.dcm")
    assert r.pixel_spacing_mm == pytest.approx((k.truth.pixel_spacing_mm,) * 2, rel=1e-4)  # ImagerPixelSpacing / factor


def test_framer_without_spacing_estimates_it_and_says_so():
    loc = load_trained(DEMO)
    f = Framer(64, 1.0, loc)
    k = render_knee(100, "F", rng=3, size=320)
    given = f.frame(k.pixels, "auto", k.truth.pixel_spacing_mm)
    est = f.frame(k.pixels, "auto", None)
    assert given.spacing_source == "given" and est.spacing_source == "estimated from the anatomy"
    assert est.spacing_mm[0] == pytest.approx(k.truth.pixel_spacing_mm, rel=0.6)
    user = f.frame(k.pixels, (10, 20, 110, 120), k.truth.pixel_spacing_mm)
    assert user.region_source == "user box" and _centre(user.window_px) == pytest.approx((60, 70))
    assert spacing_column("image") == "pixel_spacing_mm" and spacing_column("hand_image") == "hand_pixel_spacing_mm"


@pytest.mark.parametrize("condition", ["plain", "noisy", "dark", "collimated"])
def test_localiser_finds_the_knee(condition):
    loc = load_trained(DEMO)
    misses = []
    for i, age in enumerate((8, 40, 90, 140, 190)):
        k = render_knee(age, "FM"[i % 2], rng=100 + i, size=384)
        p, box = k.pixels, k.truth.region_px
        if condition == "noisy":
            p = np.clip(p + np.random.default_rng(i).normal(0, 0.06, p.shape), 0, 1).astype(np.float32)
        elif condition == "dark":
            p = (0.3 * p) ** 2
        elif condition == "collimated":  # cut the film to the knee region plus 10% on each side
            w, h = box[2] - box[0], box[3] - box[1]
            x0, y0 = int(max(0, box[0] - 0.1 * w)), int(max(0, box[1] - 0.1 * h))
            x1, y1 = int(min(p.shape[1], box[2] + 0.1 * w)), int(min(p.shape[0], box[3] + 0.1 * h))
            p, box = p[y0:y1, x0:x1], (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
        found = loc.find(p)
        err = np.hypot(*(np.subtract(_centre(found), _centre(box)))) / (box[2] - box[0])
        misses.append(err)
    assert max(misses) < 0.2, misses  # the centre within a fifth of the knee's width


@pytest.fixture(scope="module")
def demo():
    return Predictor(DEMO, device="cpu")


@pytest.mark.parametrize("name", ["RG1_UNCI.dcm", "RG3_UNCR.dcm"])
def test_real_adult_films_get_no_bone_age(demo, name):
    r = load_radiograph(pydicom.data.get_testdata_file(name))
    p = demo.predict(r.pixels, "F", box="auto", body_part=r.body_part, spacing_mm=r.pixel_spacing_mm)
    assert p.refusal is not None and p.refusal_text.startswith(("No bone age", "Skeletally mature"))


def test_hand_film_is_withheld_and_a_child_knee_is_read(demo):
    from datetime import date
    from io import BytesIO

    hand = render_hand(120, "M", rng=5, size=320)
    buf = BytesIO()
    write_dicom(buf, hand.stored, hand.truth, birth=date(2015, 1, 1), study=date(2025, 1, 1), patient_id="H", body_part="HAND")
    r = load_radiograph(buf.getvalue())
    p = demo.predict(r.pixels, "M", body_part=r.body_part, spacing_mm=r.pixel_spacing_mm)
    assert p.refusal == "not_a_knee" and p.refusal_text.startswith("No bone age")
    child = render_knee(96, "F", rng=7, size=320)
    assert demo.predict(child.pixels, "F", spacing_mm=child.truth.pixel_spacing_mm).refusal is None


def test_validation_leaves_withheld_cases_out_and_counts_them():
    rng = np.random.default_rng(0)
    ref = rng.uniform(20, 200, 40)
    cases = pd.DataFrame({"case_id": [f"c{i}" for i in range(40)], "status": "done", "reference_bone_age_months": ref,
                          "predicted_bone_age_months": ref + rng.normal(0, 5, 40), "chronological_age_months": ref,
                          "flags": [""] * 40, "sex": "F"})
    cases.loc[0, ["flags", "predicted_bone_age_months"]] = ["not_a_knee", 500.0]
    cases.loc[1, ["flags", "predicted_bone_age_months", "reference_bone_age_months"]] = ["skeletally_mature", 205.0, 214.0]
    out = validation.analyse(cases, n_boot=200).as_dict()
    assert out["n"] == 38 and out["withheld"] == {"not_a_knee": 1, "skeletally_mature": 1}
    assert out["censored"]["n"] == 1 and out["censored"]["reference_at_or_above_bound"] == 1.0
    assert out["interval_coverage"] is None  # no intervals in this table
    assert out["mae"] < 10  # the refused case's 500 months never reaches the statistics


def test_cli_trains_a_localiser_and_a_physically_framed_model(tmp_path):
    write_cohort(tmp_path / "c", 12, seed=4, size=96, hands=False, fmt="png")
    r = CliRunner().invoke(main, ["localiser", "--manifest", str(tmp_path / "c" / "manifest.csv"), "--truth",
                                  str(tmp_path / "c" / "truth.csv"), "--out", str(tmp_path / "loc"), "--epochs", "1"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output.strip().splitlines()[-1])
    assert info["median_region_width_mm"] > 10 and (tmp_path / "loc" / "localiser.safetensors").is_file()
    cfg = ModelConfig(arch="kneeage_convnext_nano_test", input_size=32, spacing_mm=4.0, intensity="equalise")
    st = TrainSettings(folds=2, epochs=1, batch_size=4, localiser=str(tmp_path / "loc"))
    card = train(tmp_path / "c" / "manifest.csv", tmp_path / "m", cfg, st, log=lambda m: None)
    assert card.localiser["median_region_width_mm"] == info["median_region_width_mm"]
    assert card.config.intensity == "equalise" and "equalisation" in card.normalisation
    p = Predictor(tmp_path / "m", device="cpu")
    k = render_knee(100, "F", rng=1, size=96)
    framing = p.frame(k.pixels, "auto", k.truth.pixel_spacing_mm)
    assert framing.region_source == "localiser" and framing.spacing_source == "given"
    x = p.prepare(k.pixels, "auto", k.truth.pixel_spacing_mm)
    assert x.shape == (32, 32) and 0.4 < x[x > 0].mean() < 0.6  # equalised
    r = CliRunner().invoke(main, ["train", "--manifest", str(tmp_path / "c" / "manifest.csv"), "--out", str(tmp_path / "m2"),
                                  "--intensity", "equalise"])
    assert r.exit_code != 0 and "--spacing" in r.output
    # the top of the trained range is censored: "at least N months", never a number
    p.card.qc["mature_from_months"] = {"F": 0.0, "M": 0.0}  # as if every estimate reached it
    got = p.predict(k.pixels, "F", spacing_mm=k.truth.pixel_spacing_mm)
    assert got.refusal == "skeletally_mature" and got.censored_from_months == 0.0 and "at least" in got.refusal_text


def test_withheld_case_has_no_number_unless_overridden(demo):
    from datetime import date
    from io import BytesIO

    from kneeage import case, report

    hand = render_hand(120, "M", rng=5, size=320)
    buf = BytesIO()
    write_dicom(buf, hand.stored, hand.truth, birth=date(2015, 1, 1), study=date(2025, 1, 1), patient_id="H", body_part="HAND")
    rad = load_radiograph(buf.getvalue(), name="hand.dcm")
    res, x = case.analyse(demo, rad, "M", 120)
    d = res.as_dict()
    assert res.withheld and d["bone_age_months"] is None and d["interval_months"] is None and res.sds is None
    html = report.case_html(res, x)
    assert "withheld: No bone age" in html and "OVERRIDDEN" not in html
    res, x = case.analyse(demo, rad, "M", 120, override=True)
    assert not res.withheld and res.as_dict()["overridden"] and res.as_dict()["bone_age_months"] is not None
    assert "OVERRIDDEN" in report.case_html(res, x)


def test_a_box_that_misses_the_knee_is_refused_and_one_around_it_is_read(demo):
    from kneeage import case
    from kneeage.imaging import Radiograph

    k = render_knee(120, "M", rng=5, size=320)
    sp = k.truth.pixel_spacing_mm
    rad = Radiograph(pixels=k.pixels, name="knee.png", format="PNG", content_hash="", pixel_spacing_mm=(sp, sp))
    x0, y0, x1, y1 = k.truth.region_px
    corner = (0, 0, max(8, int(x0 * 0.8)), max(8, int(y0 * 0.4)))  # where the laterality marker sits
    res, _ = case.analyse(demo, rad, "M", 120, box=corner)
    assert res.withheld and res.prediction.refusal == "box_misses_knee" and "your box" in res.prediction.refusal_text
    res, _ = case.analyse(demo, rad, "M", 120, box=corner, override=True)
    assert res.overridden and res.as_dict()["bone_age_months"] is not None
    around = (int(x0), int(y0), int(x1), int(y1))
    res, _ = case.analyse(demo, rad, "M", 120, box=around)
    assert "box_misses_knee" not in res.prediction.flags and res.framing.region_source == "user box"
