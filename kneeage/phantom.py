"""Synthetic knee AP and hand PA radiographs whose anatomy matures with bone age.

SYNTHETIC PHANTOMS — NOT PATIENT DATA. Every image carries the truth used to draw it.

Model (full account and sources in docs/phantoms.md):

* Maturity is driven by bone age (months) with a sex-specific tempo: events are timed on a girls'
  bone-age scale in years, and a boy's bone age is mapped onto it by ``t = BA_years * 15/17`` (knee
  physes close at about 15 y in girls and 17 y in boys). Each subject gets individual jitter on every
  event time (SD ``EVENT_JITTER_Y``) and on shape.
* Knee timelines (girls' years; Pyle & Hoerr 1955 knee atlas; Ogden, Skeletal Injury in the Child;
  Gray's Anatomy ossification tables): distal femoral and proximal tibial epiphyseal centres present at
  birth, grow from small ovoids to full metaphyseal width by about 11 y and take their condylar shape
  (intercondylar notch) from about 3-10 y; tibial spines from about 7 y; fibular head centre appears at
  about 3 y (girls) / 4 y (boys); patella ossifies from several foci at about 3 y (girls) / 4-5 y (boys)
  and becomes a regular oval by about 6-7 y; physes narrow in adolescence and fuse at about 13.5-15 y
  (girls) / 15.5-17 y (boys), the fibula about half a year later.
* Hand timelines (Greulich & Pyle 1959; Gilsanz & Ratib 2005): capitate and hamate in the first months,
  distal radius about 1 y, triquetrum 2-3 y, lunate 3-4 y, trapezium, trapezoid and scaphoid 4-6 y,
  distal ulna 6-7 y, pisiform 9-10 y (boys later by the tempo above); phalangeal and metacarpal epiphyses
  appear in the first 1-3 years and fuse at about 13-14.5 y (girls); the distal radius at about 15 y.
* Image physics: projected thickness of ellipsoidal and cylindrical bones (cortex, medullary canal,
  trabecular texture) and a soft-tissue envelope; Beer-Lambert attenuation; scatter (a broad blurred
  fraction of the primary); detector blur; Poisson quantum noise; log transform. Acquisition varies:
  exposure, rotation, scale, translation, left/right, field of view and collimation, a burned-in
  laterality marker, MONOCHROME1/2, 10- to 16-bit, pixel spacing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .reference import sd_months

BOY_TEMPO = 15.0 / 17.0
EVENT_JITTER_Y = 0.35
MU_SOFT = 0.021  # 1/mm, soft tissue at a diagnostic knee spectrum (order of magnitude)
MU_BONE = 0.038  # 1/mm, cortical bone excess over soft tissue


@dataclass(frozen=True)
class PhantomTruth:
    """The ground truth one phantom was drawn from (all that a test or model card may need)."""

    kind: str  # "knee" or "hand"
    bone_age_months: float
    sex: str
    maturity_years: float  # bone age on the girls' event scale
    laterality: str  # "L"/"R"
    pixel_spacing_mm: float
    photometric: str  # MONOCHROME1/2
    bits_stored: int
    rotation_deg: float
    exposure: float
    physis_open: float  # 1 open ... 0 fused (femur for knees, radius for hands)
    femoral_epiphysis_ratio: float  # epiphysis width / metaphysis width (knee); radius (hand)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Phantom:
    """A rendered phantom: ``stored`` is what a detector writes (uint16, MONOCHROME1/2 as in truth),
    ``pixels`` the bone-bright float image in [0, 1]."""

    stored: np.ndarray
    pixels: np.ndarray
    truth: PhantomTruth


def maturity_years(bone_age_months: float, sex: str) -> float:
    """Bone age mapped onto the girls' event scale in years (boys mature with tempo 15/17)."""
    y = bone_age_months / 12.0
    return y if sex == "F" else y * BOY_TEMPO


def _smooth(a, b, x):
    """Smoothstep from 0 at a to 1 at b."""
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _ellipsoid(X, Y, cx, cy, ax, ay, depth=None):
    """Projected thickness (mm) of an ellipsoid with semi-axes ax, ay and depth semi-axis (default ax)."""
    depth = ax if depth is None else depth
    q = 1.0 - ((X - cx) / ax) ** 2 - ((Y - cy) / ay) ** 2
    return 2.0 * depth * np.sqrt(np.clip(q, 0.0, None))


def _rod(X, Y, cx, y0, y1, radius, soft=1.0):
    """Projected thickness of a vertical cylinder between y0 < y1; radius may be an array over Y."""
    t = 2.0 * np.sqrt(np.clip(radius**2 - (X - cx) ** 2, 0.0, None))
    ramp = np.clip((Y - y0) / soft, 0, 1) * np.clip((y1 - Y) / soft, 0, 1)
    return t * ramp


