"""Validation and pooling results written as a paper's results section: every estimate with its 95% CI and
unit, tidy tables (age bands in age order, no raw keys, no empty cells), a plain sentence per comparison
that says which method is better and whether the CI excludes zero, interval coverage overall and by band,
and a methods paragraph. The pages render these; :func:`results_html` and :func:`results_pdf` export them
(the PDF through fpdf2, pure Python). Files are named by :func:`export_name` (site, cohort, date).

Numbers come from the summary JSON (:meth:`kneeage.validation.ValidationSummary.as_dict`) and the pooled
JSON (:meth:`kneeage.validation.PoolResult.as_dict`); nothing is computed here but presentation.
"""

from __future__ import annotations

import html
import math
import re
from datetime import date

import pandas as pd

from . import __version__
from .predict import REFUSALS
from .stats import N_BOOT

BANDS = ("0-5 y", "5-10 y", "10-13 y", "13-16 y", "16+ y")
REFERENCES = [
    "Bland JM, Altman DG. Statistical methods for assessing agreement between two methods of clinical measurement. "
    "Lancet 1986;1:307-310.",
    "Bland JM, Altman DG. Measuring agreement in method comparison studies. Stat Methods Med Res 1999;8:135-160.",
    "Efron B. Better bootstrap confidence intervals. J Am Stat Assoc 1987;82:171-185 (BCa).",
    "Passing H, Bablok W. A new biometrical procedure for testing the equality of measurements from two different "
    "analytical methods. J Clin Chem Clin Biochem 1983;21:709-720.",
    "Lin LI. A concordance correlation coefficient to evaluate reproducibility. Biometrics 1989;45:255-268.",
    "DerSimonian R, Laird N. Meta-analysis in clinical trials. Control Clin Trials 1986;7:177-188.",
    "Greulich WW, Pyle SI. Radiographic Atlas of Skeletal Development of the Hand and Wrist, 2nd ed. Stanford "
    "University Press, 1959.",
]
DEMO_NOTICE = ("Synthetic demo model: these numbers show how validation works; they are not evidence about a "
               "clinical model.")


# ---------------------------------------------------------------------------------------- numbers


