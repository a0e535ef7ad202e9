"""Run a model over a manifest and summarise its error against every available reference; pseudo-labels.

Used by ``python -m kneeage evaluate`` and ``pseudolabel`` and the replication table (docs/replication.md).
Conventions: error = estimate − reference (months); MAE is the mean absolute error. "Pull toward
chronological age" is the least-squares slope of (estimate − true bone age) on (chronological age − true
bone age): 0 means the estimate ignores chronological age, 1 means it simply returns chronological age.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .calibration import inside
from .cohort import check_sexes, frame_images
from .errors import InputError
from .model import load_card, save_card
from .predict import PreparedCase, Predictor
from .stats import age_band, mae


def predict_manifest(predictor: Predictor, manifest: str | Path, crop: str = "auto", batch: int = 256,
                     image_column: str = "image") -> pd.DataFrame:
    """The manifest's rows that have an image in ``image_column``, with the model's
    ``predicted_bone_age_months``, ``interval_lower``/``interval_upper``, ``flags`` and ``withheld`` (the refusal,
    kneeage.predict.REFUSALS, or empty) and ``censored_from_months`` (images decoded in parallel, predicted in
    batches; each input quantised to 8 bits as in training)."""
    manifest = Path(manifest)
    df = pd.read_csv(manifest)
    for col in ("case_id", image_column, "sex"):
        if col not in df.columns:
            raise InputError(f"{manifest.name}: column {col!r} is missing (columns: {', '.join(df.columns)}).")
    df = df[df[image_column].fillna("").astype(str).str.len() > 0].reset_index(drop=True)
    check_sexes(df, manifest.name)
    inputs = frame_images(df, manifest.parent, lambda p, box, spacing: np.floor(predictor.framer(p, box, spacing) * 255 + 0.5) / 255,
                          image_column, crop)
    chron = (pd.to_numeric(df["chronological_age_months"], errors="coerce") if "chronological_age_months" in df.columns
             else pd.Series(np.nan, index=df.index)).astype(np.float32).tolist()
    cases = (PreparedCase(i, x, sex, c) for i, (x, sex, c) in enumerate(zip(inputs, df.sex, chron)))
    preds = [p for chunk in predictor.predict_batches(cases, batch) for _, p in chunk]
    df["predicted_bone_age_months"] = [p.bone_age_months for p in preds]
    df["interval_lower"] = [p.interval_months[0] for p in preds]
    df["interval_upper"] = [p.interval_months[1] for p in preds]
    df["flags"] = [";".join(p.flags) for p in preds]
    df["withheld"] = [p.refusal or "" for p in preds]
    df["censored_from_months"] = [p.censored_from_months for p in preds]
    return df


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
            name = ref.replace("_bone_age_months", "")
            out[f"mae_vs_{name}"] = mae(est, r)
            out[f"chron_age_mae_vs_{name}"] = mae(chron, r)
            out[f"bias_vs_{name}"] = float(np.nanmean(est - r))
            if "interval_lower" in df:  # how often the 95% interval holds this reference
                out[f"interval_coverage_vs_{name}"] = float(inside(df.interval_lower, df.interval_upper, r)[np.isfinite(r)].mean())
    if "true_bone_age_months" in df:
        t = df.true_bone_age_months.to_numpy(float)
        x, y = chron - t, est - t
        m = np.isfinite(x) & np.isfinite(y)
        out["pull_toward_chron_age"] = float(np.polyfit(x[m], y[m], 1)[0]) if m.sum() > 2 else None
        band = age_band(t)  # bands of true bone age
        out["by_true_bone_age"] = [{"band": str(b), "n": int((band == b).sum()), "mae": mae(est[band == b], t[band == b]),
                                    "chron_age_mae": mae(chron[band == b], t[band == b])}
                                   for b in band.categories if (band == b).any()]
    return out


def record_result(model_dir: str | Path, cohort: str, result: dict) -> None:
    """Store an evaluation in the model card (``results["test_cohorts"]``, keyed by the cohort's
    description; a repeat evaluation on the same cohort replaces the earlier one)."""
    card = load_card(Path(model_dir))
    card.results.setdefault("test_cohorts", {})[cohort] = result
    save_card(card, Path(model_dir))


def pseudolabel(manifest: str | Path, hand_model: str | Path, out: str | Path | None = None,
                column: str = "pseudo_bone_age_months") -> pd.DataFrame:
    """Run a hand bone-age model on each case's paired hand film (column ``hand_image``) and write
    the estimates to ``column`` (transfer from a hand model). Rows without a hand film stay empty."""
    manifest = Path(manifest)
    df = pd.read_csv(manifest)
    if "hand_image" not in df.columns:
        raise InputError(f"{manifest.name}: column 'hand_image' is missing; pseudo-labels need the paired hand film.")
    est = predict_manifest(Predictor(hand_model), manifest, "auto", image_column="hand_image")
    values = df.case_id.map(dict(zip(est.case_id, est.predicted_bone_age_months.round(2))))
    df[column] = values
    out = Path(out) if out else manifest
    if out.resolve().parent != manifest.resolve().parent:  # keep image paths valid from the new place
        for col in ("image", "hand_image"):
            if col in df.columns:
                df[col] = [str((manifest.parent / v).resolve()) if isinstance(v, str) and v else v for v in df[col]]
    df.to_csv(out, index=False)
    return df
