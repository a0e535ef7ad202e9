"""External validation: ingest a checked cohort, run a model over it (resumable), analyse agreement.

The run decodes images in a thread pool while the model works through batches; each batch of results
is one database transaction, so a crash loses at most the batch in flight and a restart continues with
the cases that have no result yet. All statistics come from :mod:`kneeage.stats` on the per-case table
that is also exported, so the report and the CSV agree.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import pandas as pd

from . import growth, stats
from .cohort import CohortCheck, ImageSource
from .errors import KneeageError, StatsError
from .imaging import load_radiograph
from .localise import framed_thumbnail
from .predict import REFUSALS, Predictor
from .preprocess import parse_box
from .store import Store

CASE_COLUMNS = ["case_id", "sex", "chronological_age_months", "reference_bone_age_months", "predicted_bone_age_months",
                "interval_lower", "interval_upper", "status", "flags", "error", "reference_method", "reader"]


def ingest(store: Store, check: CohortCheck, name: str, site: str, source: ImageSource,
           identifying_opt_in: bool = False) -> str:
    """Store the usable cases of a dry run; returns the cohort id. The id is a fingerprint of site, name
    and cases, so ingesting the same cohort again (e.g. after a crash) finds the stored one."""
    import hashlib

    key = pd.util.hash_pandas_object(check.cases.astype(str), index=False).values.tobytes()
    cid = hashlib.sha256(f"{site}\0{name}\0".encode() + key).hexdigest()[:12]
    return store.add_cohort(check.cases, name, site, source.spec or source.label, check.assumptions,
                            identifying_opt_in, cid)


def run_model(store: Store, cohort_id: str, predictor: Predictor, source: ImageSource, batch: int = 8,
              workers: int = 2, cache: dict | None = None, progress: Callable[[int, int], None] | None = None) -> str:
    """Predict every case of the cohort that has no result yet for this model version; returns the run id.
    ``cache`` holds model inputs from the dry run (:attr:`CohortCheck.inputs`); other cases are decoded
    here, in ``workers`` threads running ahead of the model."""
    run_id = store.run_for(cohort_id, predictor.card.name, predictor.hash, str(predictor.model_dir),
                           bool(predictor.card.synthetic_demo))
    cases = store.cases(cohort_id).set_index("case_id")
    todo = store.pending(run_id)
    total, done = len(cases), len(cases) - len(todo)
    cache = cache or {}

    def prepare(cid):
        hit = cache.get(cid)
        if hit is not None and hit[0].shape[-1] == predictor.input_size and predictor.standard_input:
            return cid, hit[0].astype(np.float32), hit[1], None
        row = cases.loc[cid]
        try:
            rad = load_radiograph(source.read(row["image"]), name=row["image"])
            box = parse_box(row["crop_box"]) or "auto"
            given = row.get("pixel_spacing_mm")
            spacing = rad.pixel_spacing_mm or (float(given) if given is not None and pd.notna(given) else None)
            return cid, predictor.prepare(rad.pixels, box, spacing), rad.body_part, None
        except (KneeageError, OSError) as e:
            return cid, None, None, str(e).rstrip(".")

    with ThreadPoolExecutor(workers) as pool:
        prepared = pool.map(prepare, todo)  # decoding runs ahead of the model
        while True:
            chunk = [p for _, p in zip(range(batch), prepared)]
            if not chunk:
                break
            ok = [c for c in chunk if c[1] is not None]
            rows = [{"case_id": cid, "status": "failed", "error": err} for cid, x, _, err in chunk if x is None]
            if ok:
                ids = [c[0] for c in ok]
                chron = [None if pd.isna(cases.at[i, "chronological_age_months"]) else float(cases.at[i, "chronological_age_months"])
                         for i in ids]
                preds = predictor.predict_many([c[1] for c in ok], [cases.at[i, "sex"] for i in ids], chron, [c[2] for c in ok])
                for cid, p in zip(ids, preds):
                    # A refused image is stored without a number (nothing downstream can show one, the reading
                    # room's assisted arm included); a censored knee with its lower bound ("at least").
                    refused = p.refusal in ("not_a_knee", "unlike_training")
                    rows.append({"case_id": cid, "status": "done",
                                 "predicted_bone_age_months": None if refused else p.censored_from_months or p.bone_age_months,
                                 "interval_lower": None if p.refusal else p.interval_months[0],
                                 "interval_upper": None if p.refusal else p.interval_months[1],
                                 "fold_values": json.dumps([] if refused else [round(v, 3) for v in p.fold_values_months]),
                                 "flags": ";".join(p.flags), "error": None})
            store.save_results(run_id, rows)
            done += len(chunk)
            if progress:
                progress(done, total)
    store.finish(run_id)
    return run_id


def case_table(store: Store, run_id: str) -> pd.DataFrame:
    """The per-case export: de-identified columns plus comparators, one row per case."""
    from .predictions import own_column

    df = store.results(run_id)
    own = own_column(store.run(run_id))  # a run of predictions made elsewhere is not its own comparator
    cols = CASE_COLUMNS + sorted(c for c in df.columns if c.startswith("comparator_") and c != own)
    for c in cols:
        if c not in df:
            df[c] = np.nan
    out = df[cols].copy()
    out["error_months"] = out.predicted_bone_age_months - out.reference_bone_age_months
    return out


def recalibrate(predicted, reference, folds: int = 5, seed: int = 0) -> dict:
    """Cross-validated linear recalibration reference ≈ a + b·predicted: each case is corrected by a line
    fitted on the other folds; reports MAE before and after and the line fitted on all cases."""
    p, r = stats._pairs(predicted, reference, ("predicted", "reference"))
    if p.size < 2 * folds:
        raise StatsError(f"recalibration needs at least {2 * folds} cases, got {p.size}.")
    fold = np.random.default_rng(seed).permutation(p.size) % folds
    corrected = np.empty_like(p)
    for k in range(folds):
        b, a = np.polyfit(p[fold != k], r[fold != k], 1)
        corrected[fold == k] = a + b * p[fold == k]
    b, a = np.polyfit(p, r, 1)
    before, after = stats.error_summary(p, r), stats.error_summary(corrected, r)
    return {"intercept": float(a), "slope": float(b), "folds": folds, "mae_before": before.mae,
            "mae_after": after.mae, "bias_before": before.bias, "bias_after": after.bias,
            "corrected": corrected.tolist()}


def analyse(cases: pd.DataFrame, n_boot: int = stats.N_BOOT) -> dict:
    """Agreement of the model with the reference on the cases that have both (the summary JSON)."""
    ok = cases[(cases.status == "done") & cases.reference_bone_age_months.notna()].reset_index(drop=True)
    out: dict = {"n_cases": int(len(cases)), "n_done": int((cases.status == "done").sum()),
                 "n_failed": int((cases.status == "failed").sum()), "n": int(len(ok)),
                 "n_pending": int((cases.status == "pending").sum())}
    out["complete"] = out["n_pending"] == 0  # an interrupted run's results are partial, and say so
    flags = cases["flags"].dropna().astype(str).str.split(";").explode()
    out["flags"] = {k: int(v) for k, v in flags[flags != ""].value_counts().items()}  # quality flags raised
    # Withheld results (kneeage.predict.REFUSALS) leave the agreement statistics and are counted by reason; a
    # knee censored as skeletally mature ("at least N months", N stored as its estimate) is checked against
    # its reference read instead.
    reason = ok["flags"].fillna("").astype(str).str.split(";").map(lambda f: next((x for x in f if x in REFUSALS), None))
    out["withheld"] = {k: int(v) for k, v in reason.dropna().value_counts().items()}
    mature = ok[reason == "skeletally_mature"]
    if len(mature):
        gap = mature.reference_bone_age_months - mature.predicted_bone_age_months
        out["censored"] = {"n": int(len(mature)), "reference_at_or_above_bound": float((gap >= 0).mean()),
                           "reference_within_12_months_below": float((gap >= -12).mean()),
                           "reference_min_months": float(mature.reference_bone_age_months.min())}
    ok = ok[reason.isna()].reset_index(drop=True)
    out["n"] = int(len(ok))
    if len(ok) < 3:
        out["note"] = "fewer than 3 cases with both a prediction and a reference; no agreement statistics."
        return out
    pred, ref = ok.predicted_bone_age_months, ok.reference_bone_age_months
    not_computed: dict[str, str] = {}

    def attempt(name: str, fn: Callable):
        """One statistic; if it cannot be computed on these data, its reason is recorded and the rest goes on."""
        try:
            return fn()
        except KneeageError as e:
            not_computed[name] = str(e)
        except (ValueError, ArithmeticError, IndexError, np.linalg.LinAlgError) as e:
            not_computed[name] = f"it could not be computed on these data ({type(e).__name__})."
        return None

    es = attempt("error summary", lambda: stats.error_summary(pred, ref, n_boot=n_boot))
    if es is not None:
        out.update({k: v for k, v in es.as_dict().items() if k != "n"})
    ba = attempt("Bland-Altman", lambda: stats.bland_altman(pred, ref))
    if ba is not None:
        out.update(sd=ba.sd, loa_lower=ba.loa_lower, loa_upper=ba.loa_upper, loa_lower_ci=list(ba.loa_lower_ci),
                   loa_upper_ci=list(ba.loa_upper_ci), loa_lower_ci_exact=list(ba.loa_lower_ci_exact),
                   loa_upper_ci_exact=list(ba.loa_upper_ci_exact), proportional_bias_slope=ba.slope,
                   proportional_bias_slope_ci=list(ba.slope_ci), proportional_bias_p=ba.slope_p)
    for key, name, fn in (("concordance", "Lin's concordance", lambda: stats.concordance(pred, ref).as_dict()),
                          ("passing_bablok", "Passing-Bablok regression", lambda: stats.passing_bablok(ref, pred).as_dict())):
        v = attempt(name, fn)
        if v is not None:
            out[key] = v
    out["stratified"] = attempt("stratified results", lambda: stats.stratified(
        ok.assign(age_band=stats.age_band(ok.chronological_age_months.fillna(-1))), "predicted_bone_age_months",
        "reference_bone_age_months", n_boot=min(n_boot, 500)).to_dict("records")) or []
    comparisons = {}
    naive = [("chronological age", "chronological_age_months")] + [
        (c.removeprefix("comparator_"), c) for c in ok.columns if c.startswith("comparator_")]
    for label, col in naive:
        both = ok[ok[col].notna()]
        if len(both) >= 3:
            c = attempt(f"comparison with {label}", lambda: stats.compare_errors(
                both.predicted_bone_age_months, both[col], both.reference_bone_age_months, n_boot=n_boot))
            if c is not None:
                comparisons[label] = c.as_dict() | {"column": col, "mae_other": c.mae_b}
    out["comparisons"] = comparisons
    worst = ok.assign(abs_error=(pred - ref).abs()).nlargest(min(8, len(ok)), "abs_error")
    out["worst_cases"] = worst[["case_id", "predicted_bone_age_months", "reference_bone_age_months", "abs_error"]].to_dict("records")
    if len(ok) >= 10:
        rc = attempt("site recalibration", lambda: recalibrate(pred, ref))
        if rc is not None:
            rc.pop("corrected")
            out["recalibration"] = rc
    out["interval_coverage"] = attempt("interval coverage", lambda: interval_coverage(ok))
    clinical = attempt("clinical view", lambda: growth.clinical_view(ok))  # errors over 6/12/24 months, ±2 SD, knee growth (#20)
    if clinical is not None:
        out["clinical"] = clinical
    out["not_computed"] = not_computed
    return json.loads(json.dumps(out, default=float))


def interval_coverage(cases: pd.DataFrame) -> dict | None:
    """The share of reference reads inside the model's interval, overall and by band of the model's
    estimate (the interval is calibrated per band of estimated age); None when the model gives no interval."""
    if not {"interval_lower", "interval_upper"} <= set(cases.columns):
        return None
    has = cases.interval_lower.notna() & cases.interval_upper.notna()
    if not has.any():
        return None
    d = cases[has]
    inside = (d.interval_lower <= d.reference_bone_age_months) & (d.reference_bone_age_months <= d.interval_upper)
    band = stats.age_band(d.predicted_bone_age_months)
    return {"overall": float(inside.mean()), "n": int(len(d)),
            "by_band": [{"band": str(b), "n": int((band == b).sum()), "coverage": float(inside[band == b].mean())}
                        for b in band.categories if (band == b).any()]}


# ------------------------------------------------------------------------------------- pooling


BUNDLE_MEMBER_MB = 512  # cases.csv of 100,000 cases is ~20 MB; anything far larger is not a bundle


def read_bundle(source, name: str | None = None) -> tuple[pd.DataFrame, dict]:
    """A site bundle's de-identified per-case table and its metadata, from a path or the bundle's bytes.
    Errors name the file (``name``, else the path), never its contents."""
    import io
    import zipfile

    if name is None:
        name = "bundle" if isinstance(source, (bytes, bytearray)) else str(getattr(source, "name", source))
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as z:
            members = {i.filename: i for i in z.infolist()}
            for need in ("cases.csv", "meta.json"):
                if need not in members:
                    raise KneeageError(f"{name}: not a kneeage site bundle (it has no {need}).")
                if members[need].file_size > BUNDLE_MEMBER_MB * 2**20:
                    raise KneeageError(f"{name}: not a kneeage site bundle ({need} unpacks to over {BUNDLE_MEMBER_MB} MB).")
            cases = pd.read_csv(io.BytesIO(z.read("cases.csv")))
            meta = json.loads(z.read("meta.json"))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, UnicodeDecodeError, RuntimeError):
        raise KneeageError(f"{name}: not a kneeage site bundle (not a readable zip with cases.csv and meta.json).") from None
    if not isinstance(meta, dict):
        raise KneeageError(f"{name}: not a kneeage site bundle (meta.json is not an object).")
    for need in ("predicted_bone_age_months", "reference_bone_age_months", "status"):
        if need not in cases:
            raise KneeageError(f"{name}: the bundle's cases.csv has no {need!r} column.")
    return cases, meta


def _heterogeneity(est: np.ndarray, se: np.ndarray) -> dict:
    """Inverse-variance fixed-effect pool, Cochran's Q, I² = max(0, (Q − df)/Q) and the DerSimonian-Laird
    random-effects pool with τ²."""
    w = 1 / se**2
    fixed = float((w * est).sum() / w.sum())
    q = float((w * (est - fixed) ** 2).sum())
    df = len(est) - 1
    tau2 = max(0.0, (q - df) / (w.sum() - (w**2).sum() / w.sum())) if df > 0 else 0.0
    wr = 1 / (se**2 + tau2)
    rand = float((wr * est).sum() / wr.sum())
    se_r = float(np.sqrt(1 / wr.sum()))
    from scipy import stats as st

    return {"fixed": fixed, "random": rand, "random_ci": [rand - 1.959964 * se_r, rand + 1.959964 * se_r],
            "Q": q, "df": df, "Q_p": float(st.chi2.sf(q, df)) if df > 0 else None,
            "I2": max(0.0, (q - df) / q) if q > 0 else 0.0, "tau2": tau2}


def _site_clinical(ok: pd.DataFrame) -> dict:
    """One site's clinical view of error as flat columns for the pooling table (issue #20)."""
    cv = growth.clinical_view(ok)
    row = {f"over_{t}": (cv.get("over") or {}).get(str(t), {}).get("share") for t in stats.WITHIN_MONTHS}
    row["kappa"] = (cv.get("sds_agreement") or {}).get("kappa")
    row["knee_over_1cm"] = (cv.get("knee_growth") or {}).get("share")
    return row


