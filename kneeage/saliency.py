"""How well a saliency map points at what a radiologist reads: the physes.

A knee's bone age is read at its growth plates (physes): their width, the epiphyses capping the
metaphyses, and fusion. A phantom's truth knows where they run (``PhantomTruth.physes_px``), so a
saliency method can be scored on phantoms: the share of the map's mass that lies within ``band_mm``
of a physis, against the share of the model input that band covers (what a uniform map would score).
``bench/saliency_physes.py`` measures every method of a model this way; the method with the larger
share on the physes becomes the model's default (recorded in its card, ``results.saliency_on_physes``),
and ``docs/saliency.md`` reports the numbers.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .localise import Framing

DEFAULT_BAND_MM = 5.0


def to_input_xy(points_px, framing: Framing, size: int) -> np.ndarray:
    """Image pixel points (column, row) → model-input coordinates (column, row) for a physically framed
    model (the window maps linearly onto the ``size`` × ``size`` input)."""
    if framing.window_px is None:
        raise ValueError("the model is not physically framed; its input has no fixed window.")
    x0, y0, x1, y1 = framing.window_px
    p = np.asarray(points_px, float).reshape(-1, 2)
    return np.stack([(p[:, 0] - x0) / (x1 - x0) * size, (p[:, 1] - y0) / (y1 - y0) * size], 1)


def physis_mask(physes_px, framing: Framing, size: int, band_mm: float = DEFAULT_BAND_MM,
                input_spacing_mm: float = 1.0) -> np.ndarray:
    """Boolean (size, size): model-input pixels within ``band_mm`` of any physis line."""
    from PIL import Image, ImageDraw

    k = 4  # draw the lines at 4× and measure distances there, so thin lines are not lost
    canvas = Image.new("L", (size * k, size * k), 0)
    draw = ImageDraw.Draw(canvas)
    for line in physes_px:
        xy = to_input_xy(line, framing, size) * k
        draw.line([tuple(v) for v in xy], fill=255, width=1)
    lines = np.asarray(canvas) > 0
    if not lines.any():
        return np.zeros((size, size), bool)
    dist = ndimage.distance_transform_edt(~lines) / k * input_spacing_mm  # mm from the nearest physis
    return dist.reshape(size, k, size, k).min(axis=(1, 3)) <= band_mm


def mass_share(saliency: np.ndarray, mask: np.ndarray) -> float:
    """The share of the map's mass inside ``mask`` (NaN for an empty map)."""
    s = np.clip(np.asarray(saliency, float), 0, None)
    total = s.sum()
    return float(s[mask].sum() / total) if total > 0 else float("nan")