def _ok(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def num(v, digits: int = 1, signed: bool = False) -> str:
    return "—" if not _ok(v) else f"{float(v):{'+' if signed else ''}.{digits}f}"


def ci(pair, digits: int = 1) -> str:
    """'3.1 to 5.4' (a CI written with "to", so negative limits read clearly)."""
    if not pair or not all(_ok(v) for v in pair):
        return "—"
    return f"{float(pair[0]):.{digits}f} to {float(pair[1]):.{digits}f}"


def pct(v) -> str:
    return "—" if not _ok(v) else f"{float(v):.0%}"


def p_text(p) -> str:
    """A p-value to three decimals, '<0.001' below that."""
    return "—" if not _ok(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def estimate(v, pair=None, unit: str = " mo", digits: int = 1, signed: bool = False) -> str:
    """'4.2 mo (95% CI 3.1 to 5.4)'."""
    text = f"{num(v, digits, signed)}{unit if _ok(v) else ''}"
    return text + (f" (95% CI {ci(pair, digits)})" if pair and _ok(v) else "")


# ------------------------------------------------------------------------------------ validation


def headline(summary: dict) -> list[dict]:
    """The metrics shown first, each with its CI in words (label, value, ci); months."""
    out = [{"label": "Cases", "value": f"{summary.get('n', 0)} / {summary.get('n_cases', 0)}",
            "ci": f"with a prediction and a reference; {summary.get('n_failed', 0)} could not be read"}]
    if _ok(summary.get("mae")):
        out.append({"label": "MAE (months)", "value": num(summary["mae"], 2), "ci": f"95% CI {ci(summary.get('mae_ci'), 2)} (BCa)"})
    if _ok(summary.get("bias")):
        out.append({"label": "Bias (months)", "value": num(summary["bias"], 2, True),
                    "ci": f"model − reference; 95% CI {ci(summary.get('bias_ci'), 2)}"})
    if _ok(summary.get("loa_lower")):
        out.append({"label": "95% limits of agreement (months)", "value": f"{num(summary['loa_lower'])} to {num(summary['loa_upper'])}",
                    "ci": f"95% CIs: lower {ci(summary.get('loa_lower_ci'))}, upper {ci(summary.get('loa_upper_ci'))}"})
    return out


def agreement_table(summary: dict) -> pd.DataFrame:
    """Quantity, estimate, 95% CI, method: the agreement of the model with the reference."""
    rows = [("Cases analysed", f"{summary.get('n', 0)} of {summary.get('n_cases', 0)}", "", "with a prediction and a reference")]

    def add(label, v, pair, method, digits=2, signed=False, unit="mo"):
        if _ok(v):
            rows.append((f"{label} ({unit})" if unit else label, num(v, digits, signed), ci(pair, digits), method))

    add("MAE", summary.get("mae"), summary.get("mae_ci"), "BCa bootstrap")
    add("RMSE", summary.get("rmse"), None, "")
    add("Median absolute error", summary.get("median_ae"), None, "")
    add("Bias, model − reference", summary.get("bias"), summary.get("bias_ci"), "t interval", signed=True)
    add("SD of differences", summary.get("sd"), None, "ddof = 1")
    add("Lower limit of agreement", summary.get("loa_lower"), summary.get("loa_lower_ci"), "Bland & Altman 1999")
    add("Upper limit of agreement", summary.get("loa_upper"), summary.get("loa_upper_ci"), "Bland & Altman 1999")
    add("Proportional bias, slope of difference on mean", summary.get("proportional_bias_slope"),
        summary.get("proportional_bias_slope_ci"), "least squares", digits=3, unit="")
    cc = summary.get("concordance") or {}
    add("Lin's concordance correlation", cc.get("ccc"), cc.get("ci"), "Lin 1989", digits=3, unit="")
    pb = summary.get("passing_bablok") or {}
    add("Passing-Bablok slope", pb.get("slope"), pb.get("slope_ci"), "Passing & Bablok 1983", digits=3, unit="")
    add("Passing-Bablok intercept", pb.get("intercept"), pb.get("intercept_ci"), "Passing & Bablok 1983")
    for k, v in (summary.get("within") or {}).items():
        rows.append((f"Within {k} mo of the reference", pct(v), "", "share of cases"))
    return pd.DataFrame(rows, columns=["Quantity", "Estimate", "95% CI", "Method"])


def strata_table(summary: dict) -> pd.DataFrame:
    """By sex and by age band (in age order): n, MAE and bias with CIs, RMSE, share within 12 months. The
    all-cases row is the headline's, so one quantity has one CI."""
    rows = []
    order = {("all", "all"): 0, ("sex", "F"): 1, ("sex", "M"): 2} | {("age_band", b): 3 + i for i, b in enumerate(BANDS)}
    strata = sorted(summary.get("stratified") or [], key=lambda r: order.get((r["stratum"], str(r["level"])), 99))
    for r in strata:
        if r["stratum"] == "all":
            r = r | {"mae": summary.get("mae", r.get("mae")), "mae_lo": (summary.get("mae_ci") or [None])[0],
                     "mae_hi": (summary.get("mae_ci") or [None, None])[1], "bias": summary.get("bias", r.get("bias")),
                     "bias_lo": (summary.get("bias_ci") or [None])[0], "bias_hi": (summary.get("bias_ci") or [None, None])[1]}
        group = {"all": "All cases", "sex": {"F": "Girls", "M": "Boys"}.get(str(r["level"]), str(r["level"])),
                 "age_band": f"Age {r['level']}"}.get(r["stratum"], str(r["level"]))
        few = not _ok(r.get("mae"))
        rows.append({"Group": group, "n": int(r["n"]),
                     "MAE (mo)": "fewer than 3 cases" if few else num(r["mae"], 2),
                     "MAE 95% CI": "" if few else ci((r.get("mae_lo"), r.get("mae_hi")), 2),
                     "Bias (mo)": "" if few else num(r.get("bias"), 2, True),
                     "Bias 95% CI": "" if few else ci((r.get("bias_lo"), r.get("bias_hi")), 2),
                     "RMSE (mo)": "" if few else num(r.get("rmse"), 2),
                     "Within 12 mo": "" if few else pct(r.get("within_12"))})
    return pd.DataFrame(rows, columns=["Group", "n", "MAE (mo)", "MAE 95% CI", "Bias (mo)", "Bias 95% CI", "RMSE (mo)",
                                       "Within 12 mo"])


def _label(name: str) -> str:
    return name if name == "chronological age" else name.replace("_", " ")


def comparison_sentences(summary: dict) -> list[str]:
    """One plain sentence per comparison (chronological age and each comparator): which is better, by how much,
    and whether the 95% CI of the difference excludes zero."""
    out = []
    for name, c in (summary.get("comparisons") or {}).items():
        d, (lo, hi) = c["mae_difference"], c["mae_difference_ci"]
        other = _label(name)
        what = ("chronological age used as the bone age" if name == "chronological age" else other)
        head = (f"On the {c.get('n', '')} cases with both, the model's MAE was {num(c['mae_a'], 2)} mo and that of "
                f"{what} {num(c['mae_other'], 2)} mo: ")
        if lo > 0 or hi < 0:
            better = "the model" if d < 0 else other
            out.append(head + f"{better} was better by {abs(d):.2f} mo (model − {other} {d:+.2f} mo, paired bootstrap 95% CI "
                       f"{ci((lo, hi), 2)}), and the CI excludes zero.")
        else:
            out.append(head + f"the difference, model − {other} {d:+.2f} mo (paired bootstrap 95% CI {ci((lo, hi), 2)}), has a "
                       "CI that includes zero, so neither was shown to be better.")
    return out


def comparison_table(summary: dict) -> pd.DataFrame:
    rows = [{"Compared with": _label(k), "n": c.get("n"), "MAE model (mo)": num(c["mae_a"], 2),
             "MAE other (mo)": num(c["mae_other"], 2), "Model − other (mo)": num(c["mae_difference"], 2, True),
             "95% CI": ci(c["mae_difference_ci"], 2),
             "Better": ("model" if c["mae_difference"] < 0 else _label(k)) if (c["mae_difference_ci"][0] > 0 or c["mae_difference_ci"][1] < 0)
             else "no difference shown",
             "Wilcoxon p": p_text(c.get("wilcoxon_p"))}
            for k, c in (summary.get("comparisons") or {}).items()]
    return pd.DataFrame(rows, columns=["Compared with", "n", "MAE model (mo)", "MAE other (mo)", "Model − other (mo)",
                                       "95% CI", "Better", "Wilcoxon p"])


def coverage_table(summary: dict) -> pd.DataFrame:
    """How often the model's interval holds the site's reference reads: overall, then by band of the estimate."""
    cov = summary.get("interval_coverage")
    if not cov:
        return pd.DataFrame(columns=["Band of the model's estimate", "n", "Reference inside the interval"])
    rows = [{"Band of the model's estimate": "All", "n": cov["n"], "Reference inside the interval": pct(cov["overall"])}]
    rows += [{"Band of the model's estimate": b["band"], "n": b["n"], "Reference inside the interval": pct(b["coverage"])}
             for b in sorted(cov["by_band"], key=lambda b: BANDS.index(b["band"]) if b["band"] in BANDS else 99)]
    return pd.DataFrame(rows)


def coverage_sentence(summary: dict, level: float = 0.95) -> str:
    cov = summary.get("interval_coverage")
    if not cov:
        return "The model gives no interval, so its coverage cannot be checked."
    worst = min(cov["by_band"], key=lambda b: b["coverage"], default=None)
    text = (f"The model's {level:.0%} intervals held {pct(cov['overall'])} of the site's {cov['n']} reference reads "
            f"(nominal {level:.0%})")
    if worst is not None and worst["coverage"] < cov["overall"]:
        text += f"; the lowest coverage was {pct(worst['coverage'])} at estimated ages {worst['band']} (n = {worst['n']})"
    return text + "."


def methods_paragraph(summary: dict, meta: dict) -> str:
    n_boot = f"{N_BOOT:,}"
    comps = ", ".join(_label(k) for k in (summary.get("comparisons") or {})) or "none"
    return (f"Model: {meta.get('model_name', '')} (hash {meta.get('model_hash', '')}); predictions: "
            f"{meta.get('prediction_source', 'this model')}. Cohort: {meta.get('cohort', '')} at {meta.get('site', '')}, "
            f"{summary.get('n_cases', 0)} cases, {summary.get('n', 0)} with a prediction and a reference analysed "
            f"({summary.get('n_failed', 0)} could not be read; {sum((summary.get('withheld') or {}).values())} withheld by the "
            f"model, counted apart). Statistics (kneeage {__version__}; docs/statistics.md): differences are model − "
            f"reference in months; mean absolute error with a bias-corrected and accelerated bootstrap 95% CI ({n_boot} "
            "resamples); bias with its t interval; Bland-Altman 95% limits of agreement with approximate CIs (Bland & "
            "Altman 1999); Lin's concordance; Passing-Bablok regression of the model on the reference; results by sex "
            "and by band of chronological age; the model against naive and comparator estimates by the paired bootstrap "
            f"difference in MAE and the Wilcoxon signed-rank test (comparators: {comps}); the share of reference reads "
            "inside the model's intervals, overall and by band of the estimate. Bone-age SDS uses the Greulich-Pyle/Brush "
            "Foundation standard deviations.")


def results_paragraphs(summary: dict) -> list[str]:
    """The results as prose, in the order of a paper."""
    if summary.get("note"):
        return [f"No agreement statistics: {summary['note']}"]
    p = [f"Of {summary.get('n_cases', 0)} cases, {summary.get('n', 0)} had a prediction and a reference and were analysed. "
         f"The mean absolute error was {estimate(summary.get('mae'), summary.get('mae_ci'), digits=2)} and the bias "
         f"(model − reference) {estimate(summary.get('bias'), summary.get('bias_ci'), digits=2, signed=True)}; 95% of "
         f"differences are expected between {num(summary.get('loa_lower'))} and {num(summary.get('loa_upper'))} mo."]
    p += comparison_sentences(summary)
    p.append(coverage_sentence(summary))
    return p


def worst_table(summary: dict) -> pd.DataFrame:
    """The largest errors: case, model, reference and absolute error in months (one decimal)."""
    return pd.DataFrame([{"Case": w["case_id"], "Model (mo)": num(w["predicted_bone_age_months"]),
                          "Reference (mo)": num(w["reference_bone_age_months"]), "Absolute error (mo)": num(w["abs_error"])}
                         for w in summary.get("worst_cases") or []], columns=["Case", "Model (mo)", "Reference (mo)",
                                                                               "Absolute error (mo)"])


def export_name(meta: dict, what: str, when: date | None = None) -> str:
    """'my-hospital_knee-cohort_2026-11-28_report.pdf': site, cohort and date in every exported file's name."""
    def slug(s):
        return re.sub(r"[^a-z0-9]+", "-", str(s or "").lower()).strip("-")[:40] or "unnamed"

    return f"{slug(meta.get('site'))}_{slug(meta.get('cohort'))}_{(when or date.today()).isoformat()}_{what}"


# ------------------------------------------------------------------------------------ exports

_CSS = """body{font-family:system-ui,sans-serif;max-width:62rem;margin:2rem auto;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left}
th{background:#f4f4f4}.demo{background:#fde2e1;border-left:4px solid #c0392b;padding:.5rem 1rem;margin:.5rem 0}
.caption{color:#555;font-size:.9rem}h2{margin-top:2rem}ol li{margin:.2rem 0}"""


def table_html(df: pd.DataFrame, caption: str = "") -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{e('' if v is None else str(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    cap = f"<caption class='caption'>{e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<tr>{head}</tr>{body}</table>"


def results_html(summary: dict, meta: dict, figures: dict | None = None, extra_notices: tuple[str, ...] = (),
                 appendix_html: str = "") -> str:
    """A self-contained results section (plotly.js inlined once; nothing fetched): methods, results with CIs,
    tables, figures, references."""
    e = html.escape
    notices = ([DEMO_NOTICE] if meta.get("synthetic_demo") else []) + list(extra_notices)
    figs = "".join(f"<h3>Figure {i + 1}. {e(name.replace('_', ' ').capitalize())}</h3>"
                   + fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, (name, fig) in enumerate((figures or {}).items()))
    tables = (table_html(agreement_table(summary), "Table 1. Agreement of the model with the reference (months)")
              + table_html(strata_table(summary), "Table 2. By sex and age band (chronological age)"))
    if len(comparison_table(summary)):
        tables += table_html(comparison_table(summary), "Table 3. The model against chronological age and comparators")
    if len(coverage_table(summary)):
        tables += table_html(coverage_table(summary), "Table 4. Interval coverage against the site's reference reads")
    title = f"External validation — {meta.get('site', '')}, {meta.get('cohort', '')}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{e(title)}</h1>" + "".join(f"<div class='demo'>{e(n)}</div>" for n in notices)
            + f"<h2>Methods</h2><p>{e(methods_paragraph(summary, meta))}</p>"
            + "<h2>Results</h2>" + "".join(f"<p>{e(t)}</p>" for t in results_paragraphs(summary)) + tables + figs
            + "".join(f"<p class='caption'>Not computed: {e(k)} — {e(v)}</p>" for k, v in (summary.get("not_computed") or {}).items())
            + appendix_html + "<h2>References</h2><ol>" + "".join(f"<li>{e(r)}</li>" for r in REFERENCES) + "</ol>"
            + f"<p class='caption'>Generated by kneeage {__version__} on {date.today().isoformat()}; no images and no "
            "identifiers.</p></body></html>")


_LATIN1 = {"−": "-", "–": "-", "—": "-", "≥": ">=", "≤": "<=", "τ": "tau", "Δ": "delta", "’": "'", "“": '"', "”": '"',
           "…": "...", "≈": "~", "→": "->"}


def _pdf_text(s) -> str:
    s = str(s)
    for a, b in _LATIN1.items():
        s = s.replace(a, b)
    return s.encode("latin-1", "replace").decode("latin-1")


def _pdf_table(pdf, df: pd.DataFrame, caption: str) -> None:
    pdf.set_font("Helvetica", "B", 9)
    pdf.multi_cell(0, 5, _pdf_text(caption), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 8)
    with pdf.table(text_align="LEFT", line_height=4.2, first_row_as_headings=True) as t:
        t.row([_pdf_text(c) for c in df.columns])
        for row in df.itertuples(index=False):
            t.row([_pdf_text("" if v is None else v) for v in row])
    pdf.ln(3)


def _pdf_scatter(pdf, x, y, title, xlabel, ylabel, lines=(), size=(80, 62)) -> None:
    """A small scatter plot drawn with PDF primitives (no plotting library): points, axes with ticks, and
    horizontal (("h", y, label)) or identity (("identity",)) lines."""
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    left, top = pdf.get_x() + 12, pdf.get_y() + 6
    w, h = size
    x0, x1 = float(np.min(x)), float(np.max(x))
    ys = np.concatenate([y] + [np.array([ln[1]]) for ln in lines if ln[0] == "h"])
    y0, y1 = float(np.min(ys)), float(np.max(ys))
    if any(ln[0] == "identity" for ln in lines):
        x0 = y0 = min(x0, y0)
        x1 = y1 = max(x1, y1)
    padx, pady = (x1 - x0) * 0.05 + 1e-6, (y1 - y0) * 0.08 + 1e-6
    x0, x1, y0, y1 = x0 - padx, x1 + padx, y0 - pady, y1 + pady

    def px(v):
        return left + (v - x0) / (x1 - x0) * w

    def py(v):
        return top + h - (v - y0) / (y1 - y0) * h

    pdf.set_font("Helvetica", "B", 8)
    pdf.text(left, top - 2, _pdf_text(title))
    pdf.set_draw_color(120)
    pdf.rect(left, top, w, h)
    pdf.set_font("Helvetica", "", 6)
    for t in np.linspace(x0 + padx, x1 - padx, 5):
        pdf.text(px(t) - 3, top + h + 3, f"{t:.0f}")
    for t in np.linspace(y0 + pady, y1 - pady, 5):
        pdf.text(left - 9, py(t) + 1, f"{t:.0f}")
    pdf.text(left + w / 2 - 15, top + h + 7, _pdf_text(xlabel))
    with pdf.rotation(90, left - 11, top + h / 2 + 15):
        pdf.text(left - 11, top + h / 2 + 15, _pdf_text(ylabel))
    for ln in lines:
        if ln[0] == "identity":
            pdf.set_draw_color(170)
            pdf.line(px(x0), py(x0), px(x1), py(x1))
        else:
            pdf.set_draw_color(192, 57, 43)
            pdf.line(left, py(ln[1]), left + w, py(ln[1]))
            pdf.text(left + w - 18, py(ln[1]) - 0.8, _pdf_text(f"{ln[2]} {ln[1]:.1f}"))
    pdf.set_fill_color(31, 119, 180)
    for a, b in zip(x, y):
        pdf.circle(x=px(a), y=py(b), radius=0.6, style="F")


def results_pdf(summary: dict, meta: dict, cases: pd.DataFrame | None = None, notice: str | None = None) -> bytes:
    """The results section as a PDF (fpdf2): the same methods, prose and tables as :func:`results_html`, with
    the Bland-Altman and predicted-vs-reference plots drawn natively."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, 15)
    pdf.set_title(_pdf_text(f"External validation - {meta.get('site', '')}, {meta.get('cohort', '')}"))
    pdf.set_creator(f"kneeage {__version__}")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.multi_cell(0, 7, _pdf_text(f"External validation - {meta.get('site', '')}, {meta.get('cohort', '')}"),
                   new_x="LMARGIN", new_y="NEXT")
    for text in ([DEMO_NOTICE] if meta.get("synthetic_demo") else []) + ([notice] if notice else []):
        pdf.set_text_color(192, 57, 43)
        pdf.set_font("Helvetica", "B", 9)
        pdf.multi_cell(0, 5, _pdf_text(text), new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0)
    for head, paras in (("Methods", [methods_paragraph(summary, meta)]), ("Results", results_paragraphs(summary))):
        pdf.ln(2)
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 6, head, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 9)
        for t in paras:
            pdf.multi_cell(0, 4.6, _pdf_text(t), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
    pdf.ln(2)
    _pdf_table(pdf, agreement_table(summary), "Table 1. Agreement of the model with the reference (months)")
    _pdf_table(pdf, strata_table(summary), "Table 2. By sex and age band (chronological age)")
    if len(comparison_table(summary)):
        _pdf_table(pdf, comparison_table(summary), "Table 3. The model against chronological age and comparators")
    if len(coverage_table(summary)):
        _pdf_table(pdf, coverage_table(summary), "Table 4. Interval coverage against the site's reference reads")
    if cases is not None and _ok(summary.get("loa_lower")):
        ok = cases[(cases.status == "done") & cases.reference_bone_age_months.notna() & cases.predicted_bone_age_months.notna()]
        if "flags" in ok:
            ok = ok[~ok["flags"].fillna("").astype(str).str.split(";").map(lambda f: any(x in REFUSALS for x in f))]
        if len(ok) >= 3:
            if pdf.get_y() > 200:
                pdf.add_page()
            y = pdf.get_y() + 4
            p, r = ok.predicted_bone_age_months.to_numpy(float), ok.reference_bone_age_months.to_numpy(float)
            pdf.set_xy(pdf.l_margin, y)
            _pdf_scatter(pdf, (p + r) / 2, p - r, "Figure 1. Bland-Altman", "mean of model and reference (mo)",
                         "model - reference (mo)", [("h", summary["bias"], "bias"), ("h", summary["loa_lower"], "lower"),
                                                    ("h", summary["loa_upper"], "upper")])
            pdf.set_xy(pdf.l_margin + 95, y)
            _pdf_scatter(pdf, r, p, "Figure 2. Model against reference", "reference (mo)", "model (mo)", [("identity",)])
            pdf.set_xy(pdf.l_margin, y + 80)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 6, "References", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 8)
    for i, ref in enumerate(REFERENCES, 1):
        pdf.multi_cell(0, 4, _pdf_text(f"{i}. {ref}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("Helvetica", "I", 7)
    pdf.multi_cell(0, 4, _pdf_text(f"Generated by kneeage {__version__} on {date.today().isoformat()}; no images and no identifiers."),
                   new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


# --------------------------------------------------------------------------------------- pooling


def pooled_headline(result: dict) -> dict:
    """The pooled MAE the page states first: the random-effects estimate that the forest plot's diamond shows
    (with its CI), and beside it all cases together (one number per quantity, each labelled)."""
    het = result.get("mae_heterogeneity") or {}
    p = result["pooled"]
    return {"random_effects": het.get("random"), "random_effects_ci": het.get("random_ci"),
            "all_cases": p["mae"], "all_cases_ci": p["mae_ci"], "n": p["n"], "n_sites": result["n_sites"]}


def pooled_sentences(result: dict) -> list[str]:
    out = []
    for what, name in (("mae", "MAE"), ("bias", "bias (model − reference)")):
        het = result.get(f"{what}_heterogeneity")
        if het:
            out.append(f"Pooled {name} across {result['n_sites']} sites (random effects, DerSimonian-Laird): "
                       f"{num(het['random'], 2, what == 'bias')} mo (95% CI {ci(het['random_ci'], 2)}); fixed effect "
                       f"{num(het['fixed'], 2, what == 'bias')} mo; Cochran's Q {het['Q']:.2f} on {het['df']} df (p "
                       f"{p_text(het['Q_p'])}), I² {het['I2']:.0%}, τ² {het['tau2']:.2f}.")
    p = result["pooled"]
    out.append(f"All {p['n']} cases together: MAE {estimate(p['mae'], p['mae_ci'], digits=2)}, bias "
               f"{estimate(p['bias'], p['bias_ci'], digits=2, signed=True)}.")
    return out


def sites_table(result: dict) -> pd.DataFrame:
    return pd.DataFrame([{"Site / cohort": s["site"], "n": s["n"], "MAE (mo)": num(s["mae"], 2),
                          "MAE 95% CI": ci((s["mae_lower"], s["mae_upper"]), 2), "Bias (mo)": num(s["bias"], 2, True),
                          "Bias 95% CI": ci((s["bias_lower"], s["bias_upper"]), 2),
                          "Error over 12 mo": pct(s.get("over_12")), "Model hash": s.get("model_hash") or "—"}
                         for s in result["sites"]])


def pooled_html(result: dict, figures: dict, demo: bool = False) -> str:
    """The pooled report: sentences, the site table and the forest plots, self-contained."""
    e = html.escape
    figs = "".join(f"<h3>Figure {i + 1}. {e(name.replace('_', ' ').capitalize())}</h3>"
                   + fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, (name, fig) in enumerate(figures.items()))
    notices = ["At least one bundle comes from the synthetic demo model: the pooled numbers are a demonstration."] if demo else []
    if not result.get("same_model"):
        notices.append("The bundles come from different model versions (hashes differ); pooling mixes models.")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Pooled validation</title><style>{_CSS}</style></head>"
            f"<body><h1>Pooled external validation: {result['n_sites']} sites</h1>"
            + "".join(f"<div class='demo'>{e(n)}</div>" for n in notices)
            + "<h2>Results</h2>" + "".join(f"<p>{e(t)}</p>" for t in pooled_sentences(result))
            + table_html(sites_table(result), "Table 1. Each site") + figs
            + "<h2>References</h2><ol>" + "".join(f"<li>{e(r)}</li>" for r in REFERENCES) + "</ol>"
            + f"<p class='caption'>Generated by kneeage {__version__} on {date.today().isoformat()} from de-identified site "
            "bundles; no image ever left a site.</p></body></html>")


# ----------------------------------------------------------------------------------- reader study


def reader_table(analysis: dict) -> pd.DataFrame:
    """Each reader in each arm: n, MAE and bias with CIs, the reader − model MAE difference with its CI, time."""
    rows = []
    for r in analysis.get("readers", []):
        for arm in ("unassisted", "assisted"):
            if arm not in r:
                continue
            a, mm = r[arm], r[arm].get("minus_model") or {}
            rows.append({"Reader": r["reader"], "Arm": arm, "n": a["n"], "MAE (mo)": num(a["mae"], 2),
                         "MAE 95% CI": ci(a["mae_ci"], 2), "Bias (mo)": num(a["bias"], 2, True),
                         "Reader − model MAE (mo)": num(mm.get("difference"), 2, True) if mm else "—",
                         "95% CI": ci(mm.get("ci"), 2) if mm else "—",
                         "Median time (s)": num(r.get("median_seconds"), 0)})
    return pd.DataFrame(rows, columns=["Reader", "Arm", "n", "MAE (mo)", "MAE 95% CI", "Bias (mo)", "Reader − model MAE (mo)",
                                       "95% CI", "Median time (s)"])


def study_sentences(analysis: dict) -> list[str]:
    """The reader study's secondary results in plain sentences (the ORH table is the primary analysis)."""
    out = [f"{analysis.get('n_reads', 0)} reads, {analysis.get('n_unreadable', 0)} marked unreadable."]
    m = analysis.get("model")
    if m:
        out.append(f"The model on the same cases: MAE {estimate(m['mae'], m['mae_ci'], digits=2)} (BCa), n = {m['n']}.")
    for r in analysis.get("inter_reader_icc") or []:
        out.append(f"Inter-reader agreement, {r['mcgraw_wong']} ({r['description']}): {r['icc']:.3f} "
                   f"(95% CI {r['ci_lower']:.3f} to {r['ci_upper']:.3f}).")
    av = analysis.get("assisted_vs_unassisted")
    if av:
        lo, hi = av["ci"]
        verdict = ("the CI excludes zero" if lo > 0 or hi < 0 else "the CI includes zero: no difference shown")
        moved = av.get("share_moved_toward_model")
        out.append(f"Sensitivity analysis (bootstrap): assisted − unassisted MAE {num(av['pooled_mae_difference'], 2, True)} "
                   f"mo (95% CI over readers and cases {ci(av['ci'], 2)}); {verdict}"
                   + (f"; {pct(moved)} of paired reads moved toward the model." if moved is not None else "."))
    for r in analysis.get("intra_reader") or []:
        out.append(f"Intra-reader agreement ({r['reader_id']}, {r['n']} repeated cases): bias {num(r['bias'], 1, True)} mo, "
                   f"limits {num(r['loa'][0])} to {num(r['loa'][1])} mo, ICC(1) {r['icc1']:.2f}.")
    return out


def study_html(name: str, analysis: dict, missing: dict, figures: dict, primary_html: str = "") -> str:
    """analysis.html: a readable report (the JSON is analysis.json): primary ORH analysis, readers, secondary
    results in sentences, what could not be computed and why, figures."""
    e = html.escape
    figs = "".join(f"<h3>Figure {i + 1}. {e(k.replace('_', ' ').capitalize())}</h3>"
                   + f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, (k, f) in enumerate(figures.items()))
    why = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in missing.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Reader study {e(name)}</title><style>{_CSS}</style>"
            f"</head><body><h1>Reader study: {e(name)}</h1>{primary_html}"
            + table_html(reader_table(analysis), "Table. Each reader against the reference (months; differences reader − model)")
            + "<h2>Secondary results</h2>" + "".join(f"<p>{e(t)}</p>" for t in study_sentences(analysis))
            + (f"<h2>Not available yet</h2><ul>{why}</ul>" if why else "") + figs
            + f"<p class='caption'>Generated by kneeage {__version__} on {date.today().isoformat()}. Differences are reader "
            "(or model) − reference; formulas in docs/statistics.md; all numbers in analysis.json.</p></body></html>")
