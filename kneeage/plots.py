"""Plotly figures built from :mod:`kneeage.stats` results (the figures never compute statistics of
their own beyond what they are handed, so exports and plots agree)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from . import stats
from .imaging import png_data_uri, to_uint8
from .viewer import shuttered

DEMO_NOTE = "Synthetic demo model on synthetic phantoms — not a clinical model."
_BANDS = {"bias": "rgba(0,0,0,0.08)", "limit": "rgba(239,85,59,0.10)"}


def _layout(fig: go.Figure, title: str, x: str, y: str, note: str | None) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white",
                      margin=dict(l=60, r=20, t=60, b=90 if note else 40), hovermode="closest")
    if note:
        fig.add_annotation(text=note, xref="paper", yref="paper", x=0, y=-0.27, showarrow=False,
                           font=dict(size=11, color="#a33"), xanchor="left")
    return fig


def bland_altman(ba: stats.BlandAltman, case_ids: Sequence[str] | None = None, title: str | None = None,
                 units: str = "months", note: str | None = None) -> go.Figure:
    """Differences against means, bias and limits with their CIs as shaded bands."""
    mean, diff = np.array(ba.means), np.array(ba.differences)
    ids = list(case_ids) if case_ids is not None else [str(i + 1) for i in range(ba.n)]
    fig = go.Figure(go.Scatter(x=mean, y=diff, mode="markers", name="cases", text=ids,
                               hovertemplate="%{text}<br>mean %{x:.1f}<br>difference %{y:.1f}<extra></extra>",
                               marker=dict(size=7, opacity=0.7)))
    x0, x1 = float(mean.min()), float(mean.max())
    for label, value, ci in (("bias", ba.bias, ba.bias_ci), ("lower limit", ba.loa_lower, ba.loa_lower_ci),
                             ("upper limit", ba.loa_upper, ba.loa_upper_ci)):
        fig.add_hrect(y0=ci[0], y1=ci[1], fillcolor=_BANDS["bias" if label == "bias" else "limit"], line_width=0,
                      layer="below")
        fig.add_hline(y=value, line_dash="solid" if label == "bias" else "dash",
                      annotation_text=f"{label} {value:.1f}", annotation_position="top right")
    fig.update_xaxes(range=[x0 - 0.05 * (x1 - x0 + 1), x1 + 0.05 * (x1 - x0 + 1)])
    unit = "%" if ba.percent else units
    return _layout(fig, title or f"Bland-Altman (n={ba.n}; bands: {ba.level:.0%} CIs)",
                   f"mean of method and reference ({units})", f"method − reference ({unit})", note)


def scatter(predicted, reference, case_ids: Sequence[str] | None = None, fit: stats.LineFit | None = None,
            title: str = "Predicted vs reference", units: str = "months", note: str | None = None) -> go.Figure:
    """Predicted against reference with the identity line and, if given, a fitted line."""
    p, r = np.asarray(predicted, float), np.asarray(reference, float)
    ids = list(case_ids) if case_ids is not None else [str(i + 1) for i in range(p.size)]
    lo, hi = float(min(p.min(), r.min())), float(max(p.max(), r.max()))
    fig = go.Figure(go.Scatter(x=r, y=p, mode="markers", name="cases", text=ids, marker=dict(size=7, opacity=0.7),
                               hovertemplate="%{text}<br>reference %{x:.1f}<br>predicted %{y:.1f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="identity", line=dict(color="grey", dash="dot")))
    if fit is not None:
        fig.add_trace(go.Scatter(x=[lo, hi], y=[fit.intercept + fit.slope * lo, fit.intercept + fit.slope * hi],
                                 mode="lines", name=f"{fit.method.replace('_', '-')}: y = {fit.intercept:.1f} + {fit.slope:.3f}x"))
    return _layout(fig, title, f"reference ({units})", f"predicted ({units})", note)


def error_by_group(df: pd.DataFrame, error: str = "error", group: str = "age_band", color: str | None = "sex",
                   title: str = "Error by age band and sex", note: str | None = None) -> go.Figure:
    """Box plots of the signed error per group (and colour), zero line marked."""
    fig = go.Figure()
    for key, g in (df.groupby(color, observed=True) if color and color in df else [("all", df)]):
        fig.add_trace(go.Box(x=g[group].astype(str), y=g[error], name=str(key), boxmean=True))
    fig.add_hline(y=0, line_color="grey")
    order = list(df[group].cat.categories) if isinstance(df[group].dtype, pd.CategoricalDtype) else sorted(df[group].astype(str).unique())
    fig.update_layout(boxmode="group")
    fig.update_xaxes(categoryorder="array", categoryarray=[str(c) for c in order])  # age bands in age order
    return _layout(fig, title, group.replace("_", " "), "predicted − reference (months)", note)


def forest(rows: pd.DataFrame, label: str = "label", estimate: str = "estimate", lower: str = "lower",
           upper: str = "upper", pooled: dict | None = None, title: str = "Forest plot",
           x_title: str = "MAE (months)", note: str | None = None) -> go.Figure:
    """One row per reader or site: estimate with its CI; an optional pooled estimate as a diamond."""
    labels = rows[label].astype(str).tolist()
    fig = go.Figure(go.Scatter(
        x=rows[estimate], y=labels, mode="markers", name="estimate", marker=dict(symbol="square", size=9),
        error_x=dict(type="data", symmetric=False, array=rows[upper] - rows[estimate],
                     arrayminus=rows[estimate] - rows[lower]),
        hovertemplate="%{y}: %{x:.2f}<extra></extra>"))
    if pooled:
        fig.add_trace(go.Scatter(x=[pooled["estimate"]], y=[pooled.get("label", "pooled")], mode="markers",
                                 name="pooled", marker=dict(symbol="diamond", size=14, color="black"),
                                 error_x=dict(type="data", symmetric=False,
                                              array=[pooled["upper"] - pooled["estimate"]],
                                              arrayminus=[pooled["estimate"] - pooled["lower"]])))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, x_title, "", note)


def crop_figure(pixels: np.ndarray, box: Sequence[int], max_side: int = 512) -> go.Figure:
    """The radiograph (axes in original pixels) with the crop box drawn on it; box-select on it to
    choose a new box (an invisible grid of points makes the selection report back)."""
    h, w = pixels.shape
    small = to_uint8(shuttered(pixels), max_side)  # collimation black: no white frame in a dark theme
    scale = w / small.shape[1]
    fig = go.Figure(go.Image(source=png_data_uri(small), x0=0, y0=0, dx=scale, dy=scale, hoverinfo="skip"))
    gx, gy = np.meshgrid(np.linspace(0, w, 40), np.linspace(0, h, 40))
    fig.add_trace(go.Scatter(x=gx.ravel(), y=gy.ravel(), mode="markers", marker=dict(opacity=0), hoverinfo="skip",
                             showlegend=False))
    x0, y0, x1, y1 = box
    fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line=dict(color="#ff4b4b", width=2))
    fig.update_layout(dragmode="select", margin=dict(l=0, r=0, t=0, b=0), height=420,
                      paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",  # no light frame in a dark theme
                      xaxis=dict(visible=False, range=[0, w]), yaxis=dict(visible=False, range=[h, 0], scaleanchor="x"))
    return fig


def box_from_selection(selection) -> tuple[int, int, int, int] | None:
    """The crop box from a plotly box-selection event (as Streamlit reports it), or None."""
    boxes = (selection or {}).get("box") or []
    if not boxes:
        return None
    b = boxes[-1]
    (xa, xb), (ya, yb) = sorted(b["x"]), sorted(b["y"])
    return int(round(xa)), int(round(ya)), int(round(xb)), int(round(yb))


def error_vs_age(age, error, case_ids: Sequence[str] | None = None, note: str | None = None) -> go.Figure:
    """Signed error against chronological age, with a zero line."""
    a, e = np.asarray(age, float), np.asarray(error, float)
    ids = list(case_ids) if case_ids is not None else [str(i + 1) for i in range(a.size)]
    fig = go.Figure(go.Scatter(x=a / 12, y=e, mode="markers", text=ids, marker=dict(size=7, opacity=0.7),
                               hovertemplate="%{text}<br>age %{x:.1f} y<br>error %{y:.1f} mo<extra></extra>"))
    fig.add_hline(y=0, line_color="grey")
    return _layout(fig, "Error against chronological age", "chronological age (years)",
                   "predicted − reference (months)", note)


def validation_figures(cases: pd.DataFrame, summary: dict, note: str | None = None) -> dict[str, go.Figure]:
    """The validation report's figures, from the per-case table and its summary."""
    ok = cases[(cases.status == "done") & cases.reference_bone_age_months.notna()]
    if len(ok) < 3:
        return {}
    pred, ref, ids = ok.predicted_bone_age_months, ok.reference_bone_age_months, ok.case_id.astype(str).tolist()
    pb = summary.get("passing_bablok")  # absent when it could not be computed
    figs = {"scatter": scatter(pred, ref, ids, stats.LineFit(**pb) if pb else None, note=note)}
    if "loa_lower" in summary:
        figs = {"bland_altman": bland_altman(stats.bland_altman(pred, ref), ids, note=note)} | figs
    if ok.chronological_age_months.notna().any():
        figs["error_vs_age"] = error_vs_age(ok.chronological_age_months, pred - ref, ids, note)
        figs["error_by_group"] = error_by_group(ok.assign(error=pred - ref, age_band=stats.age_band(ok.chronological_age_months)),
                                                note=note)
    comps = summary.get("comparisons") or {}
    if comps:
        rows = pd.DataFrame([{"label": f"model − {k}", "estimate": v["mae_difference"], "lower": v["mae_difference_ci"][0],
                              "upper": v["mae_difference_ci"][1]} for k, v in comps.items()])
        figs["comparisons"] = forest(rows, title="Difference in MAE, model minus comparator (paired bootstrap 95% CI)",
                                     x_title="difference in MAE (months); negative favours the model", note=note)
    return figs


