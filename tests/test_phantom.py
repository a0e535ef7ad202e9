"""Phantom maturation measured from the rendered pixels, determinism, and the cohort writer."""

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from kneeage.imaging import load_radiograph
from kneeage.phantom import render_hand, render_knee, write_cohort

AGES = [6, 36, 72, 108, 144, 192, 216]  # months of bone age


def _width(p: np.ndarray, rows: slice, centre: int, reach: int) -> float:
    """Bone width in a band of rows: distance between the steepest falling edges left and right of the centre."""
    row = ndimage.gaussian_filter1d(p[rows].mean(0), 2)
    g = np.gradient(row)
    right = centre + int(np.argmin(g[centre : centre + reach]))  # bright -> dark going right
    left = centre - reach + int(np.argmax(g[centre - reach : centre]))  # dark -> bright going right
    return float(right - left)


def knee_measures(p: np.ndarray) -> dict:
    """Measure a standard-acquisition knee from its pixels only.

    Joint line at the centre row; field of view 3.4 x femoral metaphyseal width W (aspect 0.85), so
    the femoral physis lies near row 0.39 H and the bone within +-0.5 W = +-0.173 w of the centre.
    """
    h, w = p.shape
    c = w // 2
    reach = int(0.62 / (3.4 * 0.85) * w)  # 0.62 W either side of the centre
    strip = ndimage.uniform_filter1d(p[:, c - 6 : c + 6].mean(1), 3)
    above = strip[int(0.31 * h) : int(0.37 * h)].max()
    dip = above - strip[int(0.37 * h) : int(0.42 * h)].min()
    epi_row = int(0.40 * h) + int(np.argmax(strip[int(0.40 * h) : int(0.47 * h)]))
    metaph = _width(p, slice(int(0.33 * h), int(0.35 * h)), c, reach)
    epi = _width(p, slice(epi_row - 1, epi_row + 2), c, reach)
    return {"physis_dip": float(dip), "epi_ratio": epi / metaph}


@pytest.mark.parametrize("sex", ["F", "M"])
def test_knee_matures_in_the_pixels(sex):
    m = [knee_measures(render_knee(a, sex, rng=7, size=384, standard=True).pixels) for a in AGES]
    dip = [x["physis_dip"] for x in m]
    ratio = [x["epi_ratio"] for x in m]
    assert dip[0] > dip[2] > dip[4] > dip[-1], dip  # the physis gap closes
    assert ratio[0] < ratio[2] < ratio[4], ratio  # the epiphysis widens toward the metaphysis
    assert ratio[0] < 0.5 and ratio[-1] > 0.9, ratio


def test_girls_ahead_of_boys_at_same_bone_age_scale_position():
    f = knee_measures(render_knee(168, "F", rng=3, size=384, standard=True).pixels)
    m = knee_measures(render_knee(168, "M", rng=3, size=384, standard=True).pixels)
    assert f["physis_dip"] < m["physis_dip"]  # a girl's physes close earlier on the bone-age scale


def test_hand_carpals_appear_with_age():
    def bright_share(a):
        p = render_hand(a, "F", rng=5, size=256, standard=True).pixels
        h, w = p.shape
        wrist = p[int(0.62 * h) : int(0.78 * h), int(0.3 * w) : int(0.7 * w)]
        return float((wrist > np.percentile(p, 90)).mean())

    shares = [bright_share(a) for a in (2, 48, 120)]
    assert shares[0] < shares[1] < shares[2], shares


def test_same_seed_same_image_and_truth():
    a, b = render_knee(100, "F", rng=11, size=128), render_knee(100, "F", rng=11, size=128)
    assert np.array_equal(a.stored, b.stored) and a.truth == b.truth
    assert not np.array_equal(a.stored, render_knee(100, "F", rng=12, size=128).stored)


def test_acquisition_varies_and_storage_is_valid():
    seen = {render_knee(60, "M", rng=s, size=96).truth.photometric for s in range(12)}
    assert seen == {"MONOCHROME1", "MONOCHROME2"}
    ph = render_knee(60, "M", rng=1, size=96)
    assert ph.stored.dtype == np.uint16 and ph.stored.max() < 2**ph.truth.bits_stored


def test_cohort_dicoms_load_with_ages_matching_manifest(tmp_path):
    man = write_cohort(tmp_path, 6, seed=4, size=96, hands=True)
    truth = pd.read_csv(tmp_path / "truth.csv")
    assert list(man.columns) == ["case_id", "image", "sex", "chronological_age_months", "reference_bone_age_months", "hand_image"]
    assert list(truth.case_id) == list(man.case_id) and man.case_id.is_unique
    syntaxes = set()
    for row in man.itertuples():
        r = load_radiograph(tmp_path / row.image)
        assert r.sex == row.sex and r.modality == "CR" and r.body_part == "KNEE"
        assert abs(r.chronological_age_months - row.chronological_age_months) < 1.0
        h = load_radiograph(tmp_path / row.hand_image)
        assert h.body_part == "HAND" and abs(h.chronological_age_months - row.chronological_age_months) <= 3.1
        syntaxes.add(r.transfer_syntax)
    assert len(syntaxes) >= 5
    # the reference read differs from the truth by reader noise of about half a year
    diff = man.reference_bone_age_months - truth.true_bone_age_months
    assert diff.abs().max() < 40


def test_knee_keeps_maturing_through_adolescence():
    # capping, narrowing and fusion leave no stretch of bone age in which the physis stops changing
    dips = [knee_measures(render_knee(y * 12, "F", rng=7, size=384, standard=True).pixels)["physis_dip"]
            for y in (10.5, 12, 13.5, 15)]
    assert all(a > b for a, b in zip(dips, dips[1:])), dips
