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
  fraction of the primary); detector blur; log transform; quantum noise per mm² (so the same film at any
  pixel size); CR edge enhancement and a display LUT. Acquisition varies:
  exposure, rotation, scale, translation, left/right, field of view and collimation, a burned-in
  laterality marker, MONOCHROME1/2, 10- to 16-bit, pixel spacing.
"""

from __future__ import annotations

import io
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage
from scipy.interpolate import CubicSpline

from .conventions import DAYS_PER_MONTH
from .reference import sd_months

BOY_TEMPO = 15.0 / 17.0
EVENT_JITTER_Y = 0.35
MU_SOFT = 0.021  # 1/mm, soft tissue at a diagnostic knee spectrum (order of magnitude)
MU_BONE = 0.038  # 1/mm, cortical bone excess over soft tissue
MU_FAT = 0.016  # 1/mm, fat (about 0.8 of muscle)
MU_METAL = 0.45  # 1/mm, stainless steel implants
MATURE_YEARS = 17.5  # girls' scale: physeal scars gone, density stops rising; nothing more to read


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
    femoral_epiphysis_ratio: float  # epiphysis width / metaphysis width (knee); radius growth (hand)
    skeletally_mature: bool = False  # past full fusion: the film carries no more maturity information
    detector_mm: str = ""  # cassette / detector format, short x long side
    magnification: float = 1.0
    region_px: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # knee (or hand) region x0, y0, x1, y1
    artefacts: str = ""  # ";"-joined: harris_lines, cast, metal
    # Where the physes (growth plates, or their scars once fused) run, in pixels: one polyline of (column, row)
    # points per physis (knee: distal femur, proximal tibia, and the fibula once its head has ossified). What a
    # saliency map should find (bench/saliency_physes.py); empty for hands.
    physes_px: tuple = ()

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


def _outline(angles_deg, radii):
    """A closed smooth outline r(θ) through control radii (θ in degrees from +x; y points down)."""
    a = np.deg2rad(np.asarray(angles_deg, float))
    order = np.argsort(a)
    a, r = a[order], np.asarray(radii, float)[order]
    cs = CubicSpline(np.append(a, a[0] + 2 * np.pi), np.append(r, r[0]), bc_type="periodic")
    return lambda th: cs(np.mod(th - a[0], 2 * np.pi) + a[0])


def _bump(th, centre_deg, width_deg):
    """A smooth bump of height 1 at ``centre_deg`` on the circle (θ in radians)."""
    d = np.angle(np.exp(1j * (th - np.deg2rad(centre_deg))))
    return np.exp(-(d / np.deg2rad(width_deg)) ** 2)


def _ellipse_radii(angles_deg, a, b, p=2.0):
    """Radii of a superellipse |x/a|^p + |y/b|^p = 1 (p = 2: an ellipse; larger: boxier) at the given
    angles (degrees)."""
    th = np.deg2rad(np.asarray(angles_deg, float))
    return (np.abs(np.cos(th) / a) ** p + np.abs(np.sin(th) / b) ** p) ** (-1 / p)


# ------------------------------------------------------------------------------ acquisition


@dataclass
class _Acq:
    rows: int
    cols: int
    spacing: float  # mm per pixel in the patient plane (detector pitch / magnification)
    rotation: float
    flip: bool
    shift: tuple[float, float]  # mm: where the anatomy's origin lies from the film centre
    exposure: float
    photometric: str
    bits: int
    collimation: tuple[float, float, float, float]  # unexposed share of the film: top, bottom, left, right
    detector_mm: tuple[int, int]  # (long, short) side of the cassette / detector
    magnification: float
    edge: float  # CR unsharp-mask gain
    grid_period_px: float  # 0: no grid lines


#: X-ray quanta reaching the detector per mm² (patient plane) at unit exposure, behind no attenuation:
#: 4000 in a 0.6 mm pixel.
QUANTA_PER_MM2 = 4000.0 / 0.36

KNEE_DETECTORS = ((240, 180), (300, 240), (430, 350))  # mm: 18×24, 24×30, 35×43 cm
HAND_DETECTORS = ((240, 180), (300, 240))


def _acquisition(rng, size, detectors, anatomy_mm, field, standard=False) -> _Acq:
    """A film on a real detector format: the anatomy at its physical size (magnified 1.05-1.15×), so a
    small child fills less of the frame; collimated to ``field`` × ``anatomy_mm`` around it (height,
    width in mm, drawn per film). ``standard``: a 24×30 cm film, ×1.10, centred, unrotated, no
    collimation, no grid, the right side, so anatomy can be measured from the pixels."""
    if standard:
        det = detectors[1] if len(detectors) > 1 else detectors[0]
    else:  # the smallest format the collimated field fits, sometimes a bigger one (what was at hand)
        need = field[0] * anatomy_mm * 1.1
        fits = [d for d in detectors if d[0] >= need] or [detectors[-1]]
        det = fits[0] if rng.random() < 0.75 or len(fits) == 1 else fits[1]
    mag = 1.10 if standard else float(rng.uniform(1.05, 1.15))
    rows = int(size)
    cols = int(round(size * det[1] / det[0]))
    spacing = det[0] / rows / mag
    fov_h, fov_w = rows * spacing, cols * spacing
    acq = _Acq(rows=rows, cols=cols, spacing=spacing, rotation=0.0, flip=False, shift=(0.0, 0.0), exposure=1.0,
               photometric="MONOCHROME2", bits=12, collimation=(0.0, 0.0, 0.0, 0.0), detector_mm=det,
               magnification=mag, edge=0.5, grid_period_px=0.0)
    if standard:
        return acq
    acq.rotation = float(rng.uniform(-8, 8))
    acq.flip = bool(rng.random() < 0.5)
    acq.exposure = float(rng.lognormal(0, 0.35))
    acq.photometric = str(rng.choice(["MONOCHROME1", "MONOCHROME2"]))
    acq.bits = int(rng.choice([10, 12, 14, 15, 16]))
    acq.edge = float(rng.uniform(0.0, 1.2))  # DR (none) to strong CR edge enhancement
    acq.grid_period_px = float(rng.uniform(2.2, 4.0)) if rng.random() < 0.3 else 0.0
    # The collimated field (patient mm), placed on the film with some slack; the anatomy sits inside it.
    fh = min(field[0] * anatomy_mm, fov_h)
    fw = min(field[1] * anatomy_mm, fov_w)
    fy = float(rng.uniform(-(fov_h - fh) / 2, (fov_h - fh) / 2)) * 0.6
    fx = float(rng.uniform(-(fov_w - fw) / 2, (fov_w - fw) / 2)) * 0.6
    acq.shift = (fx + float(rng.normal(0, 0.05 * fw)), fy + float(rng.normal(0, 0.05 * fh)))
    top = (fov_h / 2 + fy - fh / 2) / fov_h
    bottom = (fov_h / 2 - fy - fh / 2) / fov_h
    left = (fov_w / 2 + fx - fw / 2) / fov_w
    right = (fov_w / 2 - fx - fw / 2) / fov_w
    acq.collimation = tuple(float(max(0.0, v)) for v in (top, bottom, left, right))
    return acq


class _Canvas:
    """The film's pixel grid in patient coordinates (mm; x lateral or radial, y toward the feet or
    fingertips... as each renderer sets it) and its inverse, so each structure is evaluated only within
    its own bounding box."""

    def __init__(self, acq: _Acq):
        self.acq = acq
        yy, xx = np.mgrid[0 : acq.rows, 0 : acq.cols].astype(np.float32)
        x = (xx - (acq.cols - 1) / 2) * acq.spacing - acq.shift[0]
        y = (yy - (acq.rows - 1) / 2) * acq.spacing - acq.shift[1]
        th = np.deg2rad(acq.rotation)
        self.X = np.cos(th) * x + np.sin(th) * y
        self.Y = -np.sin(th) * x + np.cos(th) * y
        if acq.flip:
            self.X = -self.X

    def to_pixel(self, x, y):
        """Pixel (column, row) of patient point(s): the inverse of the grid above."""
        a = self.acq
        x = np.asarray(x, float) * (-1 if a.flip else 1)
        y = np.asarray(y, float)
        th = np.deg2rad(a.rotation)
        u, v = np.cos(th) * x - np.sin(th) * y, np.sin(th) * x + np.cos(th) * y
        return (u + a.shift[0]) / a.spacing + (a.cols - 1) / 2, (v + a.shift[1]) / a.spacing + (a.rows - 1) / 2

    def box(self, x0, y0, x1, y1):
        """Pixel slices covering the patient rectangle [x0, x1] × [y0, y1]; None if off the film."""
        c, r = self.to_pixel(np.array([x0, x1, x0, x1]), np.array([y0, y0, y1, y1]))
        c0, c1 = max(int(np.floor(c.min())) - 1, 0), min(int(np.ceil(c.max())) + 2, self.acq.cols)
        r0, r1 = max(int(np.floor(r.min())) - 1, 0), min(int(np.ceil(r.max())) + 2, self.acq.rows)
        return (slice(r0, r1), slice(c0, c1)) if c0 < c1 and r0 < r1 else None

    def zeros(self):
        return np.zeros(self.X.shape, np.float32)

    def dome(self, cx, cy, r_of, rmax, depth, clip=None):
        """Projected thickness (mm) of a star-shaped body: outline r(θ) around (cx, cy), rounded profile of
        half-depth ``depth``; ``clip(x, y)`` (0-1) may cut it, e.g. along a physis."""
        out = self.zeros()
        sl = self.box(cx - rmax, cy - rmax, cx + rmax, cy + rmax)
        if sl is None:
            return out
        x, y = self.X[sl], self.Y[sl]
        dx, dy = x - cx, y - cy
        r = np.maximum(r_of(np.arctan2(dy, dx)), 1e-3)
        t = 2.0 * depth * np.sqrt(np.clip(1.0 - (dx * dx + dy * dy) / (r * r), 0.0, None))
        out[sl] = t if clip is None else t * clip(x, y)
        return out

    def ellipse(self, cx, cy, ax, ay, depth=None):
        return self.dome(cx, cy, lambda th: ax * ay / np.hypot(ay * np.cos(th), ax * np.sin(th)), max(ax, ay),
                         ax if depth is None else depth)

    def rod(self, cx, y0, y1, half_width, depth_ratio=1.0, soft=0.8, clip=None):
        """A bone along y from y0 to y1 (mm) whose half-width is ``half_width(y)``, oval in section
        (``depth_ratio`` = AP depth / width); its ends fade over ``soft`` mm."""
        out = self.zeros()
        reach = float(np.max(half_width(np.linspace(y0, y1, 64)))) + 1
        sl = self.box(cx - reach, y0, cx + reach, y1)
        if sl is None:
            return out
        x, y = self.X[sl], self.Y[sl]
        h = half_width(y)
        t = 2.0 * depth_ratio * np.sqrt(np.clip(h * h - (x - cx) ** 2, 0.0, None))
        t = t * np.clip((y - y0) / soft, 0, 1) * np.clip((y1 - y) / soft, 0, 1)
        out[sl] = t if clip is None else t * clip(x, y)
        return out

    def limb_rod(self, cx, cy, angle, length, half_width, depth_ratio=1.0, soft=0.6):
        """A bone of ``length`` centred at (cx, cy) pointing at ``angle`` (0: toward -y); ``half_width(v)``
        over v ∈ [-length/2 (distal), length/2 (proximal)]. Returns the thickness and (u, v) coordinates."""
        out = self.zeros()
        reach = length / 2 + float(np.max(half_width(np.linspace(-length / 2, length / 2, 32)))) + 1
        sl = self.box(cx - reach, cy - reach, cx + reach, cy + reach)
        if sl is None:
            return out
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = self.X[sl] - cx, self.Y[sl] - cy
        u, v = dx * c + dy * s, -dx * s + dy * c
        h = half_width(v)
        cap = np.minimum(h, length / 4)  # rounded ends: a base or a head, not a cut tube
        past = np.clip((np.abs(v) - (length / 2 - cap)) / cap, 0.0, 1.0)
        h = h * np.sqrt(np.clip(1.0 - past * past, 0.0, None))
        t = 2.0 * depth_ratio * np.sqrt(np.clip(h * h - u * u, 0.0, None))
        out[sl] = t * np.clip((v + length / 2) / soft, 0, 1) * np.clip((length / 2 - v) / soft, 0, 1)
        return out

    def texture(self, rng, along_mm, across_mm):
        """Trabecular texture: band-passed noise, stretched along the film's vertical (the bones' axis,
        the principal stress lines) by ``along_mm`` / ``across_mm``."""
        s = self.acq.spacing
        n = rng.standard_normal(self.X.shape).astype(np.float32)
        fine = ndimage.gaussian_filter(n, (max(along_mm / s, 0.5), max(across_mm / s, 0.5)))
        coarse = ndimage.gaussian_filter(n, (max(3 * along_mm / s, 1.5), max(3 * across_mm / s, 1.5)))
        t = fine - coarse
        return t / (t.std() + 1e-6)


def _expose(rng, grid, acq: _Acq, soft_mm, bone_mm, marker: str, metal_mm=None):
    """Beer-Lambert, scatter, blur, log, quantum noise; CR edge enhancement, the display LUT and grid lines; then
    collimation, the burned-in marker and storage. ``grid`` draws the quantum noise (one value per pixel)."""
    atten = MU_SOFT * soft_mm + MU_BONE * bone_mm
    if metal_mm is not None:
        atten = atten + MU_METAL * metal_mm
    primary = np.exp(-atten)
    # Everything here is physical, so one subject gives the same film, at the model's working spacing, on a
    # detector of any pixel size: scatter spreads over ~7 mm; the detector blurs by 0.25-0.4 mm (phosphor) on
    # top of its pixel aperture (~0.3 px); quantum noise is set per mm² (QUANTA_PER_MM2 × exposure), so a
    # pixel a quarter the area gets a quarter of the quanta.
    scatter = 0.25 * ndimage.gaussian_filter(primary, 7.0 / acq.spacing)
    signal = primary + scatter
    signal = np.clip(ndimage.gaussian_filter(signal, float(np.hypot((0.25 + 0.15 * rng.random()) / acq.spacing, 0.3))), 1e-4, None)
    quanta = QUANTA_PER_MM2 * acq.spacing ** 2 * acq.exposure * signal
    clean = -np.log(signal).astype(np.float32)  # bone bright
    # Quantum noise in the log image: the Gaussian limit of Poisson counts, SD 1/√quanta.
    noise = grid.standard_normal(clean.shape, dtype=np.float32) / np.sqrt(quanta + 1.0).astype(np.float32)

    def enhance(a):  # CR/DR processing: unsharp mask at ~2 mm (linear, so image and noise are enhanced apart)
        return a + acq.edge * (a - ndimage.gaussian_filter(a, 2.0 / acq.spacing)) if acq.edge else a

    clean, noise = enhance(clean), enhance(noise)
    t, b, left, r = acq.collimation
    R, C = acq.rows, acq.cols
    inside = clean[int(t * R) : R - int(b * R), int(left * C) : C - int(r * C)]
    inside = inside if inside.size else clean
    lo, hi = np.percentile(inside, 0.5), np.percentile(inside, 99.8)
    # A LUT that favours bone, as CR processing does: 0.03 + 0.9 u², u the clipped, scaled log image. It is set
    # on the noise-free image, and the noise passes through its slope: a square applied to per-pixel noise
    # would brighten the film by the noise variance, which grows as pixels shrink.
    u = np.clip((clean - lo) / (hi - lo + 1e-6), 0, 1)
    img = np.clip(u ** 2 * 0.9 + 0.03 + np.where(u < 1, 1.8 * u / (hi - lo + 1e-6), 0) * noise, 0, 1)
    if acq.grid_period_px:  # stationary anti-scatter grid: faint lines across the film
        img = np.clip(img + 0.012 * np.sin(2 * np.pi * np.arange(C) / acq.grid_period_px)[None, :], 0, 1)
    # Collimation: unexposed film is as bright as the densest bone.
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


def _grid_stream(rng: np.random.Generator) -> np.random.Generator:
    """The random stream for draws whose number depends on the pixel grid (trabecular texture, quantum
    noise). Kept apart from the subject's own stream, so that everything drawn after them (artefacts, the
    marker) is the same at any pixel size: the same film, only its pixels change."""
    return np.random.default_rng(rng.integers(2**63))


def _finish_film(rng, grid, canvas: _Canvas, soft, bone, kind, bone_age_months, sex, t, physis_open, epi_ratio,
                 mature, box_mm, artefacts=(), metal=None, physes_mm=()) -> Phantom:
    """Expose the thickness maps and record the truth (the region of interest in pixels too)."""
    acq = canvas.acq
    side = "L" if acq.flip else "R"
    stored, img = _expose(rng, grid, acq, soft, bone, side, metal)
    cols, rows = canvas.to_pixel(np.array([box_mm[0], box_mm[2], box_mm[0], box_mm[2]]),
                                 np.array([box_mm[1], box_mm[1], box_mm[3], box_mm[3]]))
    box_px = (float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max()))
    physes = tuple(tuple((round(float(c), 2), round(float(r), 2)) for c, r in zip(*canvas.to_pixel(xs, ys)))
                   for xs, ys in physes_mm)
    truth = PhantomTruth(kind=kind, bone_age_months=float(bone_age_months), sex=sex, maturity_years=float(t),
                         laterality=side, pixel_spacing_mm=float(acq.spacing), photometric=acq.photometric,
                         bits_stored=acq.bits, rotation_deg=acq.rotation, exposure=acq.exposure,
                         physis_open=float(physis_open), femoral_epiphysis_ratio=float(epi_ratio),
                         skeletally_mature=bool(mature), detector_mm=f"{acq.detector_mm[1]}x{acq.detector_mm[0]}",
                         magnification=float(acq.magnification), region_px=box_px, artefacts=";".join(artefacts),
                         physes_px=physes)
    return Phantom(stored=stored, pixels=img, truth=truth)


def _burn_marker(img, letter, acq: _Acq, rng):
    h = max(8, int(acq.rows * 0.04))
    try:
        font = ImageFont.load_default(size=h)
    except TypeError:  # old Pillow
        font = ImageFont.load_default()
    canvas = Image.new("L", (h * 2, h * 2), 0)
    ImageDraw.Draw(canvas).text((h // 3, h // 6), letter, fill=255, font=font)
    mark = np.asarray(canvas, dtype=np.float32) / 255.0
    top = int(acq.rows * (acq.collimation[0] + 0.02))
    left = int(acq.cols * (1 - acq.collimation[3] - 0.02)) - mark.shape[1] if rng.random() < 0.5 else int(acq.cols * (acq.collimation[2] + 0.02))
    top, left = max(0, top), max(0, left)
    sub = img[top : top + mark.shape[0], left : left + mark.shape[1]]
    m = mark[: sub.shape[0], : sub.shape[1]]
    img[top : top + m.shape[0], left : left + m.shape[1]] = np.maximum(sub, m * 0.98)
    return img


# ------------------------------------------------------------------------------------- knee


def knee_maturity(t: float, j=lambda: 0.0) -> dict[str, float]:
    """The knee's maturity indicators at girls'-scale age ``t`` (years), each 0 → 1 over the ages it moves
    on real films (``docs/phantoms.md`` gives each timeline and its source); ``j()`` jitters event times."""
    m = {
        "epi_ratio_f": 0.32 + 0.66 * _smooth(-0.3 + j(), 11.0 + j(), t) ** 0.8,  # femoral epiphysis / metaphysis width
        "epi_ratio_t": 0.26 + 0.70 * _smooth(0.0 + j(), 11.5 + j(), t) ** 0.8,
        "condyle": _smooth(3.0 + j(), 10.0 + j(), t),  # two condyles, notch, flattened articular surface
        "margin_smooth": _smooth(0.5 + j(), 5.0 + j(), t),  # irregular early margins become smooth
        "spines": _smooth(7.0 + j(), 12.5 + j(), t),  # intercondylar eminence tubercles
        "cap": _smooth(10.5 + j(), 13.5 + j(), t),  # epiphyses cap the metaphyses
        "narrow": float(np.clip((t - 6.0 - j()) / 7.5, 0.0, 1.0)),  # physes narrow until they fuse
        "fuse_f": _smooth(13.3 + j(), 15.0 + j(), t),  # fusion from the centre outward
        "fuse_t": _smooth(13.1 + j(), 14.8 + j(), t),
        "fuse_fib": _smooth(13.8 + j(), 15.5 + j(), t),
    }
    fib_on = 3.0 + 1.5 * j()
    m["fib_size"] = float(_smooth(fib_on, fib_on + 7.0, t) * (t > fib_on))
    m["fib_cap"] = _smooth(11.0 + j(), 14.0 + j(), t)
    pat_on = 3.0 + 1.5 * j()
    m["pat_size"] = float(_smooth(pat_on, pat_on + 9.0, t) * (t > pat_on))
    m["pat_regular"] = _smooth(pat_on + 0.5, pat_on + 3.5, t)
    mature_at = MATURE_YEARS + j()  # the physeal scars have faded and density stops rising
    m["scar"] = m["fuse_f"] * (1 - _smooth(15.0, mature_at, t))
    m["density"] = 0.75 + 0.35 * _smooth(0, mature_at, t)
    m["mature"] = float(t >= mature_at)
    return m


def render_knee(bone_age_months: float, sex: str, rng: np.random.Generator | int | None = None, size: int = 512,
                standard: bool = False) -> Phantom:
    """A knee AP radiograph of a child with this bone age (months) and sex ("F"/"M").

    Anatomy is drawn in millimetres around the joint centre (x lateral, y toward the foot) and filmed on
    a real detector format. ``standard`` fixes the acquisition (24×30 cm, ×1.10, centred, unrotated,
    right knee, no collimation) and the subject's timing, so anatomy can be measured from the pixels."""
    rng = np.random.default_rng(rng)
    t = maturity_years(bone_age_months, sex)
    j = (lambda: 0.0) if standard else (lambda: rng.normal(0, EVENT_JITTER_Y))  # noqa: E731 - timing jitter (years)
    m = knee_maturity(t, j)
    # Size: femoral metaphyseal width (mm) grows with maturity; boys a little larger.
    W = (20 + 58 * (1 - np.exp(-t / 5.5))) * (1.07 if sex == "M" else 1.0) * (1.0 if standard else rng.normal(1, 0.05))
    field = (rng.uniform(3.0, 4.2), rng.uniform(2.2, 3.0)) if not standard else (4.0, 3.0)
    acq = _acquisition(rng, size, KNEE_DETECTORS, W, field, standard)
    cv = _Canvas(acq)
    X, Y = cv.X, cv.Y
    flex = 0.0 if standard else float(rng.uniform(0, 15))  # slight flexion (degrees)
    turn = 0.0 if standard else float(rng.normal(0, 5))  # internal (+) / external rotation (degrees)

    joint = 0.045 * W * (1 - 0.25 * flex / 15)  # half the joint space, cartilage included
    phys_f, phys_t = -(joint + 0.30 * W), joint + 0.20 * W  # physes (femur above the joint line)
    Wt = 0.92 * W
    und_f = lambda x: 0.022 * W * np.cos(3 * np.pi * x / W)  # noqa: E731 - the physes undulate
    und_t = lambda x: 0.015 * W * np.cos(2 * np.pi * (x - 0.02 * W) / Wt)  # noqa: E731

    def gap(x, width, fuse, height):
        """Physeal cartilage height at x: narrowing with age, closing from the centre outward."""
        closed = _smooth(0.9, 1.0, np.abs(x) / (width / 2 * max(fuse, 1e-3) + 1e-3)) if fuse > 0 else 1.0
        return height * (1 - 0.6 * m["narrow"]) * (1 - fuse) ** 0.3 * closed

    gap_f = lambda x: gap(x, W, m["fuse_f"], 0.035 * W)  # noqa: E731
    gap_t = lambda x: gap(x - 0.02 * W, Wt, m["fuse_t"], 0.032 * W)  # noqa: E731
    f_bottom = lambda x: phys_f + und_f(x) - gap_f(x) / 2  # noqa: E731 - metaphysis ends here
    f_epi_top = lambda x: phys_f + und_f(x) + gap_f(x) / 2  # noqa: E731
    t_top = lambda x: phys_t + und_t(x) + gap_t(x) / 2  # noqa: E731
    t_epi_bottom = lambda x: phys_t + und_t(x) - gap_t(x) / 2  # noqa: E731

    # ---- femur: metaphyseal flare, shaft whose cortex thickens away from the physis, medullary canal
    shaft_f = 0.44 * W / 2
    hw_f = lambda y: shaft_f + (W / 2 - shaft_f) * np.exp(-np.clip(phys_f - y, 0, None) / (0.28 * W))  # noqa: E731
    cortex_f = lambda y: W * (0.018 + 0.05 * _smooth(0.1 * W, 1.4 * W, phys_f - y))  # noqa: E731
    top = phys_f - 4.0 * W
    below_f = lambda x, y: (y < f_bottom(x)).astype(np.float32)  # noqa: E731
    femur = cv.rod(0.0, top, phys_f + 0.06 * W, hw_f, clip=below_f)
    f_canal = cv.rod(0.0, top, phys_f + 0.06 * W, lambda y: np.maximum(hw_f(y) - cortex_f(y), 0.3), clip=below_f)
    spurs = sum(cv.ellipse(s * (W / 2 - 0.012 * W), phys_f - 0.02 * W, 0.012 * W, 0.035 * W, 0.02 * W) for s in (-1, 1))
    # ---- tibia below, the same way
    shaft_t = 0.46 * Wt / 2
    tx = 0.02 * W
    hw_t = lambda y: shaft_t + (Wt / 2 - shaft_t) * np.exp(-np.clip(y - phys_t, 0, None) / (0.30 * W))  # noqa: E731
    cortex_t = lambda y: W * (0.018 + 0.05 * _smooth(0.1 * W, 1.4 * W, y - phys_t))  # noqa: E731
    above_t = lambda x, y: (y > t_top(x)).astype(np.float32)  # noqa: E731
    tibia = cv.rod(tx, phys_t - 0.06 * W, phys_t + 4.0 * W, hw_t, clip=above_t)
    t_canal = cv.rod(tx, phys_t - 0.06 * W, phys_t + 4.0 * W, lambda y: np.maximum(hw_t(y) - cortex_t(y), 0.3), clip=above_t)
    # zones of provisional calcification: dense bands on the metaphyseal side of open physes
    zpc_f = femur * (Y > f_bottom(X) - 0.018 * W) * (1 - m["fuse_f"])
    zpc_t = tibia * (Y < t_top(X) + 0.016 * W) * (1 - m["fuse_t"])

    # ---- femoral epiphysis: an ovoid centre that widens, takes two condyles (the medial one larger and
    # lower), a notch between them, epicondyles, smooth margins, and finally caps the metaphysis
    ew = m["epi_ratio_f"] * W / 2
    eh = ew * (0.64 - 0.26 * _smooth(0.3, 1.0, m["epi_ratio_f"]))
    ecy = phys_f + eh * 0.85 + (1 - m["epi_ratio_f"]) * 0.07 * W
    c = m["condyle"]
    ang = np.arange(0, 360, 10)
    th = np.deg2rad(ang)
    base = _ellipse_radii(ang, ew, eh, 2.0 + 1.2 * c)  # an ovoid that squares off as the condyles form
    irregular = (1 - m["margin_smooth"]) * 0.07 * rng.standard_normal(ang.size) * (not standard)
    # medial is -x, which on the circle (y down) is around 180°; down is 90°
    shape = (1 - 0.34 * c * _bump(th, 90, 15) + 0.11 * c * _bump(th, 125, 20) + 0.05 * c * _bump(th, 58, 20)
             + 0.05 * c * (_bump(th, 185, 9) + _bump(th, -5, 9)) + irregular)
    fe = cv.dome(0.0, ecy, _outline(ang, base * shape), 1.3 * ew, 0.8 * ew,
                 clip=lambda x, y: (y > f_epi_top(x)).astype(np.float32))
    lip = 0.07 * W * m["cap"] + 1e-3
    fe = fe + sum(cv.ellipse(s * (ew - 0.55 * lip), f_epi_top(s * ew) - 0.35 * lip, 0.55 * lip, 1.6 * lip, 1.8 * lip) for s in (-1, 1))

    # ---- tibial epiphysis: medial plateau (slightly concave) and lateral plateau (convex), an
    # intercondylar eminence whose two tubercles rise with age
    tw = m["epi_ratio_t"] * Wt / 2
    thh = tw * (0.52 - 0.24 * _smooth(0.3, 1.0, m["epi_ratio_t"]))
    tcy = phys_t - thh * 0.85 - (1 - m["epi_ratio_t"]) * 0.05 * W
    base = _ellipse_radii(ang, tw, thh, 2.0 + 0.8 * c)
    spine = m["spines"] * 0.13 * W / max(thh, 1e-3)
    irregular = (1 - m["margin_smooth"]) * 0.07 * rng.standard_normal(ang.size) * (not standard)
    shape = (1 - 0.05 * c * _bump(th, 235, 20) + 0.04 * c * _bump(th, 305, 20) + irregular)
    angf = np.arange(0, 360, 5)
    thf = np.deg2rad(angf)
    fine = _outline(ang, base * shape)(thf)
    fine = fine * (1 + spine * (_bump(thf, 261, 7) + 0.85 * _bump(thf, 280, 7)))
    te = cv.dome(tx, tcy, _outline(angf, fine), 1.4 * tw + 0.15 * W, 0.8 * tw,
                 clip=lambda x, y: (y < t_epi_bottom(x)).astype(np.float32))
    te = te + sum(cv.ellipse(tx + s * (tw - 0.55 * lip), t_epi_bottom(tx + s * tw) + 0.35 * lip, 0.55 * lip, 1.6 * lip, 1.8 * lip) for s in (-1, 1))

    # ---- fusion: bone bridges each physis from the centre outward; then a dense scar fades over years
    def bridge(cx, p, width, fuse):
        if fuse <= 0:
            return cv.zeros()
        reach = lambda x: 1 - _smooth(0.85, 1.0, np.abs(x - cx) / (width / 2 * fuse + 1e-3))  # noqa: E731
        return cv.rod(cx, p - 0.05 * W, p + 0.05 * W, lambda y: width / 2 + 0 * y, soft=0.02 * W, clip=lambda x, y: reach(x))

    bridges = bridge(0.0, phys_f, 0.98 * W, m["fuse_f"]) + bridge(tx, phys_t, 0.98 * Wt, m["fuse_t"])
    scar = sum(b * (np.abs(Y - p(X)) < 0.012 * W) for b, p in
               ((femur + fe, lambda x: phys_f + und_f(x)), (tibia + te, lambda x: phys_t + und_t(x)))) * 0.35 * m["scar"]

    # ---- fibula: lateral, its head overlapping the posterolateral tibial metaphysis on the AP film
    fx = 0.37 * W * (1 - 0.012 * turn)
    fib_phys = phys_t + 0.10 * W
    fgap = 0.03 * W * (1 - m["fuse_fib"]) * (m["fib_size"] > 0)
    hw_fib = lambda y: 0.06 * W + 0.075 * W * np.exp(-np.clip(y - fib_phys, 0, None) / (0.16 * W))  # noqa: E731
    head_top = fib_phys + fgap / 2
    fibula = np.maximum(cv.rod(fx, head_top + 0.04 * W, phys_t + 4.0 * W, hw_fib, depth_ratio=0.9),
                        cv.ellipse(fx - 0.01 * W, head_top + 0.06 * W, 0.13 * W, 0.06 * W, 0.12 * W)
                        * (cv.Y > head_top))
    fib_canal = cv.rod(fx, fib_phys + 0.3 * W, phys_t + 4.0 * W, lambda y: np.maximum(hw_fib(y) - 0.025 * W, 0.2), depth_ratio=0.9)
    fs = m["fib_size"]
    fib_epi = cv.ellipse(fx, fib_phys - fgap / 2 - 0.045 * W * fs, (0.04 + 0.085 * fs + 0.02 * m["fib_cap"]) * W + 1e-3,
                         0.045 * W * fs + 1e-3, 0.07 * W * fs + 1e-3) * (fs > 0)

    # ---- patella, superimposed on the distal femur: several small irregular foci that merge into a
    # regular oval with smooth margins; its lower pole stays above the joint line
    pa, pb = 0.28 * W * (0.25 + 0.75 * m["pat_size"]), 0.34 * W * (0.25 + 0.75 * m["pat_size"])
    pcx, pcy = 0.04 * W, -0.08 * W - pb + 0.12 * W * flex / 15
    patella = cv.zeros()
    if m["pat_size"] > 0:
        reg = m["pat_regular"]
        a30 = np.arange(0, 360, 30)
        for k in range(4):
            off = (np.array([np.cos(k * 1.6), np.sin(k * 1.6)]) * 0.4 if standard else rng.normal(0, 0.4, 2)) * (1 - reg)
            rough = 1 + (0 if standard else 1) * rng.normal(0, 0.12 * (1 - reg), a30.size)
            s = 0.45 + 0.55 * reg
            focus = _outline(a30, _ellipse_radii(a30, pa * s, pb * s) * rough)
            patella = np.maximum(patella, cv.dome(pcx + off[0] * pa, pcy + off[1] * pb, focus, 1.4 * max(pa, pb), 0.42 * pa))

    # ---- soft tissue: skin, subcutaneous fat, muscle with fat planes, Hoffa's and the suprapatellar fat pads
    limb = 0.85 * W + 0.22 * W * _smooth(-0.3 * W, -1.8 * W, Y) * (Y < 0) + 0.02 * W * np.sin(Y / W * 2)
    fat_layer = W * (0.06 + 0.06 * np.exp(-t / 4)) * (1.0 if standard else rng.uniform(0.8, 1.3))
    total = 2.0 * np.sqrt(np.clip(limb**2 - X**2, 0, None))
    muscle = 2.0 * np.sqrt(np.clip((limb - fat_layer) ** 2 - X**2, 0, None))
    planes = sum(0.12 * W * np.exp(-((X - s * 0.48 * W) / (0.012 * W)) ** 2) * (np.abs(Y) > 0.6 * W) for s in (-1, 1))
    pads = cv.ellipse(0.0, 0.06 * W, 0.32 * W, 0.12 * W, 0.25 * W) + cv.ellipse(0.0, -0.95 * W, 0.24 * W, 0.16 * W, 0.2 * W)
    fat = np.clip(total - muscle + np.minimum(planes + pads, muscle), 0, None)
    soft = np.clip(total - fat, 0, None) + fat * MU_FAT / MU_SOFT  # in soft-tissue-equivalent mm

    # ---- bone: cortex, trabecular bone (oriented along the shaft in metaphyses, finer in epiphyses)
    grid = _grid_stream(rng)
    streaks = cv.texture(grid, 1.6, 0.35)
    blobs = cv.texture(grid, 0.45, 0.45)
    near_f = np.exp(-np.clip(phys_f - Y, 0, None) / (0.5 * W))
    near_t = np.exp(-np.clip(Y - phys_t, 0, None) / (0.5 * W))
    marrow = (f_canal * (0.08 + 0.3 * near_f) * (1 + 0.25 * streaks * near_f)
              + t_canal * (0.08 + 0.3 * near_t) * (1 + 0.25 * streaks * near_t)
              + fib_canal * 0.12)
    cortical = 1.25 * ((femur - f_canal) + (tibia - t_canal) + (fibula - fib_canal))
    spongy = (fe * 0.65 + te * 0.65 + fib_epi * 0.6 + patella * 0.7 + bridges * 0.4) * (1 + 0.08 * blobs)
    dense = 0.5 * (zpc_f + zpc_t) + scar + 0.3 * spurs * (1 - m["fuse_f"])
    bone = m["density"] * (cortical + marrow + spongy + dense)

    # ---- what real cohorts contain now and then
    artefacts, metal = [], None
    if not standard:
        if rng.random() < 0.08 and t < 13:  # growth-arrest (Harris) lines parallel to the physes
            artefacts.append("harris_lines")
            for s, p, tube in ((-1, phys_f, femur), (1, phys_t, tibia)):
                d = rng.uniform(0.12, 0.45) * W
                bone += 0.25 * tube * (np.abs(Y - (p + s * d) - 0.01 * W * np.cos(3 * np.pi * X / W)) < 0.008 * W)
        if rng.random() < 0.03:  # plaster cast
            artefacts.append("cast")
            outer = 2.0 * np.sqrt(np.clip((limb + 0.09 * W) ** 2 - X**2, 0, None))
            soft = soft + 1.8 * np.clip(outer - total, 0, None) * (1 + 0.1 * blobs)
        if rng.random() < 0.03:  # guided-growth staple or screw across a physis
            artefacts.append("metal")
            sx = float(rng.choice([-1, 1])) * 0.38 * W
            metal = (cv.rod(sx - 0.05 * W, phys_f - 0.18 * W, phys_f + 0.16 * W, lambda y: 0.012 * W + 0 * y)
                     + cv.rod(sx + 0.05 * W, phys_f - 0.18 * W, phys_f + 0.16 * W, lambda y: 0.012 * W + 0 * y)
                     + cv.ellipse(sx, phys_f - 0.18 * W, 0.07 * W, 0.012 * W, 0.012 * W))
    box = (-0.65 * W, phys_f - 0.5 * W, 0.65 * W, phys_t + 0.5 * W)
    xf, xt = np.linspace(-W / 2, W / 2, 17), tx + np.linspace(-Wt / 2, Wt / 2, 17)
    physes = [(xf, phys_f + und_f(xf)), (xt, phys_t + und_t(xt))]
    if m["fib_size"] > 0:
        xb = fx + np.linspace(-0.08, 0.08, 5) * W
        physes.append((xb, np.full_like(xb, fib_phys)))
    return _finish_film(rng, grid, cv, soft, bone, "knee", bone_age_months, sex, t, 1 - m["fuse_f"], m["epi_ratio_f"],
                        m["mature"], box, artefacts, metal, physes)


