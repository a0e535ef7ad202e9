"""External validation: ingest a checked cohort, run a model over it (resumable), analyse agreement.

The run decodes images in a thread pool while the model works through batches; each batch of results
is one database transaction, so a crash loses at most the batch in flight and a restart continues with
the cases that have no result yet. All statistics come from :mod:`kneeage.stats` on the per-case table
that is also exported, so the report and the CSV agree.
"""

from __future__ import annotations

import io
import json
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import calibration, growth, predictions, stats
from .cohort import CohortCheck, ImageSource, check_cohort, open_source, read_case, read_manifest
from .errors import InputError, KneeageError, ModelError, StatsError
from .localise import framed_thumbnail
from .predict import REFUSALS, PreparedCase, Predictor, overlay
from .store import Store

CASE_COLUMNS = ["case_id", "sex", "chronological_age_months", "reference_bone_age_months", "predicted_bone_age_months",
                "interval_lower", "interval_upper", "status", "flags", "error", "reference_method", "reader"]

Progress = Callable[[str, int, int], None]  # (what is being done, done, total)


# ------------------------------------------------------------------------------------ workflow


def dry_run(manifest, source: ImageSource, manifest_name: str = "manifest.csv", model: Predictor | None = None,
            opt_in_identifying: bool = False, workers: int = 2, progress: Progress | None = None) -> CohortCheck:
    """Check a cohort before anything is stored: every image opened (and its input for ``model`` kept for
    the run), or, for predictions made elsewhere (:class:`kneeage.predictions.NoImages`), the
    prediction columns."""
    if isinstance(source, predictions.NoImages):
        return predictions.check_predictions(manifest, manifest_name)
    return check_cohort(read_manifest(manifest, manifest_name), source, workers,
                        progress=(lambda k, n: progress("checking", k, n)) if progress else None,
                        model=model, opt_in_identifying=opt_in_identifying)


@dataclass(frozen=True)
class Validation:
    """What :func:`validate_cohort` did: the dry run, the stored cohort and one run per model (or prediction
    column); each run's results come from :func:`results_for`."""

    check: CohortCheck
    cohort_id: str
    run_ids: tuple[str, ...]


def validate_cohort(store: Store, manifest, source: ImageSource, predictors: Sequence[Predictor] = (), *,
                    name: str, site: str, manifest_name: str = "manifest.csv", check: CohortCheck | None = None,
                    opt_in_identifying: bool = False, batch: int = 8, workers: int = 2,
                    on_check: Callable[[CohortCheck], None] | None = None, progress: Progress | None = None) -> Validation:
    """External validation of one cohort, as the page and ``python -m kneeage validate`` run it: the dry run
    (unless ``check`` is one already made from the same inputs), shown to ``on_check``; then the cohort
    stored and each model run over it, resumably (or, with :class:`kneeage.predictions.NoImages`, each
    prediction column recorded as a run). Refuses a cohort without usable cases before storing anything."""
    if check is None:
        check = dry_run(manifest, source, manifest_name, predictors[0] if predictors else None, opt_in_identifying,
                        workers, progress)
    if on_check:
        on_check(check)
    if not check.summary["usable"]:
        raise InputError("no usable cases.")
    if isinstance(source, predictions.NoImages):
        cohort_id, run_ids = predictions.ingest(store, check, name, site, manifest_name)
        return Validation(check, cohort_id, tuple(run_ids))
    cohort_id = ingest(store, check, name, site, source, opt_in_identifying)
    run_ids = []
    for pred in predictors:
        what = f"predicting with {pred.card.name}"
        run_ids.append(run_model(store, cohort_id, pred, source, batch, workers, check.inputs,
                                 (lambda k, n, what=what: progress(what, k, n)) if progress else None))
    return Validation(check, cohort_id, tuple(run_ids))


def resume(store: Store, run_id: str, load: Callable[[str], Predictor] = Predictor, uploaded: ImageSource | None = None,
           progress: Callable[[int, int], None] | None = None) -> str:
    """Finish an interrupted run with its own model (``load(model_dir)``), reading the cohort's images again
    (an uploaded zip only from ``uploaded``, the same upload)."""
    run = store.run(run_id)
    source = open_source(store.cohort(run["cohort_id"])["source"], uploaded)
    predictor = load(run["model_dir"])
    if predictor.hash != run["model_hash"]:
        raise ModelError(f"{run['model_dir']}: the model there is not the one this run used (weights hash "
                         f"{predictor.hash}, the run's {run['model_hash']}); run it as a new model instead.")
    return run_model(store, run["cohort_id"], predictor, source, progress=progress)