def pooling_figure(result: dict, what: str = "mae") -> go.Figure:
    """Forest plot of per-site MAE (or bias) with the random-effects pooled estimate and I²."""
    rows = pd.DataFrame(result["sites"]).rename(columns={what: "estimate", f"{what}_lower": "lower", f"{what}_upper": "upper"})
    het = result.get(f"{what}_heterogeneity")
    pooled = None
    title = f"{'MAE' if what == 'mae' else 'Bias'} by site"
    if het:
        pooled = {"estimate": het["random"], "lower": het["random_ci"][0], "upper": het["random_ci"][1],
                  "label": "pooled (random effects)"}
        title += f" — I² {het['I2']:.0%}, Q p {het['Q_p']:.3g}"
    return forest(rows.rename(columns={"site": "label"}), pooled=pooled, title=title,
                  x_title="MAE (months)" if what == "mae" else "bias, model − reference (months)")


def study_figures(reads: pd.DataFrame, analysis: dict) -> dict[str, go.Figure]:
    """Reader-study figures: per-reader MAE (with the model) as a forest plot, pooled Bland-Altman of
    first reads, reading times."""
    figs = {}
    rows = []
    for r in analysis.get("readers", []):
        for arm in ("unassisted", "assisted"):
            if arm in r:
                rows.append({"label": f"{r['reader']} ({arm})", "estimate": r[arm]["mae"],
                             "lower": r[arm]["mae_ci"][0], "upper": r[arm]["mae_ci"][1]})
    model = analysis.get("model")
    if model:
        rows.append({"label": "model", "estimate": model["mae"], "lower": model["mae_ci"][0], "upper": model["mae_ci"][1]})
    if rows:
        figs["mae_by_reader"] = forest(pd.DataFrame(rows), title="MAE against the reference by reader and arm (BCa 95% CI)")
    first = reads[(reads["repeat"] == 0) & (reads.unreadable == 0)].dropna(subset=["estimate_months", "reference_bone_age_months"]) if len(reads) else reads
    if len(first) >= 3:
        ids = (first.reader.astype(str) + " · " + first.case_id.astype(str)).tolist()
        figs["bland_altman_pooled"] = bland_altman(stats.bland_altman(first.estimate_months, first.reference_bone_age_months),
                                                   ids, title="Readers − reference, all first reads")
        fig = go.Figure([go.Box(y=g.seconds, name=str(k), boxmean=True) for k, g in first.groupby("reader")])
        figs["reading_times"] = _layout(fig, "Reading time per case", "reader", "seconds", None)
    return figs