# ------------------------------------------------------------------------------------- hand

# Carpal appearance (girls' years) in order: capitate, hamate, triquetrum, lunate, trapezium, trapezoid,
# scaphoid, pisiform; centre relative to the wrist centre in units of hand width (x toward the thumb,
# y toward the fingertips negative); mature half-length, half-width (units of H); axis angle (degrees);
# shape bumps (angle°, height) that give each bone its outline.
_CARPALS = [
    ("capitate", 0.15, 0.02, -0.06, 0.13, 0.075, 95, ((0, -0.12), (180, -0.12))),  # waisted, long axis along the ray
    ("hamate", 0.25, -0.16, -0.05, 0.11, 0.075, 80, ((20, 0.25), (200, 0.1))),  # wedge with the hook (dense ring below)
    ("triquetrum", 2.0, -0.25, 0.10, 0.075, 0.06, 30, ((90, 0.15),)),
    ("lunate", 3.0, -0.07, 0.15, 0.075, 0.07, 90, ((270, -0.3),)),  # crescent: concave toward the capitate
    ("trapezium", 4.0, 0.27, 0.02, 0.08, 0.06, 40, ((300, 0.2),)),
    ("trapezoid", 4.5, 0.16, -0.08, 0.06, 0.05, 90, ()),
    ("scaphoid", 4.8, 0.15, 0.15, 0.12, 0.055, 35, ((90, -0.15), (270, 0.1))),  # boat-shaped, oblique
    ("pisiform", 9.0, -0.28, 0.06, 0.045, 0.04, 0, ()),  # over the triquetrum
]
# Hand epiphyses (girls' years): appearance, capping, fusion, in the Greulich-Pyle order (distal
# phalanges fuse first, then the metacarpals and proximal, then the middle phalanges; ulna, radius last).
_HAND_TIMES = {"distal": (1.7, 10.5, 13.0), "middle": (1.6, 11.0, 14.0), "proximal": (1.1, 11.3, 13.8),
               "metacarpal": (1.3, 11.8, 13.9), "thumb_mc": (2.0, 11.8, 13.9), "ulna": (6.5, 13.0, 15.0),
               "radius": (1.0, 12.5, 15.5)}


