"""Output calibration and prediction intervals: calibrated once on a model's out-of-fold predictions (training), applied to every
prediction (inference), checked against a site's reference reads (validation, evaluation).

The interval is split conformal: its half-width is the ``level`` quantile of |out-of-fold residual|, overall
and per band of predicted age (``AGE_BANDS``; a band with fewer than 20 cases uses the overall value). A
model card's ``interval`` holds the rule: ``level``, ``overall_half_width_months`` and ``bands``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.torch import load_file

from . import stats

AGE_BANDS = (0, 24, 72, 120, 168, 1000)  # months: calibration bands for the interval
SEX_CODES = (("F", 0), ("M", 1))  # as the training set codes sex


def fit_output_calibration(pred: np.ndarray, target: np.ndarray, sex: np.ndarray) -> dict:
    """Per sex, the monotone map from the model's raw output to the scale of ``target`` (the reference reads
    sites compare with): scikit-learn's isotonic regression of the target on the out-of-fold predictions.
    A model trained on pseudo-labels learns the labelling model's scale, bias included (the synthetic hand
    model reads boys 5 months young), and an ensemble that has not converged shrinks toward the mean; the
    map undoes both without touching the weights. ``sex``: 0 = female, 1 = male. A sex with fewer than 50
    cases keeps the raw output."""
    from sklearn.isotonic import IsotonicRegression  # imported where used: slow to import

    out = {"method": "isotonic regression per sex (scikit-learn) of the reference reads on out-of-fold predictions"}
    for name, code in SEX_CODES:
        k = (sex == code) & np.isfinite(pred) & np.isfinite(target)
        if k.sum() >= 50:
            iso = IsotonicRegression(out_of_bounds="clip").fit(pred[k], target[k])
            out[name] = {"raw": iso.X_thresholds_.tolist(), "calibrated": iso.y_thresholds_.tolist()}
    return out


def calibrate_output(values, sex: str | None, calibration: dict | None):
    """A model's raw output (months, any shape) on its calibrated scale; unchanged without a map for ``sex``.
    Linear between the map's points and constant beyond them, as scikit-learn's isotonic predict."""
    m = (calibration or {}).get(sex)
    return np.interp(values, m["raw"], m["calibrated"]) if m else values


def calibrate_coded(values: np.ndarray, sex: np.ndarray, calibration: dict | None) -> np.ndarray:
    """:func:`calibrate_output` for many cases at once: ``values`` (..., N) with ``sex`` coded 0/1 per case (N,)."""
    out = np.array(values, float)
    for name, code in SEX_CODES:
        out[..., sex == code] = calibrate_output(out[..., sex == code], name, calibration)
    return out


def cross_fitted_output(pred: np.ndarray, target: np.ndarray, sex: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Out-of-fold predictions on the calibrated scale, each fold mapped by a calibration fitted on the other
    folds: what the interval and the card's metrics are computed on (a map scored on the cases it was
    fitted on would look better than it is)."""
    out = np.array(pred, float)
    for k in np.unique(folds):
        cal = fit_output_calibration(pred[folds != k], target[folds != k], sex[folds != k])
        out[folds == k] = calibrate_coded(pred[folds == k], sex[folds == k], cal)
    return out


def calibrate_interval(pred: np.ndarray, truth: np.ndarray, level: float = 0.95) -> dict:
    """The interval rule from out-of-fold predictions and what they are compared with. Coverage is reported
    on the same out-of-fold predictions (in-sample for the calibration; see the replication doc for a
    held-out check)."""
    ok = np.isfinite(pred) & np.isfinite(truth)
    pred, truth = pred[ok], truth[ok]
    absres = np.abs(pred - truth)
    n = len(absres)
    qlevel = min(1.0, math.ceil((n + 1) * level) / n)
    overall = float(np.quantile(absres, qlevel))
    bands = []
    for lo, hi in zip(AGE_BANDS[:-1], AGE_BANDS[1:]):
        m = (pred >= lo) & (pred < hi)
        hw = float(np.quantile(absres[m], min(1.0, math.ceil((m.sum() + 1) * level) / max(m.sum(), 1)))) if m.sum() >= 20 else overall
        bands.append({"from_months": lo, "to_months": hi, "half_width_months": hw, "n": int(m.sum())})
    hw_each = np.array([half_width({"bands": bands, "overall_half_width_months": overall}, p) for p in pred])
    return {"level": level, "method": "split conformal on out-of-fold residuals, by predicted-age band",
            "overall_half_width_months": overall, "bands": bands,
            "oof_coverage": float((absres <= hw_each).mean())}