def _texture(shape, rng, scale_px):
    n = rng.standard_normal(shape).astype(np.float32)
    t = ndimage.gaussian_filter(n, max(scale_px, 0.6)) - ndimage.gaussian_filter(n, max(3 * scale_px, 1.5))
    return t / (t.std() + 1e-6)


@dataclass
class _Acq:
    rows: int
    cols: int
    spacing: float
    rotation: float
    flip: bool
    shift: tuple[float, float]
    exposure: float
    photometric: str
    bits: int
    collimation: tuple[float, float, float, float]


def _acquisition(rng, size, fov_mm, aspect, standard=False) -> _Acq:
    """Random acquisition; ``standard`` gives a centred, unrotated, uncollimated right-side film."""
    rows = int(size)
    cols = int(round(size * aspect))
    spacing = fov_mm / rows
    acq = _Acq(
        rows=rows,
        cols=cols,
        spacing=spacing,
        rotation=float(rng.uniform(-8, 8)),
        flip=bool(rng.random() < 0.5),
        shift=(float(rng.normal(0, 0.04 * fov_mm)), float(rng.normal(0, 0.04 * fov_mm))),
        exposure=float(rng.lognormal(0, 0.35)),
        photometric=str(rng.choice(["MONOCHROME1", "MONOCHROME2"])),
        bits=int(rng.choice([10, 12, 14, 15, 16])),
        collimation=tuple(float(v) for v in rng.uniform(0.0, 0.09, 4)),
    )
    if standard:
        acq.rotation, acq.flip, acq.shift, acq.exposure, acq.collimation = 0.0, False, (0.0, 0.0), 1.0, (0, 0, 0, 0)
    return acq


def _grid(acq: _Acq):
    """Patient coordinates (mm) of each pixel after rotation, shift and left/right flip."""
    yy, xx = np.mgrid[0 : acq.rows, 0 : acq.cols].astype(np.float32)
    x = (xx - (acq.cols - 1) / 2) * acq.spacing - acq.shift[0]
    y = (yy - (acq.rows - 1) / 2) * acq.spacing - acq.shift[1]
    th = np.deg2rad(acq.rotation)
    X = np.cos(th) * x + np.sin(th) * y
    Y = -np.sin(th) * x + np.cos(th) * y
    if acq.flip:
        X = -X
    return X, Y


def _expose(rng, acq: _Acq, soft_mm, bone_mm, marker: str):
    """Beer-Lambert, scatter, blur, quantum noise, log; then collimation, marker and storage."""
    atten = MU_SOFT * soft_mm + MU_BONE * bone_mm
    primary = np.exp(-atten)
    scatter = 0.25 * ndimage.gaussian_filter(primary, 25.0 / acq.spacing * 0.2 + 4)
    signal = primary + scatter
    signal = ndimage.gaussian_filter(signal, 0.5 + 0.3 * rng.random())  # detector blur (px)
    photons = 4000.0 * acq.exposure
    noisy = rng.poisson(np.clip(signal, 1e-4, None) * photons).astype(np.float32) / photons
    log = -np.log(np.clip(noisy, 0.5 / photons, None))  # bone bright
    lo, hi = np.percentile(log, 0.5), np.percentile(log, 99.8)
    img = np.clip((log - lo) / (hi - lo + 1e-6) * 0.85 + 0.03, 0, 1)
    # Collimation: unexposed film is as bright as the densest bone.
    t, b, left, r = acq.collimation
    R, C = acq.rows, acq.cols
    img[: int(t * R)] = 1.0
    img[R - int(b * R) :] = 1.0
    img[:, : int(left * C)] = 1.0
    img[:, C - int(r * C) :] = 1.0
    img = _burn_marker(img, marker, acq, rng)
    vmax = (1 << acq.bits) - 1
    stored = np.round(img * vmax).astype(np.uint16)
    if acq.photometric == "MONOCHROME1":
        stored = (vmax - stored).astype(np.uint16)
    return stored, img.astype(np.float32)


def _finish_film(rng, acq: _Acq, soft, bone, kind, bone_age_months, sex, t, physis_open, epi_ratio) -> Phantom:
    """Expose the thickness maps and record the truth."""
    side = "L" if acq.flip else "R"
    stored, img = _expose(rng, acq, soft, bone, side)
    truth = PhantomTruth(kind=kind, bone_age_months=float(bone_age_months), sex=sex, maturity_years=float(t),
                         laterality=side, pixel_spacing_mm=float(acq.spacing), photometric=acq.photometric,
                         bits_stored=acq.bits, rotation_deg=acq.rotation, exposure=acq.exposure,
                         physis_open=float(physis_open), femoral_epiphysis_ratio=float(epi_ratio))
    return Phantom(stored=stored, pixels=img, truth=truth)


