"""Preprocessing shared by training and inference, and training augmentations.

Pipeline: knee region (whole image, automatic crop, or a user/manifest crop box) → aspect-preserving
resize with zero padding to a square ``size`` → clip to the 1st-99th percentile of the region and scale
to [0, 1] (robust to exposure) → the network sees ``(x - 0.5) / 0.25``. Models framed in millimetres
(:func:`window_input`) may also equalise the window (``intensity="equalise"``): each pixel becomes its rank
among the window's pixels, so any monotone change of the grey scale (gamma, a LUT, contrast) gives the
same input.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from scipy import stats

from .errors import InputError



def parse_box(text) -> tuple[int, int, int, int] | None:
    """A crop box "x0,y0,x1,y1" (pixels of the original image) or None for an empty value."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or str(text).strip() == "":
        return None
    try:
        x0, y0, x1, y1 = (int(round(float(v))) for v in str(text).replace(";", ",").split(","))
    except ValueError:
        raise InputError(f"Crop box {text!r} is not four numbers x0,y0,x1,y1.") from None
    return x0, y0, x1, y1


def auto_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """Automatic knee region: trim collimated (flat, bright) borders, then the central square of what is left."""
    h, w = pixels.shape
    k = max(1, max(h, w) // 512)  # judge the borders on every k-th row and column
    view = pixels[::k, ::k]
    rows_flat = (view.std(1) < 0.02) & (view.mean(1) > 0.9)
    cols_flat = (view.std(0) < 0.02) & (view.mean(0) > 0.9)
    r = np.flatnonzero(~rows_flat)
    c = np.flatnonzero(~cols_flat)
    y0, y1 = (int(r[0]) * k, min(h, int(r[-1]) * k + k)) if r.size else (0, h)
    x0, x1 = (int(c[0]) * k, min(w, int(c[-1]) * k + k)) if c.size else (0, w)
    side = min(y1 - y0, x1 - x0)
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    return cx - side // 2, cy - side // 2, cx - side // 2 + side, cy - side // 2 + side


def resolve_box(pixels: np.ndarray, box="full") -> tuple[int, int, int, int]:
    """The region as pixel bounds (x0, y0, x1, y1) clipped to the image: "full"/None (whole image),
    "auto"/"" (automatic crop), text "x0,y0,x1,y1" or four numbers; refuses regions under 16 px."""
    h, w = pixels.shape
    if box is None or box == "full":
        return 0, 0, w, h
    if isinstance(box, str):
        box = "auto" if box.strip() in ("", "auto") else parse_box(box)
    if box == "auto":
        return auto_box(pixels)
    b = tuple(int(round(v)) for v in box)
    x0, x1 = sorted((min(max(b[0], 0), w), min(max(b[2], 0), w)))
    y0, y1 = sorted((min(max(b[1], 0), h), min(max(b[3], 0), h)))
    if x1 - x0 < 16 or y1 - y0 < 16:
        raise InputError(f"Crop box {b} leaves less than 16 px of the {w}x{h} image.")
    return x0, y0, x1, y1


def crop(pixels: np.ndarray, box="full") -> np.ndarray:
    """Cut the region (see :func:`resolve_box`)."""
    x0, y0, x1, y1 = resolve_box(pixels, box)
    return pixels[y0:y1, x0:x1]


def to_input(pixels: np.ndarray, size: int, box="full", percentiles=(1, 99)) -> np.ndarray:
    """Region → square float32 image in [0, 1] of side ``size`` (aspect kept, zero padded); intensities
    clipped to the region's ``percentiles`` ((0, 100): its minimum and maximum)."""
    region = crop(pixels, box)
    f = max(region.shape) // (2 * size)
    if f >= 2:  # large images: average f×f blocks first (cheap, in Pillow), then the exact resize below
        region = np.asarray(Image.fromarray(np.ascontiguousarray(region, np.float32), mode="F").reduce(f))
    step = max(1, int(math.sqrt(region.size / 262_144)))  # percentiles from at most ~512² pixels
    lo, hi = np.percentile(region[::step, ::step], list(percentiles))
    region = np.clip((region - lo) / (hi - lo + 1e-6), 0, 1).astype(np.float32)
    h, w = region.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(region, mode="F").resize((nw, nh), Image.BILINEAR), dtype=np.float32)
    out = np.zeros((size, size), np.float32)
    oy, ox = (size - nh) // 2, (size - nw) // 2
    out[oy : oy + nh, ox : ox + nw] = np.clip(resized, 0, 1)
    return out


def normalisation_text(spacing_mm: float | None, intensity: str = "percentile") -> str:
    """The model card's one-line description of the preprocessing."""
    if spacing_mm is None:
        return "crop, aspect-preserving resize with zero padding, 1st-99th percentile clip to [0,1], then (x-0.5)/0.25"
    how = ("1st-99th percentile clip to [0,1], then each pixel's rank among the window's pixels (histogram "
           "equalisation)") if intensity == "equalise" else "1st-99th percentile clip to [0,1]"
    return f"a fixed physical window resampled to {spacing_mm:g} mm per pixel around the localised region, {how}, then (x-0.5)/0.25"


