"""Exports: the single-case report (HTML and JSON). Self-contained: images are embedded as PNG data
URIs, no scripts or fonts are fetched, so a report opens offline and leaves nothing behind."""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np
from PIL import Image

from .case import CaseResult
from .predict import FLAG_TEXT

_CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}
.flag{background:#fff3cd;border-left:4px solid #e0a800;padding:.5rem 1rem;margin:.5rem 0}
.demo{background:#fde2e1;border-left:4px solid #c0392b;padding:.5rem 1rem;margin:.5rem 0}
table{border-collapse:collapse}td,th{padding:.25rem .75rem;border-bottom:1px solid #ddd;text-align:left}
.imgs{display:flex;gap:1rem}.imgs figure{margin:0}.imgs img{max-width:28rem;width:100%}"""


def png_data_uri(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def case_json(result: CaseResult) -> str:
    return json.dumps(result.as_dict(), indent=2)


def case_html(result: CaseResult, model_input: np.ndarray, overlay_rgb: np.ndarray | None = None,
              saliency_method: str | None = None) -> str:
    """A one-page report: flags first, then the numbers, the model input and the saliency overlay."""
    d = result.as_dict()
    e = html.escape
    lo, hi = d["interval_months"]
    rows = [
        ("Bone age", f"{d['bone_age_years_months']} ({d['bone_age_months']:.1f} months)"),
        (f"{d['interval_level']:.0%} interval", f"{lo:.1f} – {hi:.1f} months"),
        ("Per-fold values (months)", ", ".join(f"{v:.1f}" for v in d["fold_values_months"])),
        ("Sex", d["sex"]),
        ("Chronological age", "not given" if d["chronological_age_months"] is None
         else f"{d['chronological_age_months']:.1f} months"),
    ]
    if "bone_age_sds" in d:
        rows.append(("Bone-age SDS", f"{d['bone_age_sds']:+.2f} ({d['sds_category']}; reference: {d['sds_reference']})"))
    rows += [("Crop box (x0, y0, x1, y1)", ", ".join(map(str, d["crop_box"]))),
             ("Model", f"{d['model_name']} (hash {d['model_hash']})")]
    flags = "".join(f'<div class="flag">{e(FLAG_TEXT[f])}</div>' for f in d["flags"])
    demo = f'<div class="demo">{e(d["notice"])}</div>' if "notice" in d else ""
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    imgs = f'<figure><img alt="model input" src="{png_data_uri((np.clip(model_input, 0, 1) * 255).astype(np.uint8))}"><figcaption>Model input</figcaption></figure>'
    if overlay_rgb is not None:
        imgs += f'<figure><img alt="saliency" src="{png_data_uri(overlay_rgb)}"><figcaption>Saliency: {e(saliency_method or "")}</figcaption></figure>'
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>kneeage report — {e(d['file'])}</title>"
            f"<style>{_CSS}</style></head><body><h1>Bone age from a knee radiograph</h1>"
            f"<p>File: {e(d['file'])}</p>{demo}{flags}<table>{table}</table><div class='imgs'>{imgs}</div>"
            f"<p><small>Generated locally by kneeage; this report contains no names, IDs or dates.</small></p>"
            f"</body></html>")