def render_hand(bone_age_months: float, sex: str, rng: np.random.Generator | int | None = None, size: int = 512,
                standard: bool = False) -> Phantom:
    """A hand PA radiograph of a child with this bone age (months) and sex: phalanges and metacarpals with
    bases and heads, their epiphyses appearing, capping and fusing in the Greulich-Pyle order, carpal
    bones appearing in theirs with their own outlines, the distal radius and ulna, the adductor sesamoid."""
    rng = np.random.default_rng(rng)
    t = maturity_years(bone_age_months, sex)
    j = (lambda: 0.0) if standard else (lambda: rng.normal(0, EVENT_JITTER_Y))  # noqa: E731
    H = (35 + 45 * (1 - np.exp(-t / 6.0))) * (1.07 if sex == "M" else 1.0) * (1.0 if standard else rng.normal(1, 0.05))
    field = (rng.uniform(3.2, 3.8), rng.uniform(2.4, 2.9)) if not standard else (3.6, 2.8)
    acq = _acquisition(rng, size, HAND_DETECTORS, H, field, standard)
    acq.rotation *= 0.5
    cv = _Canvas(acq)
    X, Y = cv.X, cv.Y
    mature_at = MATURE_YEARS + j()
    density = 0.75 + 0.35 * _smooth(0, mature_at, t)
    stage = {k: (_smooth(on + j(), on + 6.0, t) * (t > on), _smooth(cap - 1.5 + j(), cap + 1.5, t), _smooth(fuse - 0.7 + j(), fuse + 0.7, t))
             for k, (on, cap, fuse) in _HAND_TIMES.items()}  # (growth, capping, fusion) per group

    wrist_y = 0.55 * H
    soft, cortical, spongy = cv.zeros(), cv.zeros(), cv.zeros()
    rays = [(0.42, -0.75, [0.30, 0.24, 0.20]), (0.22, -0.12, [0.50, 0.33, 0.21, 0.16]), (0.04, -0.02, [0.52, 0.37, 0.24, 0.17]),
            (-0.14, 0.08, [0.48, 0.34, 0.22, 0.16]), (-0.3, 0.2, [0.40, 0.27, 0.17, 0.15])]
    for k, (x0, ang, lengths) in enumerate(rays):
        ang = -ang * 0.6 + (0 if standard else rng.normal(0, 0.03))
        cx, cy = x0 * H, wrist_y - 0.25 * H
        dirx, diry = np.sin(ang), -np.cos(ang)
        names = (["thumb_mc", "proximal", "distal"] if k == 0 else ["metacarpal", "proximal", "middle", "distal"])
        for i, (L, group) in enumerate(zip(lengths, names)):
            L *= H
            grow, cap, fuse = stage[group]
            r = (0.062 if i == 0 else 0.052 - 0.007 * i) * H
            # epiphysis at the distal end of metacarpals 2-5, at the proximal end of the others
            distal_epi = group == "metacarpal"
            gap = 0.028 * H * (1 - fuse) * (grow > 0)
            mx, my = cx + dirx * L / 2, cy + diry * L / 2
            hw = lambda v, r=r, L=L: r * (1 + 0.5 * np.exp(-(L / 2 - v) / (0.14 * L)) + 0.3 * np.exp(-(v + L / 2) / (0.1 * L)))  # noqa: E731
            shaft_len = L - gap - 0.05 * H
            off = (gap / 2) * (1 if distal_epi else -1)  # the shaft moves away from its epiphysis
            bx, by = mx - dirx * off, my - diry * off
            rod = cv.limb_rod(bx, by, ang, shaft_len, hw)
            canal = cv.limb_rod(bx, by, ang, shaft_len * 0.7, lambda v, r=r: r * 0.5 + 0 * v)
            cortical += rod - 0.9 * canal
            spongy += canal * 0.25
            soft += cv.limb_rod(mx, my, ang, L + 0.05 * H, lambda v, r=r: 2.4 * r + 0 * v, depth_ratio=0.9)
            if grow > 0:  # the epiphysis: a flat disc widening to its metaphysis, then capping it
                end = -1 if distal_epi else 1  # -1: distal end (toward the fingertip), +1: proximal
                ex = mx - dirx * end * (L / 2 - 0.015 * H)
                ey = my - diry * end * (L / 2 - 0.015 * H)
                ew = r * (1.3 if end > 0 else 1.2) * (0.35 + 0.65 * grow + 0.12 * cap)
                eh = 0.028 * H * (0.5 + 0.5 * grow)
                a = np.arange(0, 360, 30)
                shape = _ellipse_radii(a, ew, eh) * (1 + 0.35 * cap * _bump(np.deg2rad(a), 0, 20) + 0.35 * cap * _bump(np.deg2rad(a), 180, 20))
                epi = cv.dome(ex, ey, lambda th, o=_outline(a, shape): o(th - ang), ew * 1.5, ew * 0.7)
                spongy += 0.7 * epi + 0.3 * fuse * cv.limb_rod(ex, ey, ang, gap + 0.02 * H, lambda v, r=r: 1.1 * r + 0 * v)
            if k == 0 and i == 0:  # adductor sesamoid at the thumb's metacarpophalangeal joint
                ses = _smooth(10.8 + j(), 13.0 + j(), t) * (t > 10.8)
                if ses > 0:
                    sr = 0.022 * H * (0.3 + 0.7 * ses)
                    spongy += 0.8 * cv.ellipse(cx + dirx * L - 0.7 * r, cy + diry * L, sr, sr * 0.85, sr)
            cx, cy = cx + dirx * L, cy + diry * L
    for name, onset, x0, y0, a, b, axis, bumps in _CARPALS:
        on = onset + j() * (0.3 + 0.15 * onset)
        g = _smooth(on, on + 6.0, t) * (t > on)
        if g <= 0:
            continue
        s = (0.3 + 0.7 * g) * H
        ang = np.arange(0, 360, 15)
        th = np.deg2rad(ang)
        shape = 1 + sum(h * g * _bump(th, ba, 28) for ba, h in bumps)
        shape = shape * (1 + (1 - _smooth(2, 7, t - on)) * 0.08 * rng.standard_normal(ang.size) * (not standard))
        o = _outline(ang, _ellipse_radii(ang, a * s, b * s) * shape)
        spongy += 0.75 * cv.dome(x0 * H, wrist_y + y0 * H, lambda th, o=o, ax=np.deg2rad(axis): o(th - ax),
                                 1.6 * a * s, b * s)
        if name == "hamate" and g > 0.5:  # the hook, end-on: a dense ring
            hx, hy, hr = (x0 - 0.02) * H, wrist_y + (y0 + 0.02) * H, 0.025 * H * g
            spongy += 0.6 * (cv.ellipse(hx, hy, hr, hr) - 0.7 * cv.ellipse(hx, hy, 0.6 * hr, 0.6 * hr))
    # Radius (thumb side) and ulna, with their epiphyses: the radial one wedge-shaped, with a styloid.
    for group, xc, r, wedge in (("radius", 0.18, 0.14, 0.35), ("ulna", -0.22, 0.08, 0.0)):
        grow, cap, fuse = stage[group]
        top = wrist_y + 0.38 * H
        gap = 0.035 * H * (1 - fuse)
        hw = lambda y, r=r: r * H * (1 + 0.3 * np.exp(-np.clip(y - top, 0, None) / (0.35 * H)))  # noqa: E731
        shaft = cv.rod(xc * H, top + gap / 2, top + 4 * H, hw, depth_ratio=0.65, soft=1.0)
        can = cv.rod(xc * H, top + gap / 2, top + 4 * H, lambda y, hw=hw, r=r: hw(y) - 0.025 * H - 0.1 * r * H,
                     depth_ratio=0.65, soft=2.0)
        cortical += shaft - can
        spongy += can * (0.1 + 0.25 * np.exp(-np.clip(Y - top, 0, None) / (0.3 * H)))
        if grow > 0:
            ew = r * H * 1.3 * (0.3 + 0.7 * grow)
            eh = 0.045 * H * (0.4 + 0.6 * grow)
            a = np.arange(0, 360, 15)
            th = np.deg2rad(a)
            shape = _ellipse_radii(a, ew, eh) * (1 + wedge * grow * _bump(th, 315, 35) + 0.3 * cap * (_bump(th, 10, 15) + _bump(th, 170, 15)))
            spongy += 0.6 * cv.dome(xc * H, top - gap / 2 - eh * 0.9, _outline(a, shape), ew * 1.8, ew * 0.7,
                                    clip=lambda x, y, top=top, gap=gap: (y < top - gap / 2).astype(np.float32))
            scar = fuse * (1 - _smooth(15.5, mature_at, t))
            spongy += 0.9 * scar * cv.rod(xc * H, top - 0.006 * H, top + 0.006 * H, hw, soft=0.3)
    forearm = 0.42 * H * _smooth(wrist_y - 0.1 * H, wrist_y + 0.3 * H, Y)
    palm = cv.ellipse(0.05 * H, wrist_y - 0.2 * H, 0.6 * H, 0.5 * H, 0.16 * H)
    soft = np.maximum(soft * 0.5, palm) + np.sqrt(np.clip(forearm**2 - X**2, 0, None)) * 0.6
    grid = _grid_stream(rng)
    tex = cv.texture(grid, 0.6, 0.4)
    bone = 1.6 * density * (cortical + spongy * (1 + 0.12 * tex))
    box = (-0.55 * H, -1.35 * H, 0.65 * H, wrist_y + 0.6 * H)
    return _finish_film(rng, grid, cv, soft, bone, "hand", bone_age_months, sex, t, 1 - stage["radius"][2],
                        stage["radius"][0], t >= mature_at, box)


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
MONTH_DAYS = DAYS_PER_MONTH  # kneeage.conventions