def half_width(interval: dict, predicted: float) -> float:
    """The rule's half-width at a predicted age; NaN when the card gives no rule (the interval is unknown)."""
    for b in interval.get("bands", []):
        if b["from_months"] <= predicted < b["to_months"]:
            return b["half_width_months"]
    return interval.get("overall_half_width_months", float("nan"))


def inside(lower, upper, reference) -> np.ndarray:
    """Per case: whether the reference lies in [lower, upper] (False where any is missing)."""
    lo, hi, r = (np.asarray(v, float) for v in (lower, upper, reference))
    return (lo <= r) & (r <= hi)


def coverage(cases: pd.DataFrame) -> dict | None:
    """The share of reference reads inside the model's interval, overall and by band of the model's
    estimate (the interval is calibrated per band of estimated age); None when the model gives no interval.
    ``cases``: a per-case table with interval_lower/_upper, predicted_ and reference_bone_age_months."""
    if not {"interval_lower", "interval_upper"} <= set(cases.columns):
        return None
    has = cases.interval_lower.notna() & cases.interval_upper.notna()
    if not has.any():
        return None
    d = cases[has]
    ok = pd.Series(inside(d.interval_lower, d.interval_upper, d.reference_bone_age_months), index=d.index)
    band = stats.age_band(d.predicted_bone_age_months)
    return {"overall": float(ok.mean()), "n": int(len(d)),
            "by_band": [{"band": str(b), "n": int((band == b).sum()), "coverage": float(ok[band == b].mean())}
                        for b in band.categories if (band == b).any()]}


FEATURE_QC_FILE = "feature_qc.safetensors"  # in a model directory: the training features' mean and precision


def fit_feature_qc(fit: np.ndarray, held_out: np.ndarray) -> tuple[dict, dict]:
    """How unlike its training images an image is, in the model's pooled features: the Mahalanobis distance
    to the training images' features, with scikit-learn's Ledoit-Wolf shrunk covariance fitted on ``fit``
    (N, C). Thresholds come from the 99th percentile of the distances of ``held_out`` training images that the
    covariance did not see (those it saw sit closer than new images of the same kind): "unlike training"
    beyond 1.25 × that percentile, "not a knee" beyond 2 ×. Returns (tensors for :data:`FEATURE_QC_FILE`,
    the card's QC entries). The full covariance is what separates real films from phantoms: a per-feature
    (diagonal) distance put real lower-leg and chest CRs inside the training range (docs/replication.md)."""
    from sklearn.covariance import LedoitWolf  # imported where used: slow to import

    lw = LedoitWolf().fit(np.asarray(fit, np.float64))
    p99 = float(np.percentile(np.sqrt(lw.mahalanobis(np.asarray(held_out, np.float64))), 99))
    tensors = {"mean": lw.location_.astype(np.float32), "precision": lw.precision_.astype(np.float32)}
    return tensors, {"feature_distance": "mahalanobis (Ledoit-Wolf)", "feature_distance_p99": p99,
                     "unlike_training_distance": p99 * 1.25, "not_knee_distance": p99 * 2.0,
                     "feature_qc_images": [len(fit), len(held_out)]}


def load_feature_qc(model_dir: Path, qc: dict) -> dict | None:
    """A model's training-feature statistics for :func:`feature_distance`: :data:`FEATURE_QC_FILE` when the
    directory has it, else an older card's per-feature mean and SD, else None (no distance)."""
    path = Path(model_dir) / FEATURE_QC_FILE
    if path.is_file():
        return {k: v.double().numpy() for k, v in load_file(str(path)).items()}
    if qc.get("feature_mean"):
        return {"mean": np.array(qc["feature_mean"]), "std": np.array(qc["feature_std"])}
    return None


def feature_distance(feats: np.ndarray, qc: dict) -> np.ndarray:
    """Distance of each row of ``feats`` (N, C) to the training features: Mahalanobis with ``qc['precision']``
    when the model has :data:`FEATURE_QC_FILE`, else (older models) the root-mean-square z-score over features."""
    d = np.asarray(feats, np.float64) - qc["mean"]
    if "precision" in qc:
        return np.sqrt(np.maximum(np.einsum("nc,cd,nd->n", d, qc["precision"], d), 0))
    return np.sqrt(((d / qc["std"]) ** 2).mean(1))