def _burn_marker(img, letter, acq: _Acq, rng):
    from PIL import Image, ImageDraw, ImageFont

    h = max(8, int(acq.rows * 0.06))
    try:
        font = ImageFont.load_default(size=h)
    except TypeError:  # old Pillow
        font = ImageFont.load_default()
    canvas = Image.new("L", (h * 2, h * 2), 0)
    ImageDraw.Draw(canvas).text((h // 3, h // 6), letter, fill=255, font=font)
    mark = np.asarray(canvas, dtype=np.float32) / 255.0
    top = int(acq.rows * (acq.collimation[0] + 0.03))
    left = int(acq.cols * (1 - acq.collimation[3] - 0.03)) - mark.shape[1] if rng.random() < 0.5 else int(acq.cols * (acq.collimation[2] + 0.03))
    top, left = max(0, top), max(0, left)
    sub = img[top : top + mark.shape[0], left : left + mark.shape[1]]
    m = mark[: sub.shape[0], : sub.shape[1]]
    img[top : top + m.shape[0], left : left + m.shape[1]] = np.maximum(sub, m * 0.98)
    return img


# ------------------------------------------------------------------------------------- knee


def render_knee(bone_age_months: float, sex: str, rng: np.random.Generator | int | None = None, size: int = 512,
                standard: bool = False) -> Phantom:
    """A knee AP radiograph of a child with this bone age (months) and sex ("F"/"M").

    ``standard`` fixes the acquisition (centred, unrotated, right knee, field of view 3.4 x the
    femoral metaphyseal width) so that anatomy can be measured from the pixels."""
    rng = np.random.default_rng(rng)
    t = maturity_years(bone_age_months, sex)
    j = lambda: rng.normal(0, EVENT_JITTER_Y)  # noqa: E731 - individual timing jitter (years)
    # Size: femoral metaphyseal width (mm) grows with maturity; boys a little larger.
    W = (20 + 58 * (1 - np.exp(-t / 5.5))) * (1.07 if sex == "M" else 1.0) * rng.normal(1, 0.05)
    fov = W * (3.4 if standard else rng.uniform(3.0, 3.8))
    acq = _acquisition(rng, size, fov, 0.85 if standard else rng.uniform(0.78, 0.95), standard)
    X, Y = _grid(acq)
    px = acq.spacing

    # Maturation state.
    epi_ratio_f = 0.32 + 0.66 * _smooth(-0.3 + j(), 11.0 + j(), t) ** 0.8
    epi_ratio_t = 0.26 + 0.70 * _smooth(0.0 + j(), 11.5 + j(), t) ** 0.8
    condyle = _smooth(3.0 + j(), 10.0 + j(), t)
    spines = _smooth(7.0 + j(), 12.0 + j(), t)
    fuse_f = _smooth(13.3 + j(), 15.0 + j(), t)
    fuse_t = _smooth(13.1 + j(), 14.8 + j(), t)
    fuse_fib = _smooth(13.8 + j(), 15.5 + j(), t)
    cap = _smooth(10.5 + j(), 13.5 + j(), t)  # epiphyses cap the metaphyses before fusion
    narrow = float(np.clip((t - 6.0 - j()) / 7.5, 0.0, 1.0))  # physes narrow steadily until they fuse
    fib_on = 3.0 + j() * 1.5
    fib_size = _smooth(fib_on, fib_on + 7.0, t) * (t > fib_on)
    pat_on = 3.0 + j() * 1.5
    pat_size = _smooth(pat_on, pat_on + 9.0, t) * (t > pat_on)
    pat_regular = _smooth(pat_on + 0.5, pat_on + 3.0, t)
    density = 0.75 + 0.35 * _smooth(0, 18, t)

    joint = 0.045 * W  # half joint space incl. cartilage (mm)
    epi_h_f = 0.33 * W  # cartilaginous femoral epiphysis height
    epi_h_t = 0.21 * W
    gap_f = (0.035 * W * (1 - 0.6 * narrow)) * (1 - fuse_f)  # physis (mm)
    gap_t = (0.032 * W * (1 - 0.6 * narrow)) * (1 - fuse_t)
    phys_f = -(joint + epi_h_f)  # y of femoral physis (joint line at y=0, femur above)
    phys_t = joint + epi_h_t
    Wt = 0.92 * W
    shaft_f, shaft_t = 0.44 * W / 2, 0.46 * Wt / 2
    wob = rng.normal(0, 0.02 * W, 3)

    # Soft tissue envelope (a limb about 1.7 W across).
    limb = 0.85 * W * (1 + 0.06 * np.sin(Y / W * 2 + wob[0]))
    soft = 2.0 * np.sqrt(np.clip(limb**2 - (X - wob[1]) ** 2, 0, None)) * 0.9

    # Femur: shaft + metaphyseal flare, cortex and medullary canal.
    dist_f = np.clip(phys_f - gap_f / 2 - Y, 0, None)  # mm above the physis
    r_f = shaft_f + (W / 2 - shaft_f) * np.exp(-dist_f / (0.28 * W))
    femur_mask_y = Y < phys_f - gap_f / 2
    femur = _rod(X, Y, 0, -1e4, phys_f - gap_f / 2, r_f, soft=0.6) * femur_mask_y
    canal = _rod(X, Y, 0, -1e4, phys_f - gap_f / 2 - 0.1 * W, r_f * (0.55 + 0.1 * _smooth(0, 0.6 * W, dist_f)), soft=2) * femur_mask_y
    # Tibia below, similarly.
    dist_t = np.clip(Y - (phys_t + gap_t / 2), 0, None)
    r_t = shaft_t + (Wt / 2 - shaft_t) * np.exp(-dist_t / (0.3 * W))
    tib_mask = Y > phys_t + gap_t / 2
    tibia = _rod(X, Y, 0.02 * W, phys_t + gap_t / 2, 1e4, r_t, soft=0.6) * tib_mask
    tcanal = _rod(X, Y, 0.02 * W, phys_t + gap_t / 2 + 0.1 * W, 1e4, r_t * (0.55 + 0.1 * _smooth(0, 0.6 * W, dist_t)), soft=2) * tib_mask

    # Femoral epiphysis: ossification centre growing inside its cartilage; two condyles as it matures.
    ew = epi_ratio_f * W / 2
    eh = ew * (0.7 - 0.42 * _smooth(0.3, 1.0, epi_ratio_f))
    ecy = phys_f + gap_f / 2 + eh + (1 - epi_ratio_f) * 0.1 * W
    sep = condyle * 0.42 * ew
    cond_w = ew - sep * 0.8
    fe = np.maximum(
        _ellipsoid(X, Y, -sep, ecy, cond_w, eh * (1 + 0.15 * condyle), depth=ew * 0.8),
        _ellipsoid(X, Y, sep, ecy, cond_w, eh * (1 + 0.08 * condyle), depth=ew * 0.8),
    )
    fe = np.maximum(fe, _ellipsoid(X, Y, 0, ecy - 0.35 * eh, ew * 0.95, eh * 0.7, depth=ew * 0.8) * (Y < ecy))
    # Capping: the epiphysis margins grow over the metaphysis edges (toward the shaft).
    lip = 0.07 * W * cap + 1e-3
    fe = fe + sum(_ellipsoid(X, Y, s * (ew - 0.6 * lip), phys_f + gap_f / 2 - 0.3 * lip, 0.6 * lip, 1.6 * lip, depth=2 * lip) for s in (-1, 1))
    # Tibial epiphysis: flat plateau, spines rising in the middle.
    tw = epi_ratio_t * Wt / 2
    th = tw * (0.6 - 0.4 * _smooth(0.3, 1.0, epi_ratio_t))
    tcy = phys_t - gap_t / 2 - th - (1 - epi_ratio_t) * 0.06 * W
    te = _ellipsoid(X, Y, 0.02 * W, tcy, tw, th, depth=tw * 0.8) * (1 + 0.6 * (Y > tcy))
    te = np.minimum(te, 2 * tw * 0.8)
    te = te + sum(_ellipsoid(X, Y, 0.02 * W + s * (tw - 0.6 * lip), phys_t - gap_t / 2 + 0.3 * lip, 0.6 * lip, 1.6 * lip, depth=2 * lip) for s in (-1, 1))
    spine_h = spines * 0.16 * W
    te = te + sum(_ellipsoid(X, Y, 0.02 * W + s * 0.12 * W, tcy - th * 0.7, 0.05 * W, spine_h + 1e-3, depth=0.05 * W) for s in (-1, 1))
    # Fusing physes: bone bridges the gap from the centre outward, leaving a dense scar that fades.
    bridge_f = _rod(X, Y, 0, phys_f - 0.08 * W, phys_f + 0.08 * W, W / 2 * 0.98 * fuse_f + 1e-3, soft=1.0) * (fuse_f > 0)
    bridge_t = _rod(X, Y, 0.02 * W, phys_t - 0.08 * W, phys_t + 0.08 * W, Wt / 2 * 0.98 * fuse_t + 1e-3, soft=1.0) * (fuse_t > 0)
    scar = 0.12 * fuse_f * (1 - _smooth(15.5, 18.5, t)) * (np.abs(Y - phys_f) < 0.012 * W) * (np.abs(X) < W / 2)

    # Fibula: lateral (positive X before flipping), below the tibial plateau.
    fx = 0.50 * W
    fib_r = 0.09 * W
    fib_top = phys_t + 0.16 * W
    fib_gap = 0.035 * W * (1 - fuse_fib) * (fib_size > 0)
    fibula = _rod(X, Y, fx, fib_top + fib_gap + 0.12 * W * fib_size, 1e4, fib_r * (1 + 0.5 * np.exp(-(Y - fib_top) / (0.3 * W))), soft=1.0)
    fib_head = _ellipsoid(X, Y, fx - 0.01 * W, fib_top + 0.06 * W * fib_size, fib_r * 1.4 * fib_size + 1e-3, 0.07 * W * fib_size + 1e-3, depth=fib_r * fib_size + 1e-3)

    # Patella: superimposed on the distal femur; several foci early, a regular oval later.
    pcx, pcy = 0.03 * W + wob[2], phys_f + 0.05 * W
    pa, pb = 0.30 * W * (0.25 + 0.75 * pat_size), 0.36 * W * (0.25 + 0.75 * pat_size)
    if pat_size > 0:
        foci = rng.normal(0, 0.35, (3, 2)) * (1 - pat_regular)
        pat = sum(_ellipsoid(X, Y, pcx + f[0] * pa, pcy + f[1] * pb, pa * (0.45 + 0.55 * pat_regular), pb * (0.45 + 0.55 * pat_regular), depth=0.45 * pa) for f in foci) / (3 - 2 * pat_regular)
    else:
        pat = np.zeros_like(X)

    tex = _texture(X.shape, rng, 0.35 / px)
    trab = 1.0 + 0.12 * tex
    cortical = (femur - canal * 0.9) + (tibia - tcanal * 0.9) + fibula * 0.6 + 0.0
    spongy = (canal * 0.25 + tcanal * 0.25 + fe * 0.8 + te * 0.8 + bridge_f * 0.3 + bridge_t * 0.3 + fib_head * 0.5 + pat * 0.5) * trab
    bone = density * (cortical + spongy) + scar * W
    return _finish_film(rng, acq, soft, bone, "knee", bone_age_months, sex, t, 1 - fuse_f, epi_ratio_f)


# ------------------------------------------------------------------------------------- hand

# Carpal appearance (girls' years) in order: capitate, hamate, triquetrum, lunate, trapezium, trapezoid,
# scaphoid, pisiform; positions relative to the wrist centre in units of hand width; size.
_CARPALS = [
    ("capitate", 0.15, 0.02, -0.05, 0.13),
    ("hamate", 0.25, -0.17, -0.03, 0.11),
    ("triquetrum", 2.0, -0.26, 0.12, 0.09),
    ("lunate", 3.0, -0.07, 0.17, 0.09),
    ("trapezium", 4.0, 0.28, 0.02, 0.09),
    ("trapezoid", 4.5, 0.17, -0.08, 0.07),
    ("scaphoid", 4.8, 0.16, 0.17, 0.10),
    ("pisiform", 9.0, -0.28, 0.05, 0.05),
]


def render_hand(bone_age_months: float, sex: str, rng: np.random.Generator | int | None = None, size: int = 512,
                standard: bool = False) -> Phantom:
    """A hand PA radiograph of a child with this bone age (months) and sex."""
    rng = np.random.default_rng(rng)
    t = maturity_years(bone_age_months, sex)
    j = lambda: rng.normal(0, EVENT_JITTER_Y)  # noqa: E731
    H = (35 + 45 * (1 - np.exp(-t / 6.0))) * (1.07 if sex == "M" else 1.0) * rng.normal(1, 0.05)  # hand width mm
    fov = H * (2.8 if standard else rng.uniform(2.6, 3.0))
    acq = _acquisition(rng, size, fov, 0.85 if standard else rng.uniform(0.78, 0.9), standard)
    acq.rotation *= 0.5
    X, Y = _grid(acq)
    px = acq.spacing
    fuse_ph = _smooth(12.8 + j(), 14.3 + j(), t)
    fuse_rad = _smooth(14.0 + j(), 15.8 + j(), t)
    epi_grow = _smooth(1.0 + j(), 11.5 + j(), t)
    epi_on = 1.2 + j()
    cap = _smooth(10.0 + j(), 13.0 + j(), t)  # phalangeal epiphyses cap their metaphyses
    sesamoid = _smooth(10.8 + j(), 13.0 + j(), t) * (t > 10.8)  # adductor sesamoid of the thumb
    density = 0.75 + 0.35 * _smooth(0, 18, t)

    wrist_y = 0.55 * H  # wrist centre below the palm centre (y down)
    soft = np.zeros_like(X)
    cortical = np.zeros_like(X)
    spongy = np.zeros_like(X)

    def bone_rod(cx, cy, angle, length, radius):
        # A rod centred at (cx, cy) along direction angle (0 = pointing up, i.e. -y).
        c, s = np.cos(angle), np.sin(angle)
        u = (X - cx) * c + (Y - cy) * s  # across
        v = -(X - cx) * s + (Y - cy) * c  # along (down positive)
        return _rod(u, v, 0, -length / 2, length / 2, radius, soft=0.8), u, v

    # Rays: thumb (1) .. little finger (5); angles fan out from the wrist.
    rays = [(0.42, -0.75, [0.30, 0.24, 0.20]), (0.22, -0.12, [0.50, 0.33, 0.21, 0.16]), (0.04, -0.02, [0.52, 0.37, 0.24, 0.17]),
            (-0.14, 0.08, [0.48, 0.34, 0.22, 0.16]), (-0.3, 0.2, [0.40, 0.27, 0.17, 0.15])]
    for k, (x0, ang, lengths) in enumerate(rays):
        ang = -ang * 0.6 + rng.normal(0, 0.03)
        cx, cy = x0 * H, wrist_y - 0.25 * H
        dirx, diry = np.sin(ang), -np.cos(ang)
        for i, L in enumerate(lengths):
            L *= H
            r = (0.065 if i == 0 else 0.055 - 0.008 * i) * H
            mx, my = cx + dirx * L / 2, cy + diry * L / 2
            gap = 0.03 * H * (1 - fuse_ph) if t > epi_on else 0.0
            rod, u, v = bone_rod(mx, my, ang, L - gap - 0.04 * H, r)
            canal = _rod(u, v, 0, -L / 2 + 0.1 * H, L / 2 - 0.1 * H, r * 0.5, soft=2)
            cortical += rod - canal * 0.9
            spongy += canal * 0.25
            soft += 2.0 * np.sqrt(np.clip((r * 2.6) ** 2 - u**2, 0, None)) * (np.abs(v) < L / 2 + 0.02 * H)
            # Epiphysis: at the proximal end of phalanges and metacarpal 1; distal end of metacarpals 2-5.
            if t > epi_on:
                at_distal = i == 0 and k > 0
                ey = (L / 2 - gap / 2) * (-1 if at_distal else 1)  # v coordinate (proximal = +)
                ew = r * (0.4 + 0.75 * epi_grow + 0.25 * cap)
                eh = 0.03 * H * (0.5 + 0.5 * epi_grow + 0.3 * cap)
                spongy += _ellipsoid(u, v, 0, ey, ew, eh, depth=ew) * 0.6 + fuse_ph * _rod(u, v, 0, ey - 0.03 * H, ey + 0.03 * H, r, soft=1) * 0.3
            if k == 0 and i == 0 and sesamoid > 0:  # at the thumb's metacarpophalangeal joint, ulnar side
                sr = 0.022 * H * (0.3 + 0.7 * sesamoid)
                spongy += _ellipsoid(X, Y, cx + dirx * L - 0.6 * r, cy + diry * L, sr, sr, depth=sr) * 0.8
            cx, cy = cx + dirx * L, cy + diry * L
    # Carpals.
    for name, onset, cx, cy, sz in _CARPALS:
        on = onset + j() * (0.3 + 0.15 * onset)
        g = _smooth(on, on + 6.0, t) * (t > on)
        if g <= 0:
            continue
        a = sz * H * (0.3 + 0.7 * g)
        spongy += _ellipsoid(X, Y, cx * H, wrist_y + cy * H, a, a * 0.8, depth=a) * 0.7
    # Radius and ulna (distal), with their epiphyses.
    for xc, r, onset in ((0.18, 0.14, 1.0), (-0.22, 0.08, 6.5)):
        top = wrist_y + 0.38 * H
        gap = 0.035 * H * (1 - fuse_rad)
        shaft = _rod(X, Y, xc * H, top + gap, 1e4, r * H * (1 + 0.25 * np.exp(-(Y - top) / (0.4 * H))), soft=1)
        can = _rod(X, Y, xc * H, top + 0.15 * H, 1e4, r * H * 0.5, soft=2)
        cortical += shaft - 0.9 * can
        on = onset + j()
        g = _smooth(on, on + 9.0, t) * (t > on)
        if g > 0:
            ew = r * H * (0.3 + 0.75 * g)
            spongy += _ellipsoid(X, Y, xc * H, top - 0.035 * H, ew, 0.045 * H * (0.4 + 0.6 * g), depth=ew) * 0.6
            spongy += fuse_rad * _rod(X, Y, xc * H, top - 0.01 * H, top + gap + 0.01 * H, r * H, soft=1) * 0.4
            # the fused physis leaves a dense scar that fades over the following years
            spongy += fuse_rad * (1 - _smooth(16.0, 18.5, t)) * _rod(X, Y, xc * H, top + gap - 0.006 * H, top + gap + 0.006 * H, r * H, soft=0.5) * 0.8
    forearm = 0.42 * H * _smooth(wrist_y - 0.1 * H, wrist_y + 0.3 * H, Y)
    palm = _ellipsoid(X, Y, 0.05 * H, wrist_y - 0.2 * H, 0.6 * H, 0.5 * H, depth=0.16 * H)
    soft = np.maximum(soft * 0.5, palm) + np.sqrt(np.clip(forearm**2 - X**2, 0, None)) * 0.6
    tex = _texture(X.shape, rng, 0.5 / px)
    bone = 1.6 * density * (cortical + spongy * (1 + 0.12 * tex))
    return _finish_film(rng, acq, soft, bone, "hand", bone_age_months, sex, t, 1 - fuse_rad, epi_grow)


# ----------------------------------------------------------------------------- cohort writer

#: Transfer syntaxes the cohort writer cycles through (all decodable by pydicom + pylibjpeg).
COHORT_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
)
#: Reader noise of a Greulich-Pyle read (months, SD): inter-observer SDs of about half a year are
#: reported (King et al., Pediatr Radiol 1994;24:600; Bull et al., Arch Dis Child 1999;81:172).
READER_SD_MONTHS = 6.0
MONTH_DAYS = 365.25 / 12


def bone_age_sd_months(chron_months: np.ndarray, sex: str) -> np.ndarray:
    """SD of true bone age around chronological age in healthy children: the Brush Foundation SDs that
    Greulich & Pyle tabulate (``kneeage.reference``), under 1 month in early infancy, 9-13 months from
    school age on."""
    return sd_months(chron_months, sex)


def write_dicom(path, stored: np.ndarray, truth: PhantomTruth, *, birth, study, patient_id: str,
                syntax: str = "1.2.840.10008.1.2.1", body_part: str = "KNEE") -> None:
    """Write one phantom as a CR DICOM file (unique UIDs; identifying fields are synthetic)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CR"
    ds.Manufacturer = "kneeage synthetic phantom"
    ds.ImageComments = "SYNTHETIC PHANTOM - NOT PATIENT DATA"
    ds.PatientName = f"PHANTOM^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientSex = truth.sex
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.StudyDate = ds.ContentDate = study.strftime("%Y%m%d")
    ds.AccessionNumber = f"ACC{patient_id}"[:16]
    ds.BodyPartExamined = body_part
    ds.ViewPosition = "AP" if body_part == "KNEE" else "PA"
    ds.ImageLaterality = ds.Laterality = truth.laterality
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = truth.photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, truth.bits_stored, truth.bits_stored - 1, 0
    ds.PixelSpacing = [round(truth.pixel_spacing_mm, 6)] * 2
    vmax = (1 << truth.bits_stored) - 1
    ds.WindowCenter, ds.WindowWidth = vmax / 2 + 0.5, vmax + 1
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.PixelData = stored.astype("<u2").tobytes()
    uid = UID(syntax)
    if uid.is_compressed:
        ds.compress(uid, encoding_plugin="pylibjpeg" if "4.90" in syntax else "")
    elif uid != ExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = uid
    ds.save_as(path, enforce_file_format=True)


def _write_subject(args) -> tuple[dict, dict]:
    """Render and write subject ``i`` of cohort ``seed`` (its own random stream: results do not depend
    on how many workers write the cohort)."""
    from datetime import date, timedelta
    from pathlib import Path

    from PIL import Image

    out, i, seed, size, hands, fmt = args
    out = Path(out)
    rng = np.random.default_rng([seed, i])
    sex = "F" if rng.random() < 0.5 else "M"
    days = int(rng.integers(14, int(18 * 365.25)))
    chron = days / MONTH_DAYS
    true_ba = float(max(0.0, chron + rng.normal(0, bone_age_sd_months(chron, sex))))
    birth = date(2005, 1, 1) + timedelta(days=int(rng.integers(0, 15 * 365)))
    study = birth + timedelta(days=days)
    hand_shift = max(int(rng.integers(-91, 92)), -days + 7)  # days, within ±3 months
    hand_ba = max(0.0, true_ba + hand_shift / MONTH_DAYS)
    read = hand_ba + rng.normal(0, READER_SD_MONTHS) - hand_shift / MONTH_DAYS
    case = f"SYN{seed:03d}-{i + 1:05d}"
    pid = f"{seed:03d}{i + 1:05d}"
    ext = "dcm" if fmt == "dicom" else "png"
    knee_name = f"images/{case}_knee.{ext}"
    hand_name = f"images/{case}_hand.{ext}" if hands else ""
    films = [(knee_name, render_knee(true_ba, sex, rng, size), study, "KNEE", COHORT_SYNTAXES[i % len(COHORT_SYNTAXES)])]
    if hands:
        films.append((hand_name, render_hand(hand_ba, sex, rng, size), study + timedelta(days=hand_shift), "HAND",
                      COHORT_SYNTAXES[(i + 2) % len(COHORT_SYNTAXES)]))
    for name, ph, when, part, syntax in films:
        if fmt == "dicom":
            write_dicom(out / name, ph.stored, ph.truth, birth=birth, study=when, patient_id=pid, syntax=syntax, body_part=part)
        else:
            Image.fromarray((ph.pixels * 65535).astype(np.uint16)).save(out / name)
    row = {"case_id": case, "image": knee_name, "sex": sex, "chronological_age_months": round(chron, 2),
           "reference_bone_age_months": round(max(0.0, read), 1), "hand_image": hand_name}
    truth = {"case_id": case, "true_bone_age_months": round(true_ba, 2), "hand_true_bone_age_months": round(hand_ba, 2),
             "hand_offset_days": hand_shift}
    return row, truth


def write_cohort(out, n: int, seed: int = 0, size: int = 512, hands: bool = False, fmt: str = "dicom",
                 progress=None, workers: int = 1):
    """Write ``n`` synthetic subjects under ``out``: images/, manifest.csv and truth.csv.

    Chronological ages are uniform over 0-18 years; true bone age = chronological age + N(0, SD(age, sex))
    (``bone_age_sd_months``: the Brush Foundation SDs); the hand film is taken within ±3 months of the knee film; the reference
    read is the true bone age at the hand film plus reader noise N(0, READER_SD_MONTHS), moved to the
    knee film's date. ``fmt`` is "dicom" (CR, a mix of transfer syntaxes) or "png" (16-bit).
    Returns the manifest as a pandas DataFrame.
    """
    from pathlib import Path

    import pandas as pd

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), i, seed, size, hands, fmt) for i in range(n)]
    results = []
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as ex:
            for k, r in enumerate(ex.map(_write_subject, jobs, chunksize=8)):
                results.append(r)
                if progress:
                    progress(k + 1, n)
    else:
        for k, job in enumerate(jobs):
            results.append(_write_subject(job))
            if progress:
                progress(k + 1, n)
    manifest = pd.DataFrame([r for r, _ in results])
    manifest.to_csv(out / "manifest.csv", index=False)
    pd.DataFrame([t for _, t in results]).to_csv(out / "truth.csv", index=False)
    return manifest


DEMO_CASES = (
    # label, true bone age (months), sex, chronological age (months)
    ("Girl, 6 y, bone age on time", 72.0, "F", 73.0),
    ("Boy, 11 y, bone age delayed", 104.0, "M", 134.0),
    ("Girl, 12 y, bone age advanced", 170.0, "F", 146.0),
)


def demo_case_dicom(index: int, size: int = 512) -> tuple[str, bytes]:
    """One of :data:`DEMO_CASES` rendered on the fly as a DICOM file in memory (name, bytes); sex
    and birth/study dates are in the header, as a real file would carry them."""
    import io
    from datetime import date, timedelta

    label, ba, sex, chron = DEMO_CASES[index]
    ph = render_knee(ba, sex, np.random.default_rng([777, index]), size)
    study = date(2026, 1, 15)
    birth = study - timedelta(days=round(chron * MONTH_DAYS))
    buf = io.BytesIO()
    write_dicom(buf, ph.stored, ph.truth, birth=birth, study=study, patient_id=f"DEMO{index + 1:03d}")
    return f"demo_case_{index + 1}.dcm", buf.getvalue()