def radiograph_figure(image01: np.ndarray, height: int = 640) -> go.Figure:
    """A zoomable, pannable grayscale radiograph."""
    h, w = image01.shape
    fig = go.Figure(go.Image(source=png_data_uri((np.clip(image01, 0, 1) * 255).astype(np.uint8)), hoverinfo="skip"))
    fig.update_layout(margin=dict(l=0, r=0, t=0, b=0), height=height, dragmode="zoom",
                      xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"))
    return fig


def error_by_true_age(results: dict[str, dict], title: str = "MAE against true bone age, by true bone age",
                      note: str | None = DEMO_NOTE) -> go.Figure:
    """Grouped bars: for each estimate (``kneeage evaluate`` results keyed by name, each with
    ``by_true_bone_age``) the MAE in each band of true bone age; chronological age (from the first
    result) as the naive baseline."""
    fig = go.Figure()
    first = next(iter(results.values()))
    series = [(name, r["by_true_bone_age"], "mae") for name, r in results.items()]
    series.append(("chronological age as the estimate", first["by_true_bone_age"], "chron_age_mae"))
    for name, bands, key in series:
        fig.add_trace(go.Bar(x=[f"{b['band']} (n={b['n']})" for b in bands], y=[b[key] for b in bands], name=name,
                             marker_color="#999" if key == "chron_age_mae" else None,
                             hovertemplate="%{x}: %{y:.1f} months<extra>" + name + "</extra>"))
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.2))
    fig = _layout(fig, title, "true bone age", "MAE (months)", note)
    fig.update_annotations(y=-0.55)
    return fig.update_layout(margin=dict(b=170), height=520)
