"""The saliency criterion (issue #18): phantom truth knows where the physes run, and a map is scored by its
mass on them; the model's default map is the one its card records as measured best."""

import numpy as np
import pytest

from kneeage.localise import Framing
from kneeage.phantom import render_knee
from kneeage.saliency import mass_share, physis_mask, to_input_xy


def test_phantom_truth_gives_the_physes_inside_the_knee_region():
    ph = render_knee(100, "F", 3, 384)
    assert len(ph.truth.physes_px) == 3  # femur, tibia, and the fibula once its head has ossified at 100 months
    x0, y0, x1, y1 = ph.truth.region_px
    femur, tibia = (np.array(line) for line in ph.truth.physes_px[:2])
    for line in (femur, tibia):
        assert (line[:, 0] > x0).all() and (line[:, 0] < x1).all() and (line[:, 1] > y0).all() and (line[:, 1] < y1).all()
    assert femur[:, 1].mean() < tibia[:, 1].mean()  # the femur above the joint
    # the physis is the dark cartilage gap between metaphysis and epiphysis: darker than bone just beside it
    standard = render_knee(60, "F", 0, 512, standard=True)
    line = np.array(standard.truth.physes_px[0])
    cols, rows = line[4:-4, 0].round().astype(int), line[4:-4, 1].round().astype(int)
    on = standard.pixels[rows, cols].mean()
    above = standard.pixels[rows - 6, cols].mean()
    assert on < above
    assert render_knee(12, "F", 3, 384).truth.physes_px[:2]  # physes exist at every age


def test_mask_and_mass_share():
    framing = Framing((0, 0, 100, 100), "user box", (0.0, 0.0, 128.0, 128.0), (1.0, 1.0), "given")
    line = ((10.0, 64.0), (118.0, 64.0))
    assert to_input_xy(line, framing, 128)[0] == pytest.approx([10, 64])
    mask = physis_mask((line,), framing, 128, band_mm=5.0)
    rows = np.flatnonzero(mask.any(1))
    assert rows.min() >= 58 and rows.max() <= 70 and mask[64, 64] and not mask[20, 64]
    uniform = np.ones((128, 128))
    assert mass_share(uniform, mask) == pytest.approx(mask.mean())
    assert mass_share(mask.astype(float), mask) == 1.0
    assert np.isnan(mass_share(np.zeros((128, 128)), mask))


def test_the_default_map_is_the_measured_one(tmp_path):
    from kneeage.predict import DEFAULT_SALIENCY, Predictor

    p = Predictor()
    recorded = p.card.results.get("saliency_on_physes")
    assert p.default_saliency == (recorded["default"] if recorded else DEFAULT_SALIENCY)
    if recorded:  # the measurement the default rests on (bench/saliency_physes.py, docs/saliency.md)
        share = {m: v["share_on_physes_5mm"][0] for m, v in recorded["methods"].items()}
        assert share[p.default_saliency] > share["gradcam"]
        assert share[p.default_saliency] > recorded["uniform_share_5mm"][0]