def equalise(img: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Histogram equalisation: each pixel of ``img`` where ``inside`` holds becomes its mid-rank among
    them, (rank − ½) / n in (0, 1) (ties share their average rank); pixels outside become 0."""
    out = np.zeros_like(img, dtype=np.float32)
    vals = img[inside]
    if vals.size:
        out[inside] = ((stats.rankdata(vals) - 0.5) / vals.size).astype(np.float32)
    return out


def window_input(pixels: np.ndarray, centre_xy, spacing_mm, size: int, out_spacing_mm: float,
                 percentiles=(1, 99), intensity: str = "percentile") -> np.ndarray:
    """A physical window → square float32 image in [0, 1] of side ``size`` at ``out_spacing_mm`` mm per pixel.

    The window (``size`` × ``out_spacing_mm`` mm on each side) is centred on ``centre_xy`` (image pixels)
    of an image whose pixels are ``spacing_mm`` (row, column) mm apart; what lies outside the image is 0.
    The window is resampled first (what lies beyond the image edge repeats the edge), then intensities are
    clipped to the ``percentiles`` of the part inside the image at the working spacing, so the same anatomy
    gives the same input whatever the detector's pixel size and per-pixel noise (tested);
    ``intensity="equalise"`` then equalises that part (:func:`equalise`)."""
    h, w = pixels.shape
    sy, sx = (float(v) for v in spacing_mm)
    half_x, half_y = size * out_spacing_mm / 2 / sx, size * out_spacing_mm / 2 / sy
    cx, cy = centre_xy
    x0, y0 = int(math.floor(cx - half_x)), int(math.floor(cy - half_y))
    x1, y1 = int(math.ceil(cx + half_x)), int(math.ceil(cy + half_y))
    if x1 - x0 < 2 or y1 - y0 < 2 or x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise InputError(f"The {size * out_spacing_mm:.0f} mm window around ({cx:.0f}, {cy:.0f}) falls outside the {w}x{h} image.")
    inside = pixels[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)].astype(np.float32, copy=False)
    region = np.pad(inside, ((max(-y0, 0), max(y1 - h, 0)), (max(-x0, 0), max(x1 - w, 0))), mode="edge")
    f = min(region.shape) // (2 * size)
    img = Image.fromarray(region, mode="F")
    if f >= 2:  # average f×f blocks first, then the exact resample below
        img = img.reduce(f)
    # The exact window in the (reduced) region's coordinates, resampled to size × size.
    k = region.shape[1] / img.size[0], region.shape[0] / img.size[1]
    bx0, by0 = (cx - half_x - x0) / k[0], (cy - half_y - y0) / k[1]
    bx1, by1 = (cx + half_x - x0) / k[0], (cy + half_y - y0) / k[1]
    out = np.asarray(img.resize((size, size), Image.BILINEAR, box=(bx0, by0, bx1, by1)), np.float32)
    t = (np.arange(size) + 0.5) / size  # output pixel centres in image pixels: on the film or not
    xs, ys = cx - half_x + 2 * half_x * t, cy - half_y + 2 * half_y * t
    on = ((ys >= 0) & (ys < h))[:, None] & ((xs >= 0) & (xs < w))[None, :]
    lo, hi = np.percentile(out[on], list(percentiles)) if on.any() else (0.0, 1.0)
    out = np.where(on, np.clip((out - lo) / (hi - lo + 1e-6), 0, 1), 0).astype(np.float32)
    return equalise(out, on) if intensity == "equalise" else out


def normalise(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] image → network input."""
    return (x - 0.5) / 0.25


def augment(x: torch.Tensor, generator: torch.Generator | None = None, strong: bool = False,
            grey_scale: bool = True) -> torch.Tensor:
    """Random flip, rotation (±10°), scale (0.9-1.1), shift (±5%), brightness, contrast, gamma and noise.

    ``strong`` (physically framed models, for invariance): scale 0.85-1.15 (spacing and magnification
    errors), shift ±8% (localiser error, a user's box), gamma 0.5-2, contrast 0.3-1.3, noise SD up to
    0.06, blur or CR-like edge enhancement. ``grey_scale`` False leaves brightness, contrast and gamma alone
    (an equalised input does not see them). ``x``: (N, 1, H, W) in [0, 1] on any device; returns the same
    shape in [0, 1]."""
    n, dev = x.shape[0], x.device
    gdev = generator.device if generator is not None else dev

    def u(lo, hi):
        return (torch.rand(n, generator=generator, device=gdev) * (hi - lo) + lo).to(dev)

    ang = u(-10, 10) * math.pi / 180
    sc = u(0.85, 1.15) if strong else u(0.9, 1.1)
    shift = 0.08 if strong else 0.05
    flip = (u(0, 1) < 0.5).float() * 2 - 1
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, :, 2] = torch.stack([u(-shift, shift), u(-shift, shift)], 1) * 2
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    if strong:  # blur (sigma ~1 px) or edge enhancement, mixed per image
        k = torch.tensor([0.25, 0.5, 0.25], device=dev)
        blur = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), (k[:, None] * k[None, :])[None, None])
        x = x + u(-1.0, 0.8).view(n, 1, 1, 1) * (x - blur)
    gamma = torch.exp(u(-0.69, 0.69) if strong else u(-0.25, 0.25)).view(n, 1, 1, 1)
    contrast = (u(0.3, 1.3) if strong else u(0.8, 1.2)).view(n, 1, 1, 1)
    brightness = u(-0.08, 0.08).view(n, 1, 1, 1)
    if grey_scale:
        x = (x.clamp(0, 1) ** gamma - 0.5) * contrast + 0.5 + brightness
    noise = torch.randn(x.shape, generator=generator, device=gdev).to(dev) * u(0, 0.06 if strong else 0.03).view(n, 1, 1, 1)
    return (x + noise).clamp(0, 1)