def bone_age_sd_months(chron_months: np.ndarray, sex: str) -> np.ndarray:
    """SD of true bone age around chronological age in healthy children: the Brush Foundation SDs that
    Greulich & Pyle tabulate (``kneeage.reference``), under 1 month in early infancy, 9-13 months from
    school age on."""
    return sd_months(chron_months, sex)


def write_dicom(path, stored: np.ndarray, truth: PhantomTruth, *, birth, study, patient_id: str,
                syntax: str = "1.2.840.10008.1.2.1", body_part: str = "KNEE") -> None:
    """Write one phantom as a CR DICOM file (unique UIDs; identifying fields are synthetic)."""
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
    ds.PixelSpacing = [round(truth.pixel_spacing_mm, 6)] * 2  # calibrated to the patient plane
    ds.ImagerPixelSpacing = [round(truth.pixel_spacing_mm * truth.magnification, 6)] * 2  # at the detector
    ds.EstimatedRadiographicMagnificationFactor = round(truth.magnification, 4)
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
    out, i, seed, size, hands, fmt, knee_sizes = args
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
    knee_size = knee_sizes[i % len(knee_sizes)] if knee_sizes else size
    films = [(knee_name, render_knee(true_ba, sex, rng, knee_size), study, "KNEE", COHORT_SYNTAXES[i % len(COHORT_SYNTAXES)])]
    if hands:
        films.append((hand_name, render_hand(hand_ba, sex, rng, size), study + timedelta(days=hand_shift), "HAND",
                      COHORT_SYNTAXES[(i + 2) % len(COHORT_SYNTAXES)]))
    for name, ph, when, part, syntax in films:
        if fmt == "dicom":
            write_dicom(out / name, ph.stored, ph.truth, birth=birth, study=when, patient_id=pid, syntax=syntax, body_part=part)
        else:
            Image.fromarray((ph.pixels * 65535).astype(np.uint16)).save(out / name)
    knee, hand = films[0][1].truth, (films[1][1].truth if hands else None)
    mature = bool(knee.skeletally_mature)
    row = {"case_id": case, "image": knee_name, "sex": sex, "chronological_age_months": round(chron, 2),
           "reference_bone_age_months": round(max(0.0, read), 1), "hand_image": hand_name, "skeletally_mature": mature}
    if fmt != "dicom":  # a PNG has no header: the site states the pixel spacing (patient plane, mm) in the manifest
        row["pixel_spacing_mm"] = round(knee.pixel_spacing_mm, 5)
        row["hand_pixel_spacing_mm"] = round(hand.pixel_spacing_mm, 5) if hand else None
    truth = {"case_id": case, "true_bone_age_months": round(true_ba, 2), "hand_true_bone_age_months": round(hand_ba, 2),
             "hand_offset_days": hand_shift, "skeletally_mature": mature, "image_box": _box_text(knee.region_px),
             "hand_image_box": _box_text(hand.region_px) if hand else ""}
    return row, truth