def pool(bundles: list[tuple[pd.DataFrame, dict]], n_boot: int = stats.N_BOOT) -> dict:
    """Per-site MAE and bias with CIs, heterogeneity across sites, and all cases pooled."""
    if len(bundles) < 2:
        raise StatsError(f"pooling needs at least two readable site bundles; there {'is' if len(bundles) == 1 else 'are'} "
                         f"{len(bundles)}.")
    sites, frames = [], []
    for cases, meta in bundles:
        ok = cases[(cases.status == "done") & cases.reference_bone_age_months.notna()
                   & cases.predicted_bone_age_months.notna()]
        label = f"{meta.get('site') or 'site'} / {meta.get('cohort') or ''}".strip(" /")
        if len(ok) < 3:
            raise StatsError(f"{label}: fewer than 3 cases with a prediction and a reference.")
        e = (ok.predicted_bone_age_months - ok.reference_bone_age_months).to_numpy(float)
        s = stats.error_summary(ok.predicted_bone_age_months, ok.reference_bone_age_months, n_boot=n_boot)
        sites.append({"site": label, "model_hash": meta.get("model_hash"), "n": s.n, "mae": s.mae,
                      "mae_lower": s.mae_ci[0], "mae_upper": s.mae_ci[1], "mae_se": float(np.abs(e).std(ddof=1) / np.sqrt(s.n)),
                      "bias": s.bias, "bias_lower": s.bias_ci[0], "bias_upper": s.bias_ci[1],
                      "bias_se": float(e.std(ddof=1) / np.sqrt(s.n)), **_site_clinical(ok)})
        frames.append(ok.assign(site=label))
    if len({s["site"] for s in sites}) < len(sites):
        raise StatsError("two bundles come from the same site and cohort; pool each bundle once.")
    table = pd.DataFrame(sites)
    hashes = set(table.model_hash.dropna())
    allc = pd.concat(frames, ignore_index=True)
    pooled = stats.error_summary(allc.predicted_bone_age_months, allc.reference_bone_age_months, n_boot=n_boot)
    return {"sites": table.to_dict("records"), "n_sites": len(sites), "same_model": len(hashes) <= 1,
            "pooled": pooled.as_dict(), "clinical": json.loads(json.dumps(growth.clinical_view(allc), default=float)),
            "mae_heterogeneity": _heterogeneity(table.mae.to_numpy(), table.mae_se.to_numpy()) if len(sites) > 1 else None,
            "bias_heterogeneity": _heterogeneity(table.bias.to_numpy(), table.bias_se.to_numpy()) if len(sites) > 1 else None}


