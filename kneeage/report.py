"""Exports: the single-case report (HTML, JSON) and the validation exports (per-case CSV, summary JSON,
HTML report, site bundle). Self-contained: images are embedded as PNG data URIs and plotly.js is
inlined, nothing is fetched, so a report opens offline. CSV cells that a spreadsheet would run as a
formula (starting with = + - @) are written with a leading apostrophe."""

from __future__ import annotations

import base64
import html
import io
import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import __version__

from .case import CaseResult
from .predict import FLAG_TEXT, interval_text

_CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}
.flag{background:#fff3cd;border-left:4px solid #e0a800;padding:.5rem 1rem;margin:.5rem 0}
.demo{background:#fde2e1;border-left:4px solid #c0392b;padding:.5rem 1rem;margin:.5rem 0}
table{border-collapse:collapse}td,th{padding:.25rem .75rem;border-bottom:1px solid #ddd;text-align:left}
.imgs{display:flex;gap:1rem}.imgs figure{margin:0}.imgs img{max-width:28rem;width:100%}"""


def png_data_uri(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def case_json(result: CaseResult, growth=None) -> str:
    """The result as JSON; ``growth`` (a :class:`kneeage.growth.GrowthResult`) adds the growth panel."""
    d = result.as_dict()
    if growth is not None:
        d["growth"] = growth.as_dict()
    return json.dumps(d, indent=2)


def growth_html(growth) -> str:
    """The growth panel (:class:`kneeage.growth.GrowthResult`) as an HTML section: value, range, source."""
    e = html.escape
    rows = "".join(f"<tr><th>{e(i.label)}</th><td>{e(i.text(3 if not i.unit else 1))}</td><td>{e(i.note)}</td>"
                   f"<td><small>{e(i.source)}</small></td></tr>" for i in growth.items)
    notes = "".join(f"<p>{e(n)}</p>" for n in growth.notes)
    lo, hi = growth.interval_months
    return (f"<h2>Growth (decision support)</h2><div class='flag'>{e(growth.statement)}</div>"
            f"<p>Ranges span the bone-age interval {lo:.1f} – {hi:.1f} months.</p>"
            f"<table><tr><th>Quantity</th><th>Value (range)</th><th>Note</th><th>Source</th></tr>{rows}</table>{notes}")


def case_html(result: CaseResult, model_input: np.ndarray, overlay_rgb: np.ndarray | None = None,
              saliency_method: str | None = None, growth=None) -> str:
    """A one-page report: flags first, then the numbers, the model input and the saliency overlay."""
    d = result.as_dict()
    e = html.escape
    if result.withheld:
        rows = [("Bone age", f"withheld: {d['refusal_text']}")]
    else:
        rows = [
            ("Bone age", f"{d['bone_age_years_months']} ({d['bone_age_months']:.1f} months)"
             + (f" — OVERRIDDEN: the model withheld this number ({d['refusal_text']})" if d["overridden"] else "")),
            (f"{d['interval_level']:.0%} interval", interval_text(d["interval_months"])),
            ("Per-fold values (months)", ", ".join(f"{v:.1f}" for v in d["fold_values_months"])),
        ]
    rows += [
        ("Sex", d["sex"]),
        ("Chronological age", "not given" if d["chronological_age_months"] is None
         else f"{d['chronological_age_months']:.1f} months"),
    ]
    if d["framing"] and d["framing"]["spacing_mm"]:
        f = d["framing"]
        rows.append(("Framing", f"{f['region_source']}; pixel spacing {f['spacing_mm'][0]:.3f} mm ({f['spacing_source']})"))
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
            f"{growth_html(growth) if growth is not None else ''}"
            f"<p><small>Generated locally by kneeage; this report contains no names, IDs or dates.</small></p>"
            f"</body></html>")


def withheld_text(summary: dict) -> str:
    """The cases the model withheld, by reason, and how its censored ones fared ("" when none)."""
    withheld = summary.get("withheld") or {}
    text = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in withheld.items())
    cens = summary.get("censored")
    if cens:
        text += (f"; of the {cens['n']} censored as skeletally mature, the reference read is at or above the model's "
                 f"bound in {cens['reference_at_or_above_bound']:.0%} and within 12 months below it in "
                 f"{cens['reference_within_12_months_below']:.0%}")
    return text


def coverage_text(summary: dict) -> str:
    """How often the model's interval holds the site's reference reads, overall and by band ("" without intervals)."""
    cov = summary.get("interval_coverage")
    if not cov:
        return ""
    return (f"the model's intervals hold {cov['overall']:.0%} of {cov['n']} reference reads ("
            + ", ".join(f"{b['band']}: {b['coverage']:.0%}, n={b['n']}" for b in cov["by_band"]) + "; by band of the estimate)")


def safe_csv(df: pd.DataFrame) -> str:
    """CSV text with formula-looking text cells neutralised."""
    def cell(v):
        return "'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r") else v
    return df.map(cell).to_csv(index=False)


def clinical_rows(clinical: dict | None) -> list[tuple[str, str]]:
    """Report rows for the clinical view of error (:func:`kneeage.growth.clinical_view`)."""
    if not clinical:
        return []
    rows = []
    for t, v in (clinical.get("over") or {}).items():
        rows.append((f"Error over {t} months (Wilson 95% CI)", f"{v['share']:.0%} ({v['ci'][0]:.0%} to {v['ci'][1]:.0%}); "
                     f"{v['n_over']} of {clinical['n']}"))
    k = clinical.get("sds_agreement")
    if k:
        m = k["matrix"]
        cells = "; ".join(f"{c}: " + "/".join(str(x) for x in m[i]) for i, c in enumerate(k["categories"]))
        rows.append(("Delayed/normal/advanced (±2 SD), Cohen's kappa (Fleiss-Cohen-Everitt 95% CI)",
                     f"{k['kappa']:.2f} ({k['ci'][0]:.2f} to {k['ci'][1]:.2f}); agreement {k['observed_agreement']:.0%}"))
        rows.append(("Confusion matrix, rows reference, columns model (delayed/normal/advanced)", cells))
    g = clinical.get("knee_growth")
    if g:
        rows.append((f"Remaining growth at the knee differs by > {g['threshold_cm']:g} cm",
                     f"{g['share']:.0%} ({g['ci'][0]:.0%} to {g['ci'][1]:.0%}); {g['n_over']} of {g['n']} "
                     f"(source: {g['source']})"))
    return rows


def validation_html(summary: dict, meta: dict, figures: dict) -> str:
    """The validation report: identity, summary table, comparisons, figures (plotly inlined once)."""
    e = html.escape
    demo = ('<div class="demo">Synthetic demo model: these numbers show how the validation works; they are '
            "not evidence about a clinical model.</div>") if meta.get("synthetic_demo") else ""
    if partial_notice(summary):
        demo += f'<div class="demo">{e(partial_notice(summary))}</div>'

    def num(k, fmt="{:.2f}"):
        v = summary.get(k)
        return "—" if v is None else fmt.format(v)

    def ci(k):
        v = summary.get(k)
        return "" if not v else f" ({v[0]:.2f} to {v[1]:.2f})"

    rows = [("Cases (with prediction and reference)", f"{summary.get('n', 0)} of {summary.get('n_cases', 0)}"),
            ("Failed to read", summary.get("n_failed", 0)),
            ("Withheld by the model (no number; left out of the statistics)", withheld_text(summary) or "none")]
    rows += [
            ("MAE (months, BCa 95% CI)", num("mae") + ci("mae_ci")), ("RMSE", num("rmse")),
            ("Bias, model − reference (t 95% CI)", num("bias") + ci("bias_ci")), ("SD of differences", num("sd")),
            ("95% limits of agreement", f"{num('loa_lower')} to {num('loa_upper')}"),
            ("Median absolute error", num("median_ae"))]
    for k, v in (summary.get("within") or {}).items():
        rows.append((f"Within {k} months", f"{v:.0%}"))
    for k, c in (summary.get("comparisons") or {}).items():
        rows.append((f"MAE model − {k} (paired bootstrap CI)",
                     f"{c['mae_difference']:.2f} ({c['mae_difference_ci'][0]:.2f} to {c['mae_difference_ci'][1]:.2f}); "
                     f"MAE of {k} {c['mae_other']:.2f}; Wilcoxon p {c['wilcoxon_p']:.3g}"))
    if coverage_text(summary):
        rows.append(("Interval coverage", coverage_text(summary)))
    rows += clinical_rows(summary.get("clinical"))
    rows += [(f"Not computed: {k}", v) for k, v in (summary.get("not_computed") or {}).items()]
    rc = summary.get("recalibration")
    if rc:
        rows.append(("Site recalibration (5-fold CV, linear)",
                     f"MAE {rc['mae_before']:.2f} → {rc['mae_after']:.2f}; line {rc['intercept']:.1f} + {rc['slope']:.3f}·x"))
    table = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    ident = "".join(f"<tr><th>{e(k)}</th><td>{e(str(meta.get(k, '')))}</td></tr>"
                    for k in ("site", "cohort", "model_name", "model_hash", "prediction_source", "kneeage_version", "created"))
    figs = "".join(f"<h2>{e(name.replace('_', ' ').capitalize())}</h2>" + fig.to_html(full_html=False, include_plotlyjs=(i == 0))
                   for i, (name, fig) in enumerate(figures.items()))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>kneeage validation — {e(str(meta.get('site', '')))}"
            f"</title><style>{_CSS}</style></head><body><h1>External validation</h1>{demo}<table>{ident}</table>"
            f"<h2>Agreement with the reference</h2><table>{table}</table>{figs}"
            f"<p><small>Formulas: docs/statistics.md. Differences are model − reference.</small></p></body></html>")


def partial_notice(summary: dict) -> str | None:
    """The sentence that marks an interrupted run's results and exports, or None for a finished run."""
    if summary.get("complete", True):
        return None
    return (f"PARTIAL RUN: {summary['n_pending']} of {summary['n_cases']} cases have no result yet (the run was "
            "interrupted); these results cover only the cases run so far.")


def validation_exports(cases: pd.DataFrame, summary: dict, meta: dict, figures: dict,
                       partial_bundle: bool = False) -> dict[str, bytes]:
    """cases.csv, summary.json, report.html and site_bundle.zip (de-identified per-case results, study
    metadata and model identity, for the study PI; no images), as bytes by file name. An interrupted
    run's exports are marked partial, and it gets no bundle unless ``partial_bundle`` (the PI insists)."""
    meta = meta | {"kneeage_version": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "complete": bool(summary.get("complete", True))}
    csv_text = safe_csv(cases).encode()
    summary_text = json.dumps(summary, indent=2).encode()
    out = {"cases.csv": csv_text, "summary.json": summary_text,
           "report.html": validation_html(summary, meta, figures).encode()}
    if meta["complete"] or partial_bundle:
        bundle = io.BytesIO()
        with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("cases.csv", csv_text)
            z.writestr("summary.json", summary_text)
            z.writestr("meta.json", json.dumps(meta, indent=2))
        out["site_bundle.zip"] = bundle.getvalue()
    return out


def write_validation(out: str | Path, cases: pd.DataFrame, summary: dict, meta: dict, figures: dict) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in validation_exports(cases, summary, meta, figures).items():
        paths[name.split(".")[0].replace("site_", "")] = out / name
        (out / name).write_bytes(data)
    return paths


def orh_html(orh: dict | None) -> str:
    """The reader study's primary analysis (Obuchowski-Rockette-Hillis, :mod:`kneeage.mrmc`) as an HTML
    table; the bootstrap in analysis.json is the sensitivity analysis."""
    from .mrmc import study_table

    if not orh:
        return ""
    t = study_table(orh)
    e = html.escape
    skipped = "".join(f"<p>Not computed — {e(k)}: {e(v)}</p>" for k, v in (orh.get("not_computed") or {}).items())
    if not len(t):
        return f"<h2>Primary analysis: ORH MRMC</h2>{skipped}"
    head = "".join(f"<th>{e(str(c))}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{e('' if pd.isna(v) else f'{v:.4g}' if isinstance(v, float) else str(v))}</td>"
                                    for v in row) + "</tr>" for row in t.itertuples(index=False))
    return (f"<h2>Primary analysis: ORH MRMC</h2><p>{e(orh['method'])}. Differences are the first condition minus "
            f"the second, in the figure of merit's units; the bootstrap over readers and cases in the JSON below "
            f"(assisted_vs_unassisted) is a sensitivity analysis.</p><table><tr>{head}</tr>{body}</table>{skipped}")


def study_exports(store, study_id: str, reads: pd.DataFrame | None = None, analysis: dict | None = None,
                  figs: dict | None = None) -> dict[str, bytes]:
    """The PI's reader-study exports: reads.csv, analysis.json, analysis.html, audit.csv (computed here
    unless the caller already has the reads, the analysis and the figures)."""
    from . import plots, readerstudy

    reads = readerstudy.reads_table(store, study_id) if reads is None else reads
    analysis = readerstudy.analyse(store, study_id, reads=reads) if analysis is None else analysis
    figs = plots.study_figures(reads, analysis) if figs is None else figs
    body = "".join(f"<h2>{html.escape(k.replace('_', ' ').capitalize())}</h2>" + f.to_html(full_html=False, include_plotlyjs=(i == 0))
                   for i, (k, f) in enumerate(figs.items()))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Reader study {html.escape(study_id)}</title>"
            f"<style>{_CSS}</style></head><body><h1>Reader study {html.escape(store.study(study_id)['name'])}</h1>"
            f"{orh_html(analysis.get('orh'))}"
            f"<pre>{html.escape(json.dumps(analysis, indent=2))}</pre>{body}</body></html>")
    return {"reads.csv": safe_csv(reads).encode(), "analysis.json": json.dumps(analysis, indent=2).encode(),
            "analysis.html": page.encode(), "audit.csv": safe_csv(store.audit_log(study_id)).encode()}