# ------------------------------------------------------------------------------ ingest and run


def ingest(store: Store, check: CohortCheck, name: str, site: str, source: ImageSource,
           identifying_opt_in: bool = False) -> str:
    """Store the usable cases of a dry run; returns the cohort id (:meth:`CohortCheck.fingerprint`: ingesting
    the same cohort again, e.g. after a crash, finds the stored one)."""
    return store.add_cohort(check.cases, name, site, source.ref.text(), check.assumptions, identifying_opt_in,
                            check.fingerprint(name, site))


def run_model(store: Store, cohort_id: str, predictor: Predictor, source: ImageSource, batch: int = 8,
              workers: int = 2, cache: dict | None = None, progress: Callable[[int, int], None] | None = None) -> str:
    """Predict every case of the cohort that has no result yet for this model version; returns the run id.
    ``cache`` holds model inputs from the dry run (:attr:`CohortCheck.inputs`; used where this model made
    them); other cases are decoded here, in ``workers`` threads running ahead of the model."""
    run_id = store.run_for(cohort_id, predictor.card.name, predictor.hash, str(predictor.model_dir),
                           bool(predictor.card.synthetic_demo))
    cases = store.cases(cohort_id).set_index("case_id")
    todo = store.pending(run_id)
    total, done = len(cases), len(cases) - len(todo)
    cache = cache or {}

    def prepare(cid) -> PreparedCase:
        row = cases.loc[cid]
        chron = None if pd.isna(row["chronological_age_months"]) else float(row["chronological_age_months"])
        hit = cache.get(cid)
        if hit is not None and hit[2] == predictor.hash:
            return PreparedCase(cid, hit[0].astype(np.float32), row["sex"], chron, hit[1])
        try:
            case = read_case(source, row["image"], row["crop_box"], row.get("pixel_spacing_mm"))
            return PreparedCase(cid, predictor.prepare(case.radiograph.pixels, case.box, case.spacing_mm), row["sex"],
                                chron, case.radiograph.body_part)
        except (KneeageError, OSError) as e:
            return PreparedCase(cid, None, error=str(e).rstrip("."))

    with ThreadPoolExecutor(workers) as pool:
        for chunk in predictor.predict_batches(pool.map(prepare, todo), batch):  # decoding runs ahead of the model
            rows = []
            for c, p in chunk:
                if p is None:
                    rows.append({"case_id": c.key, "status": "failed", "error": c.error})
                    continue
                # A refused image is stored without a number (nothing downstream can show one, the reading
                # room's assisted arm included); a censored knee with its lower bound ("at least").
                refused = p.refusal in ("not_a_knee", "unlike_training")
                rows.append({"case_id": c.key, "status": "done",
                             "predicted_bone_age_months": None if refused else p.censored_from_months or p.bone_age_months,
                             "interval_lower": None if p.refusal else p.interval_months[0],
                             "interval_upper": None if p.refusal else p.interval_months[1],
                             "fold_values": json.dumps([] if refused else [round(v, 3) for v in p.fold_values_months]),
                             "flags": ";".join(p.flags), "error": None})
            store.save_results(run_id, sorted(rows, key=lambda r: r["status"] != "failed"))
            done += len(chunk)
            if progress:
                progress(done, total)
    store.finish(run_id)
    return run_id


def case_table(store: Store, run_id: str) -> pd.DataFrame:
    """The per-case export: de-identified columns plus comparators, one row per case."""
    df = store.results(run_id)
    own = predictions.own_column(store.run(run_id))  # a run of predictions made elsewhere is not its own comparator
    cols = CASE_COLUMNS + sorted(c for c in df.columns if c.startswith("comparator_") and c != own)
    for c in cols:
        if c not in df:
            df[c] = np.nan
    out = df[cols].copy()
    out["error_months"] = out.predicted_bone_age_months - out.reference_bone_age_months
    return out


# ------------------------------------------------------------------------------------ analysis


@dataclass(frozen=True)
class Censored(stats._Result):
    """Knees the model censored as skeletally mature ("at least N months"), checked against their reference."""

    n: int
    reference_at_or_above_bound: float
    reference_within_12_months_below: float
    reference_min_months: float


