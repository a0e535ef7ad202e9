"""Contact sheets of phantoms across bone ages and both sexes, and a phantom beside a real CR, for
``docs/phantoms.md``: ``python -m kneeage.contact_sheet docs/img``.

Each tile shows the same physical window (millimetres) around the knee or hand, so a small child's
knee looks small, as it does on the film.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pydicom.data import get_testdata_file

from .imaging import load_radiograph
from .phantom import render_hand, render_knee

WINDOW_MM = {"knee": (150.0, 120.0), "hand": (270.0, 190.0)}  # height, width of each tile's window


def _tile(ph, kind: str, tile_w: int):
    """The phantom's pixels in a fixed physical window around its region, resized to the tile."""
    x0, y0, x1, y1 = ph.truth.region_px
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hmm, wmm = WINDOW_MM[kind]
    s = ph.truth.pixel_spacing_mm
    h, w = int(hmm / s), int(wmm / s)
    canvas = np.zeros((h, w), np.float32)
    r0, c0 = int(cy - h / 2), int(cx - w / 2)
    src = ph.pixels[max(r0, 0) : r0 + h, max(c0, 0) : c0 + w]
    canvas[max(-r0, 0) : max(-r0, 0) + src.shape[0], max(-c0, 0) : max(-c0, 0) + src.shape[1]] = src
    return Image.fromarray((canvas * 255).astype(np.uint8)).resize((tile_w, int(tile_w * hmm / wmm)))


def contact_sheet(kind: str = "knee", ages_years=(0.5, 1, 3, 5, 8, 11, 13, 14.5, 16, 18), tile: int = 160, seed: int = 0):
    """A PIL image: one row per sex (girls above, boys below), one column per bone age, labelled;
    standard acquisition (24×30 cm film, centred, unrotated)."""
    render = render_knee if kind == "knee" else render_hand
    th = int(tile * WINDOW_MM[kind][0] / WINDOW_MM[kind][1])
    sheet = Image.new("L", (tile * len(ages_years), th * 2 + 20), 0)
    draw = ImageDraw.Draw(sheet)
    for r, sex in enumerate("FM"):
        for c, age in enumerate(ages_years):
            ph = render(age * 12.0, sex, rng=seed + 97 * c + r, size=900, standard=True)
            sheet.paste(_tile(ph, kind, tile), (c * tile, r * th))
            draw.text((c * tile + 4, r * th + th - 14), f"{sex} BA {age:g} y", fill=255)
    draw.text((4, sheet.height - 16), f"SYNTHETIC PHANTOMS - NOT PATIENT DATA ({WINDOW_MM[kind][1]:.0f} mm wide tiles)", fill=200)
    return sheet


def beside_real(height: int = 420):
    """pydicom-data's real CR of a lower leg (RG3_UNCR.dcm: tibia and fibula, 25 years old) beside an
    adolescent knee phantom and a child's, all through kneeage's own decoding and display (min-max of
    the decoded pixels)."""
    films = [("real CR (pydicom-data RG3)", load_radiograph(get_testdata_file("RG3_UNCR.dcm")).pixels),
             ("phantom, boy, BA 16.5 y", render_knee(198, "M", rng=3, size=1024).pixels),
             ("phantom, girl, BA 9 y", render_knee(108, "F", rng=4, size=1024).pixels)]
    ims = []
    for label, p in films:
        im = Image.fromarray((p * 255).astype(np.uint8))
        im = im.resize((int(height * im.width / im.height), height))
        ImageDraw.Draw(im).text((6, height - 16), label, fill=255)
        ims.append(im)
    out = Image.new("L", (sum(i.width for i in ims) + 10 * (len(ims) - 1), height), 0)
    x = 0
    for im in ims:
        out.paste(im, (x, 0))
        x += im.width + 10
    return out


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")
    contact_sheet("knee").save(out / "phantom_knees.png")
    contact_sheet("hand").save(out / "phantom_hands.png")
    beside_real().save(out / "phantom_vs_real.png")
    print(f"wrote phantom_knees.png, phantom_hands.png, phantom_vs_real.png to {out}")
