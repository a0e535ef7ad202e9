"""Run a model over a manifest and summarise its error against every available reference.

Used by ``python -m kneeage evaluate`` and the replication table (docs/replication.md). Conventions:
error = estimate − reference (months); MAE is the mean absolute error. "Pull toward chronological
age" is the least-squares slope of (estimate − true bone age) on (chronological age − true bone age):
0 means the estimate ignores chronological age, 1 means it simply returns chronological age.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .model import load_card, save_card
from .predict import Predictor
from .stats import age_band
from .train import load_training_set


def predict_manifest(predictor: Predictor, manifest: str | Path, crop: str = "auto", batch: int = 256,
                     image_column: str = "image") -> pd.DataFrame:
    """The manifest's rows that have an image in ``image_column``, with the model's
    ``predicted_bone_age_months``, ``interval_lower``/``interval_upper``, ``flags`` and ``withheld`` (the refusal,
    kneeage.predict.REFUSALS, or empty) and ``censored_from_months`` (images decoded in parallel, predicted in
    batches)."""
    manifest = Path(manifest)
    df = pd.read_csv(manifest)
    df = df[df[image_column].fillna("").astype(str).str.len() > 0].reset_index(drop=True)
    tmp = manifest.parent / f".evaluate_{manifest.stem}.csv"
    df.assign(_label=0.0).to_csv(tmp, index=False)
    try:
        data = load_training_set(tmp, "_label", predictor.input_size, image_column, crop, framer=predictor.framer)
    finally:
        tmp.unlink(missing_ok=True)
    preds = []
    chron = data.chron.numpy()
    for i in range(0, len(df), batch):
        x = data.images[i : i + batch, 0].float().numpy() / 255
        sexes = ["M" if s else "F" for s in data.sex[i : i + batch].tolist()]
        preds += predictor.predict_many(list(x), sexes, list(chron[i : i + batch]))
    df["predicted_bone_age_months"] = [p.bone_age_months for p in preds]
    df["interval_lower"] = [p.interval_months[0] for p in preds]
    df["interval_upper"] = [p.interval_months[1] for p in preds]
    df["flags"] = [";".join(p.flags) for p in preds]
    df["withheld"] = [p.refusal or "" for p in preds]
    df["censored_from_months"] = [p.censored_from_months for p in preds]
    return df


def _mae(a, b) -> float | None:
    m = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(a[m] - b[m]).mean()) if m.any() else None


def summarise(df: pd.DataFrame, truth: pd.DataFrame | None = None) -> dict:
    """MAE of the model (and of chronological age as a naive estimate) against each reference."""
    if truth is not None:
        df = df.merge(truth[["case_id", "true_bone_age_months"]], on="case_id", how="left")
    withheld = df.withheld.fillna("").astype(str) if "withheld" in df else pd.Series("", index=df.index)
    out = {"n_withheld": {k: int(v) for k, v in withheld[withheld != ""].value_counts().items()}}
    df = df[withheld == ""]  # refused and censored results carry no number: they leave the statistics
    est = df.predicted_bone_age_months.to_numpy(float)
    chron = df.chronological_age_months.to_numpy(float) if "chronological_age_months" in df else np.full(len(df), np.nan)
    out["n"] = int(len(df))
    for ref in ("reference_bone_age_months", "pseudo_bone_age_months", "true_bone_age_months"):
        if ref in df:
            r = df[ref].to_numpy(float)
            out[f"mae_vs_{ref.replace('_bone_age_months', '')}"] = _mae(est, r)
            out[f"chron_age_mae_vs_{ref.replace('_bone_age_months', '')}"] = _mae(chron, r)
            out[f"bias_vs_{ref.replace('_bone_age_months', '')}"] = float(np.nanmean(est - r))
            if "interval_lower" in df:  # how often the 95% interval holds this reference
                inside = (df.interval_lower.to_numpy(float) <= r) & (r <= df.interval_upper.to_numpy(float))
                out[f"interval_coverage_vs_{ref.replace('_bone_age_months', '')}"] = float(inside[np.isfinite(r)].mean())
    if "true_bone_age_months" in df:
        t = df.true_bone_age_months.to_numpy(float)
        x, y = chron - t, est - t
        m = np.isfinite(x) & np.isfinite(y)
        out["pull_toward_chron_age"] = float(np.polyfit(x[m], y[m], 1)[0]) if m.sum() > 2 else None
        band = age_band(t)  # bands of true bone age
        out["by_true_bone_age"] = [{"band": str(b), "n": int((band == b).sum()), "mae": _mae(est[band == b], t[band == b]),
                                    "chron_age_mae": _mae(chron[band == b], t[band == b])}
                                   for b in band.categories if (band == b).any()]
    return out


def record_result(model_dir: str | Path, cohort: str, result: dict) -> None:
    """Store an evaluation in the model card (``results["test_cohorts"]``, keyed by the cohort's
    description; a repeat evaluation on the same cohort replaces the earlier one)."""
    card = load_card(Path(model_dir))
    card.results.setdefault("test_cohorts", {})[cohort] = result
    save_card(card, Path(model_dir))
