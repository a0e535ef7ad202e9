"""Study planning: how many cases a validation cohort needs, and how many readers and cases a reader
study needs. Pure functions; formulas, assumptions and references in docs/statistics.md, section
"Planning a study".

Every function returns :class:`SampleSize` rows (or a table of them) that state their assumption, so a
page or the CLI can show it beside the number. Inputs are in months where they are bone ages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as st

from . import mrmc
from .errors import StatsError
from .stats import _Result

MAX_N = 100_000


@dataclass(frozen=True)
class SampleSize(_Result):
    """The smallest number of cases meeting one criterion."""

    criterion: str
    target: str
    n: int
    assumption: str
    reference: str


def _positive(**kw):
    for k, v in kw.items():
        if v is None or not np.isfinite(v) or v <= 0:
            raise StatsError(f"{k} must be a positive number, got {v}.")


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise StatsError(f"level must lie between 0 and 1, got {level}.")
    return float(st.norm.ppf(0.5 + level / 2))


# ------------------------------------------------------------------------- validation cohort


def n_for_mae(half_width: float, mae: float | None = None, sd_abs_error: float | None = None,
              level: float = 0.95) -> SampleSize:
    """n = ⌈(z·SD(|e|)/h)²⌉ for a CI of the MAE of half-width h. Without ``sd_abs_error``, errors are
    taken as normal with mean 0, so SD(|e|) = MAE·√(π/2 − 1)."""
    _positive(half_width=half_width)
    if sd_abs_error is None:
        _positive(mae=mae)
        sd_abs_error, how = mae * np.sqrt(np.pi / 2 - 1), (f"errors normal with mean 0 and MAE {mae:g} months, "
                                                          f"so SD(|e|) = MAE·√(π/2 − 1) = {mae * np.sqrt(np.pi / 2 - 1):.2f}")
    else:
        _positive(sd_abs_error=sd_abs_error)
        how = f"SD of the absolute errors {sd_abs_error:g} months (e.g. from a pilot)"
    n = int(np.ceil((_z(level) * sd_abs_error / half_width) ** 2))
    return SampleSize("MAE", f"{level:.0%} CI of the MAE ± {half_width:g} months", max(n, 3),
                      how + "; normal-approximation CI of a mean", "Standard CI of a mean")


def n_for_limits_of_agreement(half_width: float, sd: float, level: float = 0.95, approx: str = "1986") -> SampleSize:
    """Smallest n whose approximate CI of each 95% limit of agreement, limit ± t(n−1)·SE, has
    half-width ≤ h, with SE = s·√(3/n) (Bland & Altman 1986) or s·√(1/n + z²/(2(n−1))) (1999)."""
    _positive(half_width=half_width, sd=sd)
    if approx not in ("1986", "1999"):
        raise StatsError(f"approx must be '1986' or '1999', got {approx!r}.")
    z = _z(0.95)
    n = np.arange(3, MAX_N + 1)
    se = sd * (np.sqrt(3 / n) if approx == "1986" else np.sqrt(1 / n + z**2 / (2 * (n - 1))))
    ok = st.t.ppf(0.5 + level / 2, n - 1) * se <= half_width
    if not ok.any():
        raise StatsError(f"no cohort up to {MAX_N} cases reaches that precision of the limits of agreement.")
    formula = "s·√(3/n)" if approx == "1986" else "s·√(1/n + z²/(2(n−1)))"
    return SampleSize("limits of agreement", f"{level:.0%} CI of each limit ± {half_width:g} months", int(n[ok][0]),
                      f"differences normal with SD {sd:g} months; SE of a limit = {formula}",
                      f"Bland & Altman {approx}")


_ARCHER = "Archer et al. 2021 (Stat Med 40:133-146)"


def archer_r2(r2: float, width: float = 0.1, level: float = 0.95) -> SampleSize:
    """Archer et al. (2021) criterion 1: var(R²) ≈ 4R²(1 − R²)²/n, so n = 4R²(1 − R²)²/SE² with
    SE = width/(2z)."""
    if not 0 < r2 < 1:
        raise StatsError(f"R² must lie between 0 and 1, got {r2}.")
    _positive(width=width)
    se = width / (2 * _z(level))
    return SampleSize("R² (Archer 1)", f"{level:.0%} CI of R² of width {width:g}", int(np.ceil(4 * r2 * (1 - r2) ** 2 / se**2)),
                      f"anticipated R² {r2:.3f} in the validation population", _ARCHER)


def archer_citl(sd_error: float, width: float, level: float = 0.95) -> SampleSize:
    """Archer et al. (2021) criterion 2, calibration-in-the-large (the mean error, our bias):
    var(CITL) = var(Y − Ŷ)/n, so n = σ²_e/SE² with SE = width/(2z)."""
    _positive(sd_error=sd_error, width=width)
    se = width / (2 * _z(level))
    return SampleSize("calibration-in-the-large (Archer 2)", f"{level:.0%} CI of the bias of width {width:g} months",
                      int(np.ceil(sd_error**2 / se**2)), f"SD of the errors (model − reference) {sd_error:g} months", _ARCHER)


def archer_slope(sd_reference: float, sd_residual: float, slope: float = 1.0, width: float = 0.2,
                 level: float = 0.95) -> SampleSize:
    """Archer et al. (2021) criterion 3, calibration slope λ of the regression Y = α + λŶ + ε:
    var(λ̂) = σ²/((n − 1)·var(Ŷ)), so n = 1 + σ²/(SE²·var(Ŷ)), with var(Ŷ) = (var(Y) − σ²)/λ²
    (equivalently n = 1 + λ²(1 − R²)/(SE²·R²), R² = 1 − σ²/var(Y)); SE = width/(2z)."""
    _positive(sd_reference=sd_reference, sd_residual=sd_residual, width=width)
    if sd_residual >= sd_reference:
        raise StatsError("the residual SD must be smaller than the SD of the reference bone ages (R² > 0).")
    if slope == 0 or not np.isfinite(slope):
        raise StatsError(f"the anticipated calibration slope must be a non-zero number, got {slope}.")
    se = width / (2 * _z(level))
    var_pred = (sd_reference**2 - sd_residual**2) / slope**2
    r2 = 1 - sd_residual**2 / sd_reference**2
    n = int(np.ceil(1 + sd_residual**2 / (se**2 * var_pred)))
    return SampleSize("calibration slope (Archer 3)", f"{level:.0%} CI of the slope of width {width:g}", n,
                      f"SD of reference bone ages {sd_reference:g} and of residuals {sd_residual:g} months "
                      f"(R² {r2:.3f}); anticipated slope {slope:g}", _ARCHER)


def archer_residual_variance(max_mmoe: float = 1.1, level: float = 0.95) -> SampleSize:
    """Archer et al. (2021) criterion 4: the smallest n whose CI of the residual variance (χ² with n−1
    df) lies within a multiplicative margin of error: MMOE = √max(χ²_{1−α/2,n−1}/(n−1),
    (n−1)/χ²_{α/2,n−1}) < max_mmoe (1.1 = within 10%)."""
    if not max_mmoe > 1:
        raise StatsError(f"the multiplicative margin of error must exceed 1, got {max_mmoe}.")
    a = 1 - level
    n = np.arange(2, MAX_N + 1)
    mmoe = np.sqrt(np.maximum(st.chi2.ppf(1 - a / 2, n - 1) / (n - 1), (n - 1) / st.chi2.ppf(a / 2, n - 1)))
    ok = mmoe < max_mmoe
    if not ok.any():
        raise StatsError(f"no cohort up to {MAX_N} cases reaches that margin of error.")
    return SampleSize("residual variance (Archer 4)", f"{level:.0%} CI within ×{max_mmoe:g} of the true value",
                      int(n[ok][0]), "residuals normal (χ² CI of a variance)", _ARCHER)


def plan_cohort(*, mae: float, mae_half_width: float, sd_error: float, loa_half_width: float,
                sd_reference: float, bias_width: float | None = None, slope: float = 1.0, slope_width: float = 0.2,
                max_mmoe: float = 1.1, level: float = 0.95) -> pd.DataFrame:
    """Every cohort-size criterion as a table (criterion, target, n, assumption, reference); the
    cohort needs the largest n. ``sd_error`` is the SD of model − reference (also the residual SD
    about the calibration line when the slope is 1)."""
    rows = [n_for_mae(mae_half_width, mae=mae, level=level),
            n_for_limits_of_agreement(loa_half_width, sd_error, level=level),
            archer_citl(sd_error, bias_width if bias_width is not None else 2 * mae_half_width, level),
            archer_slope(sd_reference, sd_error, slope, slope_width, level),
            archer_residual_variance(max_mmoe, level)]
    return pd.DataFrame([r.as_dict() for r in rows])


# ----------------------------------------------------------------------------- reader study


@dataclass(frozen=True)
class Power(_Result):
    """Power of the ORH test of two conditions for J readers and K cases (Hillis et al. 2011):
    ``ncp`` noncentrality, ``df2`` denominator df (∞ for fixed readers), ``f_crit`` the critical
    F (or χ²) value at ``alpha``."""

    readers: int
    cases: int
    power: float
    ncp: float
    df2: float
    f_crit: float
    analysis: str


def orh_power(effect: float, n_readers: int, n_cases: int, *, var_reader_condition: float, var_error: float,
              cov1: float, cov2: float, cov3: float, pilot_cases: int, alpha: float = 0.05,
              analysis: str = "RRRC") -> Power:
    """Power to detect a difference ``effect`` between two conditions (Hillis, Obuchowski & Berbaum
    2011). Pilot error variance and covariances scale with pilot_cases/K; σ²_TR < 0 counts as 0.

    RRRC: den = σ²_TR + (K*/K)(Var − Cov1 + (J−1)·max(Cov2 − Cov3, 0)), ncp = J·d²/(2·den),
    df2 = den² / ((σ²_TR + (K*/K)(Var − Cov1 − max(Cov2 − Cov3, 0)))²/(J − 1)).
    FRRC: den without σ²_TR, a χ²(1) test (df2 = ∞; power from the noncentral χ²). RRFC: den = σ²_TR + (K*/K)(Var − Cov1 − max(Cov2 − Cov3, 0)),
    df2 = J − 1. Power = P(F(1, df2; ncp) > F_{1−α}(1, df2))."""
    if n_cases < 2 or pilot_cases < 2:
        raise StatsError("cases and pilot cases must each be at least 2.")
    if not 0 < alpha < 1:
        raise StatsError(f"alpha must lie between 0 and 1, got {alpha}.")
    power, ncp, df2, f_crit = _curve(effect, int(n_readers), np.array([float(n_cases)]), var_reader_condition=var_reader_condition,
                                     var_error=var_error, cov1=cov1, cov2=cov2, cov3=cov3, pilot_cases=pilot_cases,
                                     alpha=alpha, analysis=analysis)
    return Power(int(n_readers), int(n_cases), float(power[0]), float(ncp[0]), float(df2[0]), float(f_crit[0]), analysis)


def plan_reader_study(effect: float, *, var_reader_condition: float, var_error: float, cov1: float, cov2: float,
                      cov3: float, pilot_cases: int, readers=range(3, 16), power: float = 0.8, alpha: float = 0.05,
                      analysis: str = "RRRC", max_cases: int = 5000) -> pd.DataFrame:
    """For each number of readers, the smallest number of cases whose power exceeds ``power``
    (``cases`` is None where even ``max_cases`` is not enough)."""
    if not 0 < power < 1:
        raise StatsError(f"power must lie between 0 and 1, got {power}.")
    if effect == 0 or not np.isfinite(effect):
        raise StatsError("the difference to detect must be a non-zero number.")
    comps = dict(var_reader_condition=var_reader_condition, var_error=var_error, cov1=cov1, cov2=cov2, cov3=cov3,
                 pilot_cases=pilot_cases, alpha=alpha, analysis=analysis)
    ks = np.arange(2, max_cases + 1)
    rows = []
    for J in readers:
        p = _curve(effect, int(J), ks, **comps)[0]
        ok = np.flatnonzero(p > power)
        k = int(ks[ok[0]]) if ok.size else None
        rows.append({"readers": int(J), "cases": k, "power": float(p[ok[0]]) if ok.size else float(p[-1])})
    return pd.DataFrame(rows)


def _curve(effect, J, ks, **comps):
    """Power, ncp, df2 and critical F over an array of case numbers ``ks`` (formulas: orh_power)."""
    if J < 2:
        raise StatsError("readers must be at least 2.")
    vtr = max(comps["var_reader_condition"], 0.0)
    pos = max(comps["cov2"] - comps["cov3"], 0.0)
    scale = comps["pilot_cases"] / ks
    v, c1, a = comps["var_error"], comps["cov1"], comps["analysis"]
    if a == "RRRC":
        den = vtr + scale * (v - c1 + (J - 1) * pos)
        df2 = den**2 / ((vtr + scale * (v - c1 - pos)) ** 2 / (J - 1))
    elif a == "FRRC":
        den, df2 = scale * (v - c1 + (J - 1) * pos), np.full(ks.shape, np.inf)
    elif a == "RRFC":
        den, df2 = vtr + scale * (v - c1 - pos), np.full(ks.shape, J - 1.0)
    else:
        raise StatsError(f"analysis must be RRRC, FRRC or RRFC, got {a!r}.")
    if np.any(den <= 0):
        raise StatsError("the pilot variance components give a non-positive error variance; check them.")
    ncp = J * effect**2 / (2 * den)
    if a == "FRRC":  # fixed readers: χ²(1) test, noncentral χ² power
        crit = np.full(ks.shape, st.chi2.ppf(1 - comps["alpha"], 1))
        return st.ncx2.sf(crit, 1, ncp), ncp, df2, crit
    f_crit = st.f.ppf(1 - comps["alpha"], 1, df2)
    return st.ncf.sf(f_crit, 1, df2, ncp), ncp, df2, f_crit


def pilot_components(orh_result) -> dict:
    """The variance components :func:`orh_power` needs, from an ORH result (object or ``as_dict()``)."""
    d = orh_result.as_dict() if hasattr(orh_result, "as_dict") else orh_result
    c = d["components"]
    return {"var_reader_condition": c["var_reader_condition"], "var_error": c["var_error"], "cov1": c["cov1"],
            "cov2": c["cov2"], "cov3": c["cov3"], "pilot_cases": int(d["n_cases"])}


def pilot_from_reads(reads: pd.DataFrame, fom: str = "mae") -> dict:
    """Pilot variance components from a reader study's reads table (first reads, assisted vs
    unassisted, ORH with random readers and cases), plus the observed difference."""
    ok = reads[(reads.unreadable == 0) & reads.estimate_months.notna() & reads.reference_bone_age_months.notna()
               & (reads["repeat"] == 0)] if len(reads) else reads
    sec = mrmc.study_analysis(ok, foms=(fom,)).get("assisted_vs_unassisted") if len(ok) else None
    if not sec or fom not in sec or sec[fom]["readers_effect"] != "random":
        raise StatsError("the pilot has no assisted-vs-unassisted ORH analysis yet: it needs at least 2 readers "
                         "who read at least 3 of the same cases in both arms.")
    return pilot_components(sec[fom]) | {"observed_difference": sec[fom]["differences"][0]["estimate"]}
