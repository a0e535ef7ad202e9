"""Contact sheet of phantoms across bone ages, both sexes (docs and the app's about page)."""

from __future__ import annotations

import numpy as np


def contact_sheet(kind: str = "knee", ages_years=(0, 1, 3, 5, 8, 11, 13, 15, 18), tile: int = 200, seed: int = 0):
    """Return a PIL image: one row per sex (F above, M below), one column per bone age, labelled."""
    from PIL import Image, ImageDraw

    from .phantom import render_hand, render_knee

    render = render_knee if kind == "knee" else render_hand
    sheet = Image.new("L", (tile * len(ages_years), int(tile * 1.2) * 2 + 20), 0)
    draw = ImageDraw.Draw(sheet)
    for r, sex in enumerate("FM"):
        for c, age in enumerate(ages_years):
            ph = render(age * 12.0, sex, rng=seed + 97 * c + r, size=int(tile * 1.2), standard=True)
            im = Image.fromarray((ph.pixels * 255).astype(np.uint8)).resize((tile, int(tile * 1.2)))
            sheet.paste(im, (c * tile, r * int(tile * 1.2)))
            draw.text((c * tile + 4, r * int(tile * 1.2) + int(tile * 1.2) - 14), f"{sex} BA {age} y", fill=255)
    draw.text((4, sheet.height - 16), "SYNTHETIC PHANTOMS - NOT PATIENT DATA", fill=200)
    return sheet