@dataclass(frozen=True)
class Comparison:
    """The model against a naive or comparator estimate (manifest column ``column``) on the same cases."""

    column: str
    result: stats.PairedComparison

    def as_dict(self) -> dict:
        return self.result.as_dict() | {"column": self.column, "mae_other": self.result.mae_b}


@dataclass(frozen=True)
class ValidationSummary:
    """Agreement of a model with the reference on one run's cases. Counts always; with fewer than 3 cases
    that have both a prediction and a reference, a ``note`` instead of statistics. A statistic that could not
    be computed is None and its reason is in ``not_computed``. :meth:`as_dict` is the summary JSON."""

    n_cases: int
    n_done: int
    n_failed: int
    n: int  # cases in the agreement statistics: done, with a reference, not withheld
    n_pending: int
    flags: dict  # quality flag → cases that raised it
    withheld: dict  # refusal (kneeage.predict.REFUSALS) → cases withheld for it
    censored: Censored | None = None
    note: str | None = None
    errors: stats.ErrorSummary | None = None
    bland_altman: stats.BlandAltman | None = None
    concordance: stats.Concordance | None = None
    passing_bablok: stats.LineFit | None = None
    stratified: tuple = ()  # rows of stats.stratified
    comparisons: dict = field(default_factory=dict)  # label → Comparison
    worst_cases: tuple = ()  # rows: case_id, predicted, reference, abs_error
    recalibration: stats.Recalibration | None = None
    interval_coverage: dict | None = None  # kneeage.calibration.coverage
    clinical: dict | None = None  # kneeage.growth.clinical_view
    not_computed: dict = field(default_factory=dict)  # statistic → why not

    @property
    def complete(self) -> bool:
        """False for an interrupted run: its results, and exports, are partial."""
        return self.n_pending == 0

    def as_dict(self) -> dict:
        """The summary JSON (summary.json, the site bundle, the pages): the statistics flattened as they have
        always been exported."""
        out = {"n_cases": self.n_cases, "n_done": self.n_done, "n_failed": self.n_failed, "n": self.n,
               "n_pending": self.n_pending, "complete": self.complete, "flags": self.flags, "withheld": self.withheld}
        if self.censored is not None:
            out["censored"] = self.censored
        if self.note is not None:
            return stats.json_ready(out | {"note": self.note})
        if self.errors is not None:
            out.update({k: v for k, v in self.errors.as_dict().items() if k != "n"})
        ba = self.bland_altman
        if ba is not None:
            out.update(sd=ba.sd, loa_lower=ba.loa_lower, loa_upper=ba.loa_upper, loa_lower_ci=ba.loa_lower_ci,
                       loa_upper_ci=ba.loa_upper_ci, loa_lower_ci_exact=ba.loa_lower_ci_exact,
                       loa_upper_ci_exact=ba.loa_upper_ci_exact, proportional_bias_slope=ba.slope,
                       proportional_bias_slope_ci=ba.slope_ci, proportional_bias_p=ba.slope_p)
        for key in ("concordance", "passing_bablok"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update(stratified=self.stratified, comparisons=self.comparisons, worst_cases=self.worst_cases)
        if self.recalibration is not None:
            out["recalibration"] = {k: v for k, v in self.recalibration.as_dict().items() if k != "corrected"}
        out["interval_coverage"] = self.interval_coverage
        if self.clinical is not None:
            out["clinical"] = self.clinical
        out["not_computed"] = self.not_computed
        return stats.json_ready(out)


def analyse(cases: pd.DataFrame, n_boot: int = stats.N_BOOT) -> ValidationSummary:
    """Agreement of the model with the reference on the cases that have both."""
    ok = cases[(cases.status == "done") & cases.reference_bone_age_months.notna()].reset_index(drop=True)
    flags = cases["flags"].dropna().astype(str).str.split(";").explode()
    # Withheld results (kneeage.predict.REFUSALS) leave the agreement statistics and are counted by reason; a
    # knee censored as skeletally mature ("at least N months", N stored as its estimate) is checked against
    # its reference read instead.
    reason = ok["flags"].fillna("").astype(str).str.split(";").map(lambda f: next((x for x in f if x in REFUSALS), None))
    mature = ok[reason == "skeletally_mature"]
    censored = None
    if len(mature):
        gap = mature.reference_bone_age_months - mature.predicted_bone_age_months
        censored = Censored(int(len(mature)), float((gap >= 0).mean()), float((gap >= -12).mean()),
                            float(mature.reference_bone_age_months.min()))
    ok = ok[reason.isna()].reset_index(drop=True)
    counts = dict(n_cases=int(len(cases)), n_done=int((cases.status == "done").sum()),
                  n_failed=int((cases.status == "failed").sum()), n=int(len(ok)),
                  n_pending=int((cases.status == "pending").sum()),
                  flags={k: int(v) for k, v in flags[flags != ""].value_counts().items()},  # quality flags raised
                  withheld={k: int(v) for k, v in reason.dropna().value_counts().items()}, censored=censored)
    if len(ok) < 3:
        return ValidationSummary(**counts, note="fewer than 3 cases with both a prediction and a reference; no agreement statistics.")
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

    errors = attempt("error summary", lambda: stats.error_summary(pred, ref, n_boot=n_boot))
    ba = attempt("Bland-Altman", lambda: stats.bland_altman(pred, ref))
    ccc = attempt("Lin's concordance", lambda: stats.concordance(pred, ref))
    pb = attempt("Passing-Bablok regression", lambda: stats.passing_bablok(ref, pred))
    strata = attempt("stratified results", lambda: stats.stratified(
        ok.assign(age_band=stats.age_band(ok.chronological_age_months.fillna(-1))), "predicted_bone_age_months",
        "reference_bone_age_months", n_boot=min(n_boot, 500)).to_dict("records")) or []
    if errors is not None and strata and strata[0]["stratum"] == "all":  # one CI per quantity: the headline's
        strata[0] |= {"mae": errors.mae, "mae_lo": errors.mae_ci[0], "mae_hi": errors.mae_ci[1], "bias": errors.bias,
                      "bias_lo": errors.bias_ci[0], "bias_hi": errors.bias_ci[1]}
    comparisons = {}
    naive = [("chronological age", "chronological_age_months")] + [
        (c.removeprefix("comparator_"), c) for c in ok.columns if c.startswith("comparator_")]
    for label, col in naive:
        both = ok[ok[col].notna()]
        if len(both) >= 3:
            c = attempt(f"comparison with {label}", lambda: stats.compare_errors(
                both.predicted_bone_age_months, both[col], both.reference_bone_age_months, n_boot=n_boot))
            if c is not None:
                comparisons[label] = Comparison(col, c)
    worst = ok.assign(abs_error=(pred - ref).abs()).nlargest(min(8, len(ok)), "abs_error")
    recal = attempt("site recalibration", lambda: stats.recalibration(pred, ref)) if len(ok) >= 10 else None
    coverage = attempt("interval coverage", lambda: calibration.coverage(ok))
    clinical = attempt("clinical view", lambda: growth.clinical_view(ok))  # errors over 6/12/24 months, ±2 SD, knee growth (#20)
    return ValidationSummary(
        **counts, errors=errors, bland_altman=ba, concordance=ccc, passing_bablok=pb, stratified=tuple(strata),
        comparisons=comparisons,
        worst_cases=tuple(worst[["case_id", "predicted_bone_age_months", "reference_bone_age_months", "abs_error"]].to_dict("records")),
        recalibration=recal, interval_coverage=coverage, clinical=clinical, not_computed=not_computed)


# ------------------------------------------------------------------------------------- pooling


BUNDLE_MEMBER_MB = 512  # cases.csv of 100,000 cases is ~20 MB; anything far larger is not a bundle


def read_bundle(source, name: str | None = None) -> tuple[pd.DataFrame, dict]:
    """A site bundle's de-identified per-case table and its metadata, from a path or the bundle's bytes.
    Errors name the file (``name``, else the path), never its contents."""
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


def _site_clinical(ok: pd.DataFrame) -> dict:
    """One site's clinical view of error as flat columns for the pooling table (issue #20)."""
    cv = growth.clinical_view(ok)
    row = {f"over_{t}": (cv.get("over") or {}).get(str(t), {}).get("share") for t in stats.WITHIN_MONTHS}
    row["kappa"] = (cv.get("sds_agreement") or {}).get("kappa")
    row["knee_over_1cm"] = (cv.get("knee_growth") or {}).get("share")
    return row


@dataclass(frozen=True)
class PoolResult:
    """Sites pooled: one row per site (MAE and bias with CIs and standard errors, the clinical view), all
    cases pooled, and the heterogeneity of MAE and bias across sites. :meth:`as_dict` is pooled.json."""

    sites: tuple  # rows: site, model_hash, n, mae, mae_lower/upper/se, bias, bias_lower/upper/se, over_*, kappa, knee_over_1cm
    same_model: bool
    pooled: stats.ErrorSummary
    clinical: dict
    mae_heterogeneity: stats.Heterogeneity | None
    bias_heterogeneity: stats.Heterogeneity | None

    @property
    def n_sites(self) -> int:
        return len(self.sites)

    def as_dict(self) -> dict:
        return stats.json_ready({"sites": self.sites, "n_sites": self.n_sites, "same_model": self.same_model,
                                 "pooled": self.pooled, "clinical": self.clinical,
                                 "mae_heterogeneity": self.mae_heterogeneity, "bias_heterogeneity": self.bias_heterogeneity})


def pool(bundles: list[tuple[pd.DataFrame, dict]], n_boot: int = stats.N_BOOT) -> PoolResult:
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
                      "mae_lower": s.mae_ci[0], "mae_upper": s.mae_ci[1], "mae_se": stats.standard_error(np.abs(e)),
                      "bias": s.bias, "bias_lower": s.bias_ci[0], "bias_upper": s.bias_ci[1],
                      "bias_se": stats.standard_error(e), **_site_clinical(ok)})
        frames.append(ok.assign(site=label))
    if len({s["site"] for s in sites}) < len(sites):
        raise StatsError("two bundles come from the same site and cohort; pool each bundle once.")
    table = pd.DataFrame(sites)
    allc = pd.concat(frames, ignore_index=True)
    return PoolResult(
        tuple(table.to_dict("records")), len(set(table.model_hash.dropna())) <= 1,
        stats.error_summary(allc.predicted_bone_age_months, allc.reference_bone_age_months, n_boot=n_boot),
        growth.clinical_view(allc), stats.heterogeneity(table.mae, table.mae_se), stats.heterogeneity(table.bias, table.bias_se))