def results_for(store: Store, run_id: str, n_boot: int = stats.N_BOOT) -> tuple[pd.DataFrame, dict, dict]:
    """(per-case table, summary, metadata for exports) of a stored run."""
    run = store.run(run_id)
    cohort = store.cohort(run["cohort_id"])
    cases = case_table(store, run_id)
    meta = {"site": cohort["site"], "cohort": cohort["name"], "cohort_id": cohort["id"], "run_id": run_id,
            "model_name": run["model_name"], "model_hash": run["model_hash"],
            "synthetic_demo": bool(run["synthetic_demo"]), "assumptions": json.loads(cohort["assumptions"] or "[]")}
    from .predictions import source_of

    meta["prediction_source"] = source_of(run)  # a model here, an imported file, or a column made elsewhere
    return cases, analyse(cases, n_boot), meta


def worst_gallery(store: Store, run_id: str, predictor: Predictor, worst: list[dict],
                  source: ImageSource | None = None, method: str = "gradcam") -> list[dict]:
    """Saliency overlays of the given worst cases, read again from ``source`` (default: the cohort's
    stored folder)."""
    from .cohort import open_source
    from .predict import overlay

    run = store.run(run_id)
    if method not in predictor.saliency_methods:  # an imported model: what its runtime allows, or its reason why not
        method = predictor.saliency_methods[0] if predictor.saliency_methods else method
    source = source or open_source(store.cohort(run["cohort_id"])["source"])
    cases = store.cases(run["cohort_id"]).set_index("case_id")
    out = []
    for w in worst:
        row = cases.loc[w["case_id"]]
        rad = load_radiograph(source.read(row["image"]), name=row["image"])
        given = row.get("pixel_spacing_mm")
        spacing = rad.pixel_spacing_mm or (float(given) if given is not None and pd.notna(given) else None)
        framing = predictor.frame(rad.pixels, parse_box(row["crop_box"]) or "auto", spacing)
        x = predictor.prepare(rad.pixels, framing=framing)
        sal = predictor.saliency(x, row["sex"], method, chron_months=row["chronological_age_months"])
        out.append({"case_id": w["case_id"], "overlay": overlay(x, sal, 0.5), "framed": framed_thumbnail(rad.pixels, framing),
                    "predicted": w["predicted_bone_age_months"], "reference": w["reference_bone_age_months"]})
    return out


def compare_runs(store: Store, run_a: str, run_b: str, n_boot: int = stats.N_BOOT) -> dict:
    """Two model versions on the same cohort: each one's MAE and the paired difference (A − B) on the
    cases both predicted and that have a reference."""
    a, b = store.run(run_a), store.run(run_b)
    if a["cohort_id"] != b["cohort_id"]:
        raise StatsError("the two runs are on different cohorts; compare runs of the same cohort.")
    ca, cb = case_table(store, run_a), case_table(store, run_b)
    both = ca.merge(cb[["case_id", "predicted_bone_age_months", "status"]], on="case_id", suffixes=("_a", "_b"))
    both = both[(both.status_a == "done") & (both.status_b == "done") & both.reference_bone_age_months.notna()]
    c = stats.compare_errors(both.predicted_bone_age_months_a, both.predicted_bone_age_months_b,
                             both.reference_bone_age_months, n_boot=n_boot)
    return c.as_dict() | {"model_a": f"{a['model_name']} ({a['model_hash']})", "model_b": f"{b['model_name']} ({b['model_hash']})"}
