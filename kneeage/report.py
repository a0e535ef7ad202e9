"""Exports: the single-case report (HTML, JSON) and the validation exports (per-case CSV, summary JSON,
HTML report, site bundle). Self-contained: images are embedded as PNG data URIs and plotly.js is
inlined, nothing is fetched, so a report opens offline. CSV cells that a spreadsheet would run as a
formula (starting with = + - @) are written with a leading apostrophe."""

from __future__ import annotations

import html
import io
import json
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, paper, plots, readerstudy, validation
from .case import CaseResult, interval_note
from .imaging import png_data_uri
from .mrmc import study_table
from .predict import FLAG_TEXT, interval_text
from .units import age_text, range_text

_CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}
.flag{background:#fff3cd;border-left:4px solid #e0a800;padding:.5rem 1rem;margin:.5rem 0}
.demo{background:#fde2e1;border-left:4px solid #c0392b;padding:.5rem 1rem;margin:.5rem 0}
table{border-collapse:collapse}td,th{padding:.25rem .75rem;border-bottom:1px solid #ddd;text-align:left}
.imgs{display:flex;flex-wrap:wrap;gap:1rem}.imgs figure{margin:0}
.imgs img{width:18rem;height:18rem;max-width:100%;object-fit:contain;image-rendering:auto;background:#000}"""


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


def growth_rows(growth) -> list[dict]:
    """The growth panel as a table: quantity, value and its range over the bone-age interval (rounded), unit,
    note, source."""
    def r(v, unit):
        return round(v, 1 if unit else 3)

    return [{"quantity": i.label, "value": r(i.value, i.unit), "low": r(i.low, i.unit), "high": r(i.high, i.unit),
             "unit": i.unit or "×", "note": i.note, "source": i.source} for i in growth.items]


def case_html(result: CaseResult, model_input: np.ndarray, overlay_rgb: np.ndarray | None = None,
              saliency_method: str | None = None, growth=None, patient: dict | None = None,
              when: datetime | None = None) -> str:
    """A one-page report: date and the patient fields the user typed (never stored), flags first, then the
    numbers (years and months, months in brackets), the model input and the saliency overlay at one size."""
    d = result.as_dict()
    e = html.escape
    when = when or datetime.now().astimezone()
    rows = [(k, v) for k, v in (patient or {}).items() if str(v or "").strip()]
    rows.append(("Report date", f"{when:%Y-%m-%d %H:%M}"))
    p = result.prediction
    if result.withheld:
        rows.append(("Bone age", f"withheld: {d['refusal_text']}"))
    else:
        rows += [
            ("Bone age", age_text(p.bone_age_months)
             + (f" — OVERRIDDEN: the model withheld this number ({d['refusal_text']})" if d["overridden"] else "")),
            (f"{d['interval_level']:.0%} interval", range_text(*p.interval_months, none=interval_text(None))),
            ("Per-fold values", ", ".join(age_text(v) for v in p.fold_values_months)),
        ]
    rows += [
        ("Sex", {"F": "female", "M": "male"}.get(d["sex"], d["sex"])),
        ("Chronological age", age_text(d["chronological_age_months"], none="not given")),
    ]
    if d["framing"] and d["framing"]["spacing_mm"]:
        f = d["framing"]
        rows.append(("Framing", f"{f['region_source']}; pixel spacing {f['spacing_mm'][0]:.3f} mm ({f['spacing_source']})"))
    if "bone_age_sds" in d:
        rows.append(("Bone-age SDS", f"{d['bone_age_sds']:+.2f} ({d['sds_category']}; reference: {d['sds_reference']})"))
    rows += [("Crop box (x0, y0, x1, y1)", ", ".join(map(str, d["crop_box"]))),
             ("Model", f"{d['model_name']} (hash {d['model_hash']})")]
    flags = "".join(f'<div class="flag">{e(FLAG_TEXT[f])}</div>' for f in d["flags"])
    if result.overridden:
        flags = f'<div class="demo">OVERRIDDEN: {e(d["refusal_text"] or "")} The number below is shown because the user asked for it.</div>' + flags
    demo = f'<div class="demo">{e(d["notice"])}</div>' if "notice" in d else ""
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    note = "" if result.withheld else f"<p><small>{e(interval_note(p))}</small></p>"
    imgs = f'<figure><img alt="model input" src="{png_data_uri((np.clip(model_input, 0, 1) * 255).astype(np.uint8))}"><figcaption>Model input</figcaption></figure>'
    if overlay_rgb is not None:
        imgs += f'<figure><img alt="saliency" src="{png_data_uri(overlay_rgb)}"><figcaption>Saliency: {e(saliency_method or "")}</figcaption></figure>'
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>kneeage report — {e(d['file'])}</title>"
            f"<style>{_CSS}</style></head><body><h1>Bone age from a knee radiograph</h1>"
            f"<p>File: {e(d['file'])}</p>{demo}{flags}<table>{table}</table>{note}<div class='imgs'>{imgs}</div>"
            f"{growth_html(growth) if growth is not None else ''}"
            f"<p><small>Generated locally by kneeage. "
            + ("The patient fields above were typed by the user for this report and are not stored anywhere."
               if any(str(v or "").strip() for v in (patient or {}).values())
               else "This report contains no names or IDs.") + "</small></p>"
            "</body></html>")


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
    """The validation report as a paper's results section (:func:`kneeage.paper.results_html`: methods, results
    with CIs, tables, figures with plotly inlined once, references), then the details: identity, withheld cases,
    the clinical view, recalibration."""
    e = html.escape
    rows = [("Failed to read", summary.get("n_failed", 0)),
            ("Withheld by the model (no number; left out of the statistics)", withheld_text(summary) or "none")]
    rows += clinical_rows(summary.get("clinical"))
    rc = summary.get("recalibration")
    if rc:
        rows.append(("Site recalibration (5-fold cross-validated line)",
                     f"MAE {rc['mae_before']:.2f} → {rc['mae_after']:.2f} mo; line {rc['intercept']:.1f} + {rc['slope']:.3f}·x"))
    rows += [(k.replace("_", " ").capitalize(), meta.get(k, "")) for k in
             ("site", "cohort", "model_name", "model_hash", "prediction_source", "kneeage_version", "created")]
    details = ("<h2>Details</h2><table>" + "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
               + "</table><p class='caption'>Formulas: docs/statistics.md. Differences are model − reference.</p>")
    notices = (notice,) if (notice := partial_notice(summary)) else ()
    return paper.results_html(summary, meta, figures, notices, details)


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
           "report.html": validation_html(summary, meta, figures).encode(),
           "report.pdf": paper.results_pdf(summary, meta, cases, partial_notice(summary))}
    if meta["complete"] or partial_bundle:
        bundle = io.BytesIO()
        with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("cases.csv", csv_text)
            z.writestr("summary.json", summary_text)
            z.writestr("meta.json", json.dumps(meta, indent=2))
        out["site_bundle.zip"] = bundle.getvalue()
    return out


@dataclass(frozen=True)
class RunReport:
    """A stored validation run as the validation page shows it and ``python -m kneeage validate`` writes it."""

    cases: pd.DataFrame  # the per-case table (cases.csv)
    summary: dict  # the summary as exported (summary.json)
    meta: dict  # site, cohort, model identity
    figures: dict  # the report's plotly figures by name
    files: dict  # the export files (validation_exports) as bytes by file name


def run_report(store, run_id: str, partial_bundle: bool = False) -> RunReport:
    """A stored run's table, summary, figures and export files (``partial_bundle``: see validation_exports)."""
    cases, result, meta = validation.results_for(store, run_id)
    summary = result.as_dict()
    figures = plots.validation_figures(cases, summary, plots.DEMO_NOTE if meta["synthetic_demo"] else None)
    return RunReport(cases, summary, meta, figures, validation_exports(cases, summary, meta, figures, partial_bundle))


def write_validation(out: str | Path, files: dict[str, bytes]) -> dict[str, Path]:
    """Write a run's export files (:attr:`RunReport.files`) into ``out``; their paths by kind (report,
    report_pdf, bundle, cases, summary)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in files.items():
        stem, ext = name.rsplit(".", 1)
        paths[stem.replace("site_", "") + ("_pdf" if ext == "pdf" else "")] = out / name
        (out / name).write_bytes(data)
    return paths


def orh_html(orh: dict | None) -> str:
    """The reader study's primary analysis (Obuchowski-Rockette-Hillis, :mod:`kneeage.mrmc`) as an HTML
    table; the bootstrap in analysis.json is the sensitivity analysis."""
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
            f"the second, in the figure of merit's units; the bootstrap over readers and cases (below, and "
            f"assisted_vs_unassisted in analysis.json) is a sensitivity analysis.</p><table><tr>{head}</tr>{body}</table>{skipped}")


def study_exports(store, study_id: str, reads: pd.DataFrame | None = None, analysis: dict | None = None,
                  figs: dict | None = None) -> dict[str, bytes]:
    """The PI's reader-study exports: reads.csv, analysis.json, analysis.html, audit.csv (computed here
    unless the caller already has the reads, the analysis and the figures)."""
    reads = readerstudy.reads_table(store, study_id) if reads is None else reads
    analysis = readerstudy.analyse(store, study_id, reads=reads).as_dict() if analysis is None else analysis
    figs = plots.study_figures(reads, analysis) if figs is None else figs
    protocol, _ = readerstudy.study_protocol(store, study_id)
    page = paper.study_html(store.study(study_id)["name"], analysis, readerstudy.why_missing(analysis, reads, protocol), figs,
                            orh_html(analysis.get("orh")))
    return {"reads.csv": safe_csv(reads).encode(), "analysis.json": json.dumps(analysis, indent=2).encode(),
            "analysis.html": page.encode(), "audit.csv": safe_csv(store.audit_log(study_id)).encode()}
