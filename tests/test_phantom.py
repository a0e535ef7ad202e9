"""Phantom maturation measured from the rendered pixels, physical size, determinism, and the cohort writer.

Measurements use only what a reader of the film has: the pixels, the pixel spacing from the DICOM header
and the standard framing (a centred, unrotated right knee on a 24×30 cm film). No rendering parameter is
read back.
"""

import io
from datetime import date

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from scipy import ndimage

from kneeage.imaging import load_radiograph
from kneeage.phantom import knee_maturity, maturity_years, render_hand, render_knee, write_cohort, write_dicom


def _film(bone_age, sex, size=640):
    """A standard knee as a reader gets it: the pixels and the spacing from its DICOM header."""
    ph = render_knee(bone_age, sex, rng=7, size=size, standard=True)
    buf = io.BytesIO()
    write_dicom(buf, ph.stored, ph.truth, birth=date(2010, 1, 1), study=date(2020, 1, 1), patient_id="T")
    rad = load_radiograph(buf.getvalue())
    return rad.pixels, rad.pixel_spacing_mm[0]


def _valley(p, lo, hi, k):
    """Deepest valley of profile p at rows lo..hi: min(highest within k rows above, highest between it and
    row hi) − its value; returns (depth, row)."""
    best, at = -1.0, lo
    for y in range(lo, hi - 1):
        d = min(p[max(0, y - k) : y].max(), p[y + 1 : hi].max()) - p[y]
        if d > best:
            best, at = d, y
    return best, at


def _width_mm(img, row, mm, centre):
    """Width (mm) of the bone crossing ``row``: its outermost strong edges (a rise left of the centre, a
    fall right of it; a patella over the femur makes weaker inner ones), inside the limb's outline."""
    prof = ndimage.gaussian_filter1d(img[row - 1 : row + 2].mean(0), max(1.0, 0.6 / mm))
    limb = np.flatnonzero(prof > 0.1)
    lo, hi = limb[0] + (centre - limb[0]) // 6, limb[-1] - (limb[-1] - centre) // 6
    g = np.gradient(prof)
    rise, fall = g[lo:centre], -g[centre:hi]
    left = lo + int(np.flatnonzero(rise > 0.5 * rise.max())[0])
    right = centre + int(np.flatnonzero(fall > 0.5 * fall.max())[-1])
    return (right - left) * mm