def _box_text(box) -> str:
    """The region of interest as "x0,y0,x1,y1" (pixels), the crop-box convention of manifests."""
    return ",".join(f"{v:.1f}" for v in box)


def write_cohort(out, n: int, seed: int = 0, size: int = 512, hands: bool = False, fmt: str = "dicom",
                 progress=None, workers: int = 1, knee_sizes: tuple[int, ...] | None = None):
    """Write ``n`` synthetic subjects under ``out``: images/, manifest.csv and truth.csv.

    Chronological ages are uniform over 0-18 years; true bone age = chronological age + N(0, SD(age, sex))
    (``bone_age_sd_months``: the Brush Foundation SDs); the hand film is taken within ±3 months of the knee film; the reference
    read is the true bone age at the hand film plus reader noise N(0, READER_SD_MONTHS), moved to the
    knee film's date. ``fmt`` is "dicom" (CR, a mix of transfer syntaxes) or "png" (16-bit). ``size``: image
    rows; ``knee_sizes`` (optional): rows of the knee films, taken in turn (a cohort for training across
    detector pixel sizes), the hand films keeping ``size``.
    Returns the manifest as a pandas DataFrame.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), i, seed, size, hands, fmt, tuple(knee_sizes or ())) for i in range(n)]
    results = []
    if workers > 1:
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
    label, ba, sex, chron = DEMO_CASES[index]
    ph = render_knee(ba, sex, np.random.default_rng([777, index]), size)
    study = date(2026, 1, 15)
    birth = study - timedelta(days=round(chron * MONTH_DAYS))
    buf = io.BytesIO()
    write_dicom(buf, ph.stored, ph.truth, birth=birth, study=study, patient_id=f"DEMO{index + 1:03d}")
    return f"demo_case_{index + 1}.dcm", buf.getvalue()