# ------------------------------------------------------------------------------------- results


def results_for(store: Store, run_id: str, n_boot: int = stats.N_BOOT) -> tuple[pd.DataFrame, ValidationSummary, dict]:
    """(per-case table, summary, metadata for exports) of a stored run."""
    run = store.run(run_id)
    cohort = store.cohort(run["cohort_id"])
    cases = case_table(store, run_id)
    meta = {"site": cohort["site"], "cohort": cohort["name"], "cohort_id": cohort["id"], "run_id": run_id,
            "model_name": run["model_name"], "model_hash": run["model_hash"],
            "synthetic_demo": bool(run["synthetic_demo"]), "assumptions": json.loads(cohort["assumptions"] or "[]"),
            "prediction_source": predictions.source_of(run)}  # a model here, an imported file, or a column made elsewhere
    return cases, analyse(cases, n_boot), meta


def worst_gallery(store: Store, run_id: str, predictor: Predictor | Callable[[str], Predictor], worst: list[dict],
                  uploaded: ImageSource | None = None, method: str | None = None) -> list[dict]:
    """Saliency overlays of the given worst cases, read again from the cohort's images (an uploaded zip only
    from ``uploaded``, the same upload); a cohort of predictions made elsewhere has none (InputError).
    ``predictor``: the model, or how to load one from the run's model directory (called once the images are
    known to be there)."""
    run = store.run(run_id)
    source = open_source(store.cohort(run["cohort_id"])["source"], uploaded)
    if not isinstance(predictor, Predictor):
        predictor = predictor(run["model_dir"] or "")
    method = method or predictor.default_saliency  # the map measured to point most at the physes (docs/saliency.md)
    if method not in predictor.saliency_methods:  # an imported model: what its runtime allows, or its reason why not
        method = predictor.saliency_methods[0] if predictor.saliency_methods else method
    cases = store.cases(run["cohort_id"]).set_index("case_id")
    out = []
    for w in worst:
        row = cases.loc[w["case_id"]]
        case = read_case(source, row["image"], row["crop_box"], row.get("pixel_spacing_mm"))
        framing = predictor.frame(case.radiograph.pixels, case.box, case.spacing_mm)
        x = predictor.prepare(case.radiograph.pixels, framing=framing)
        sal = predictor.saliency(x, row["sex"], method, chron_months=row["chronological_age_months"])
        out.append({"case_id": w["case_id"], "overlay": overlay(x, sal, 0.5), "framed": framed_thumbnail(case.radiograph.pixels, framing),
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