def _knee_frame(img: np.ndarray, mm: float):
    """Where to measure a standard knee film: the midline column, the femoral shaft's width (mm), the
    metaphyseal width W (pixels, about 2.3 shafts), a row-profile smoother, the profile down a band beside
    the midline (off the notch and the spines) and the joint line's row on it."""
    h, w = img.shape
    c = w // 2
    shaft = _width_mm(img, h // 2 - int(70 / mm), mm, c)
    W = shaft / 0.44 / mm
    off, half = int(0.12 * W), max(2, int(0.04 * W))
    smooth = lambda cols: ndimage.gaussian_filter1d(cols.mean(1), max(1.0, 0.01 * W))  # noqa: E731
    side = smooth(img[:, c - off - half : c - off + half])
    joint = h // 2 - int(0.15 * W) + int(np.argmin(side[h // 2 - int(0.15 * W) : h // 2 + int(0.15 * W)]))
    return c, shaft, W, smooth, side, joint


def knee_measures(img: np.ndarray, mm: float) -> dict:
    """Maturity indicators of a standard knee film, from its pixels: the femoral physis (its valley depth:
    open → narrowing → fused), the epiphysis/metaphysis width ratio, the physeal scar (a ridge) and the
    tibial spines (the eminence above the plateau). The scale comes from the femoral shaft's width; the
    profiles run down a band beside the midline, off the notch and the spines."""
    c, shaft, W, smooth, side, joint = _knee_frame(img, mm)
    off = int(0.12 * W)
    centre = smooth(img[:, c - max(1, int(0.02 * W)) : c + max(2, int(0.02 * W))])
    epi = joint - int(0.27 * W) + int(np.argmax(side[joint - int(0.27 * W) : joint]))
    dip, phys = _valley(side, joint - int(0.6 * W), epi + 1, int(0.2 * W))
    meta_row = phys - max(2, int(0.06 * W))
    rows = np.arange(joint - int(0.45 * W), joint - int(0.2 * W))
    k = max(2, int(0.08 * W))
    ridge = max(side[y] - np.median(side[y - k : y + k]) for y in rows)  # the densest line where the physis was

    peak = joint + int(np.argmax(side[joint : joint + int(0.3 * W)]))  # inside the tibial epiphysis
    level = side[joint] + 0.5 * (side[peak] - side[joint])

    def onset(p):  # going up from inside the tibial epiphysis, the row where its bone ends
        above = np.flatnonzero(p[joint - int(0.15 * W) : peak][::-1] < level)
        return peak - (int(above[0]) if above.size else int(0.15 * W) + peak - joint)

    def across(row):  # half-maximum width (mm) of the bone on this row, from the midline outward
        prof = ndimage.gaussian_filter1d(img[row - 1 : row + 2].mean(0), max(1.0, 0.01 * W))
        out = prof[[c - int(0.65 * W), c + int(0.65 * W)]].mean()  # soft tissue beside the bone
        half = out + 0.5 * (prof[c - off : c + off].mean() - out)
        left = np.flatnonzero(prof[: c - off] < half)
        right = np.flatnonzero(prof[c + off :] < half)
        return (c + off + right[0] - left[-1]) * mm if left.size and right.size else np.nan

    spines = (onset(side) - onset(centre)) * mm  # how far the eminence rises above the plateau beside it

    def patella():  # brightness the patella adds on the midline over the distal femur, against bands either side
        rows = slice(joint - int(0.75 * W), joint - int(0.35 * W))
        mid = img[rows, c - int(0.06 * W) : c + int(0.1 * W)].mean()
        beside = np.r_[img[rows, c - int(0.34 * W) : c - int(0.22 * W)].ravel(), img[rows, c + int(0.26 * W) : c + int(0.38 * W)].ravel()]
        return float(mid - beside.mean())
    return {"physis_dip": float(max(dip, 0.0)), "scar_ridge": float(ridge), "epi_ratio": across(epi) / across(meta_row),
            "metaphysis_mm": across(meta_row), "shaft_mm": shaft, "patella": patella(), "spines_mm": float(spines),
            }


AGES = [12, 48, 96, 132, 168, 192, 216]  # months of bone age (girls; boys' are scaled to the same maturity)


@pytest.mark.parametrize("sex", ["F", "M"])
def test_knee_indicators_move_with_bone_age_and_stop_at_fusion(sex):
    scale = 1.0 if sex == "F" else 17 / 15  # the same point on the girls' event scale
    m = [knee_measures(*_film(a * scale, sex)) for a in AGES]
    dip, ratio, spines, patella = ([x[k] for x in m] for k in ("physis_dip", "epi_ratio", "spines_mm", "patella"))
    # the femoral physis: a clear gap that narrows from mid-childhood, then fuses (~13-15 y in girls)
    assert dip[1] > 0.1 and dip[2] > dip[3] > 4 * max(dip[4:]), dip
    # the epiphysis widens to its metaphysis by ~11 y
    assert ratio[1] < 0.8 < ratio[2] < ratio[3] and ratio[3] > 0.95, ratio
    # the patella: absent in infancy, ossifying from ~3 y and filling out by ~11 y
    assert patella[0] < patella[2] < patella[3] and patella[0] + 0.05 < patella[3], patella
    # the tibial eminence: flat early, tubercles rising from ~7 y
    assert spines[1] < 1.0 and spines[2] < 1.0 < 2.0 < spines[4], spines
    # the physeal scar fades after fusion, and past skeletal maturity nothing changes
    late = [knee_measures(*_film(a * scale, sex)) for a in (192, 216, 228)]
    scar = [x["scar_ridge"] for x in late]
    assert scar[0] > scar[1] + 0.01 and abs(scar[1] - scar[2]) < 0.01, scar


def physis_dips(img: np.ndarray, mm: float, offsets=(0.30, 0.40)) -> list[float]:
    """The femoral physis's valley depth in profiles down both sides at each offset from the midline (in
    metaphyseal widths, from the femoral shaft's width): how clearly the growth plate shows there."""
    c, _, W, smooth, _, joint = _knee_frame(img, mm)
    half = max(2, int(0.03 * W))
    out = []
    for f in offsets:
        prof = (smooth(img[:, c - int(f * W) - half : c - int(f * W) + half])
                + smooth(img[:, c + int(f * W) - half : c + int(f * W) + half])) / 2
        out.append(float(_valley(prof, joint - int(0.6 * W), joint - int(0.05 * W), int(0.2 * W))[0]))
    return out


@pytest.mark.parametrize("sex", ["F", "M"])
def test_epiphysis_caps_the_metaphysis_before_fusion(sex):
    """Capping (Pyle-Hoerr; ~10.5-13.5 y in girls): the epiphysis's margins turn over the metaphysis's
    corners, so the physis fades at its ends while it is still open in the middle."""
    scale = 1.0 if sex == "F" else 17 / 15
    (mid_before, end_before), (mid_after, end_after) = (physis_dips(*_film(a * scale, sex)) for a in (126, 156))
    assert end_before > 1.4 * end_after, (end_before, end_after)  # the ends covered …
    assert mid_after > 0.85 * mid_before > 0.15, (mid_before, mid_after)  # … while the plate is open


def test_girls_ahead_of_boys_at_the_same_bone_age():
    assert knee_measures(*_film(100, "F"))["epi_ratio"] > knee_measures(*_film(100, "M"))["epi_ratio"]
    assert knee_measures(*_film(160, "F"))["physis_dip"] < knee_measures(*_film(160, "M"))["physis_dip"]


def test_knee_keeps_maturing_through_adolescence():
    # capping, narrowing and fusion leave no stretch of bone age in which the physis stops changing
    dips = [knee_measures(*_film(y * 12, "F"))["physis_dip"] for y in (10.5, 12, 13.5, 14.5)]
    assert all(a > b for a, b in zip(dips, dips[1:])), dips


def test_physical_size_is_honest_at_any_pixel_size():
    """The same knee filmed at 320, 640 and 1280 rows has the same femoral shaft in millimetres (from the
    DICOM pixel spacing), and a small child's knee is smaller in millimetres, not just in the frame."""
    widths = [knee_measures(*_film(120, "F", size))["shaft_mm"] for size in (320, 640, 1280)]
    mm = _film(120, "F", 320)[1]
    assert max(widths) - min(widths) < 2 * mm, widths  # within two pixels of the coarsest film
    baby = knee_measures(*_film(12, "F", 640))["shaft_mm"]
    assert baby < 0.6 * widths[1], (baby, widths)


def test_the_same_subject_is_the_same_film_at_any_pixel_size():
    """Only the pixels change with the pixel size: artefacts (Harris lines, a cast, metal), the marker's side
    and the exposure are the subject's, and the films agree once both are averaged down to one grid (texture
    and quantum noise are drawn per pixel, from their own stream)."""
    from PIL import Image

    seen = set()
    for i in range(60):
        a, b = (render_knee(30 + 3 * i, "FM"[i % 2], rng=[5, i], size=s) for s in (96, 192))
        assert (a.truth.artefacts, a.truth.laterality, a.truth.exposure) == (b.truth.artefacts, b.truth.laterality, b.truth.exposure)
        seen.add(a.truth.artefacts)
        pa, pb = np.asarray(Image.fromarray(a.pixels).reduce(4)), np.asarray(Image.fromarray(b.pixels).reduce(8))
        h, w = min(pa.shape[0], pb.shape[0]), min(pa.shape[1], pb.shape[1])
        assert np.abs(pa[:h, :w] - pb[:h, :w]).mean() < 0.05, i
    assert len(seen) >= 2, seen  # some subjects carry artefacts: the comparison is not vacuous


def test_grey_scale_does_not_depend_on_the_pixel_size():
    """Quantum noise is set per mm² and the processing LUT is set on the noise-free image, so a film with 16×
    smaller pixels (16× noisier per pixel) is no brighter or darker once averaged down to the same grid: a
    square LUT applied to per-pixel noise used to brighten by the noise variance (up to 0.012 here)."""
    from PIL import Image

    for i in range(6):
        a, b = (render_knee(40 + 25 * i, "FM"[i % 2], rng=[6, i], size=s, standard=True) for s in (256, 1024))
        pa, pb = np.asarray(Image.fromarray(a.pixels).reduce(4)), np.asarray(Image.fromarray(b.pixels).reduce(16))
        h, w = min(pa.shape[0], pb.shape[0]), min(pa.shape[1], pb.shape[1])
        assert np.abs(pb[:h, :w] - pa[:h, :w]).mean() < 0.006, i


def test_cohort_knees_can_span_pixel_sizes(tmp_path):
    """``knee_sizes`` renders the knee films at those sizes in turn (a training cohort across detectors); the
    hand films keep ``size``, and the subjects are the same as at one size."""
    man = write_cohort(tmp_path / "mixed", 4, seed=3, size=96, hands=True, fmt="png", knee_sizes=(64, 128))
    one = write_cohort(tmp_path / "one", 4, seed=3, size=96, hands=True, fmt="png")
    rows = [np.asarray(Image.open(tmp_path / "mixed" / f)).shape[0] for f in man.image]
    assert rows == [64, 128, 64, 128]
    assert all(np.asarray(Image.open(tmp_path / "mixed" / f)).shape[0] == 96 for f in man.hand_image)
    assert (man.reference_bone_age_months == one.reference_bone_age_months).all()
    assert man.pixel_spacing_mm.iloc[0] == pytest.approx(one.pixel_spacing_mm.iloc[0] * 96 / 64, rel=1e-3)


def test_skeletal_maturity_is_in_the_truth_and_the_manifest(tmp_path):
    assert not render_knee(180, "F", rng=1, size=96).truth.skeletally_mature
    assert render_knee(230, "F", rng=1, size=96).truth.skeletally_mature
    assert knee_maturity(maturity_years(230, "F"))["mature"] == 1.0
    man = write_cohort(tmp_path, 8, seed=4, size=96)
    truth = pd.read_csv(tmp_path / "truth.csv")
    assert "skeletally_mature" in man and (man.skeletally_mature == truth.skeletally_mature).all()


def test_detector_formats_and_acquisition_vary():
    seen = {render_knee(a, s, rng=i, size=200).truth.detector_mm for i, (a, s) in
            enumerate([(6, "F"), (12, "M"), (100, "F"), (150, "M"), (200, "M"), (210, "F")] * 2)}
    assert len(seen) >= 2 and seen <= {"180x240", "240x300", "350x430"}
    films = [render_knee(100, "M", rng=s, size=96) for s in range(16)]
    assert {f.truth.photometric for f in films} == {"MONOCHROME1", "MONOCHROME2"}
    assert len({round(f.truth.magnification, 3) for f in films}) > 8
    ph = films[0]
    assert ph.stored.dtype == np.uint16 and ph.stored.max() < 2**ph.truth.bits_stored
    x0, y0, x1, y1 = ph.truth.region_px
    assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= ph.pixels.shape[0]
    arte = {a for s in range(300) for a in render_knee(120, "F", rng=s, size=48).truth.artefacts.split(";") if a}
    assert arte == {"harris_lines", "cast", "metal"}


def _hand(a, sex, seed=5, size=480):
    """A standard hand film and where its palm centre lies (pixels) and its width (pixels), from the film's
    hand region."""
    ph = render_hand(a, sex, rng=seed, size=size, standard=True)
    x0, y0, x1, y1 = ph.truth.region_px
    H = (x1 - x0) / 1.2
    return ph, x0 + 0.55 * H, y0 + 1.35 * H, H


def carpal_bone_share(a, sex):
    """Share of the carpal area brighter than the palm's soft tissue by 0.15: the carpal centres appearing
    and growing."""
    ph, ox, oy, H = _hand(a, sex)
    p = ph.pixels
    cols = slice(int(ox - 0.3 * H), int(ox + 0.35 * H))
    soft = np.median(p[int(oy) : int(oy + 0.2 * H), cols])
    return float((p[int(oy + 0.38 * H) : int(oy + 0.78 * H), cols] > soft + 0.15).mean())


def finger_valleys(a, seed):
    """Depths of the dark lines crossing the middle finger between the palm and its tip, deepest first: its
    three joints, and each physis until it fuses (then only quantum noise, shallower)."""
    ph, ox, oy, H = _hand(a, "F", seed, 640)
    mm = ph.truth.pixel_spacing_mm
    col, k, r = int(ox + 0.04 * H), max(1, int(1.0 / mm)), max(2, int(2.5 / mm))
    prof = ndimage.gaussian_filter1d(ph.pixels[int(oy - 1.05 * H) : int(oy - 0.05 * H), col - k : col + k + 1].mean(1), 0.5)
    return sorted((min(prof[i - r : i].max(), prof[i + 1 : i + r + 1].max()) - prof[i] for i in range(r, len(prof) - r)
                   if prof[i] == prof[i - r : i + r + 1].min()), reverse=True) + [0.0] * 6


def test_hand_carpals_appear_in_order_and_girls_lead():
    shares = [carpal_bone_share(a, "F") for a in (2, 48, 84, 120)]
    # at 2 months only noise passes the threshold (up to 0.018 of the area across seeds, even at birth)
    assert shares[0] < 0.025 < shares[1] < shares[2] < shares[3], shares
    assert carpal_bone_share(48, "F") > carpal_bone_share(48, "M")


def test_hand_physes_fuse():
    """Three joints and three open physes make six clear lines; once the physes fuse, the sixth deepest
    valley is noise."""
    sixth = {a: [finger_valleys(a, s)[5] for s in (5, 6)] for a in (60, 120, 204)}
    assert min(sixth[60] + sixth[120]) > max(sixth[204]), sixth


def test_same_seed_same_image_and_truth():
    a, b = render_knee(100, "F", rng=11, size=128), render_knee(100, "F", rng=11, size=128)
    assert np.array_equal(a.stored, b.stored) and a.truth == b.truth
    assert not np.array_equal(a.stored, render_knee(100, "F", rng=12, size=128).stored)


def test_cohort_dicoms_load_with_ages_matching_manifest(tmp_path):
    man = write_cohort(tmp_path, 6, seed=4, size=96, hands=True)
    truth = pd.read_csv(tmp_path / "truth.csv")
    assert list(man.columns) == ["case_id", "image", "sex", "chronological_age_months", "reference_bone_age_months",
                                 "hand_image", "skeletally_mature"]
    assert list(truth.case_id) == list(man.case_id) and man.case_id.is_unique
    syntaxes = set()
    for row in man.itertuples():
        r = load_radiograph(tmp_path / row.image)
        assert r.sex == row.sex and r.modality == "CR" and r.body_part == "KNEE"
        assert abs(r.chronological_age_months - row.chronological_age_months) < 1.0
        ds = pydicom.dcmread(tmp_path / row.image, stop_before_pixels=True)
        assert float(ds.ImagerPixelSpacing[0]) == pytest.approx(float(ds.PixelSpacing[0]) * float(ds.EstimatedRadiographicMagnificationFactor), rel=1e-4)
        h = load_radiograph(tmp_path / row.hand_image)
        assert h.body_part == "HAND" and abs(h.chronological_age_months - row.chronological_age_months) <= 3.1
        syntaxes.add(r.transfer_syntax)
    assert len(syntaxes) >= 5
    # the reference read differs from the truth by reader noise of about half a year
    diff = man.reference_bone_age_months - truth.true_bone_age_months
    assert diff.abs().max() < 40
