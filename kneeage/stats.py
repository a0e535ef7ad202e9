"""Agreement statistics with stated formulas, checked against published values (docs/statistics.md).

Conventions, everywhere in this module:

* difference = method − reference (a positive bias means the method reads older);
* SD is the sample SD (ddof = 1);
* ``level`` is the two-sided confidence level (0.95 by default);
* inputs are 1-D sequences of finite numbers of equal length with at least 3 pairs, otherwise
  :class:`~kneeage.errors.StatsError` says which input is unusable;
* bootstrap CIs are BCa (Efron 1987) from :func:`scipy.stats.bootstrap` with a fixed seed, so a
  result is reproducible.

Results are frozen dataclasses that also behave as read-only mappings: ``r.mae`` and ``r["mae"]``.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as st

from .errors import StatsError

N_BOOT = 2000
SEED = 20240101
WITHIN_MONTHS = (6, 12, 24)
AGE_BANDS_MONTHS = (0, 60, 120, 156, 192, 600)  # 0-5, 5-10, 10-13, 13-16, 16+ years


class _Result:
    """Attribute and mapping access to a dataclass result."""

    def __getitem__(self, key):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def keys(self):
        return [f.name for f in fields(self)]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self.keys())

    def as_dict(self) -> dict:
        return _plain(asdict(self))


def _plain(v):
    """JSON-ready: tuples to lists, numpy scalars to floats."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def json_ready(v):
    """What a result is at an export: plain JSON types (results' ``as_dict()``, mapping keys as text, lists,
    Python numbers), so it reads back from JSON as it was written."""
    if hasattr(v, "as_dict"):
        return json_ready(v.as_dict())
    if isinstance(v, dict):
        return {str(k) if not isinstance(k, str) else k: json_ready(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_ready(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


# ----------------------------------------------------------------------------------------- input


def _vector(x, name: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as e:
        raise StatsError(f"{name}: values must be numbers ({e}).") from None
    if a.ndim != 1:
        raise StatsError(f"{name}: expected a 1-D sequence of numbers, got shape {a.shape}.")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise StatsError(f"{name}: value {bad[0] + 1} of {a.size} is missing or not finite.")
    return a


def _pairs(a, b, names=("method", "reference"), min_n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vector(a, names[0]), _vector(b, names[1])
    if x.size != y.size:
        raise StatsError(f"{names[0]} has {x.size} values but {names[1]} has {y.size}; they must pair up.")
    if x.size < min_n:
        raise StatsError(f"at least {min_n} pairs are needed, got {x.size}.")
    return x, y


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise StatsError(f"level must lie between 0 and 1, got {level}.")
    return float(st.norm.ppf(0.5 + level / 2))


def _t(level: float, df: float) -> float:
    return float(st.t.ppf(0.5 + level / 2, df))


def _takes_axis(statistic) -> bool:
    """Whether a statistic reduces along an ``axis`` argument (np.mean does): scipy then computes all
    resamples in one call, with the same resamples and result as one call per resample, several times faster."""
    try:
        return "axis" in inspect.signature(statistic).parameters
    except (TypeError, ValueError):  # no signature to inspect
        return False


def bootstrap_ci(values, statistic=np.mean, level: float = 0.95, n_boot: int = N_BOOT,
                 seed: int = SEED) -> tuple[float, float]:
    """BCa bootstrap CI of ``statistic`` over the cases (rows) of ``values``; a constant sample gives
    a zero-width interval at its value."""
    v = np.asarray(values, float)
    if np.ptp(v) == 0:
        s = float(statistic(v))
        return s, s
    # BCa may be undefined on these data (handled below): scipy says so by a warning, and numpy by
    # floating-point warnings. Not warnings.catch_warnings(): it is not thread-safe, and every Streamlit session
    # is a thread. np.errstate is per thread; the scipy filter is process-wide, narrow, and set again on
    # every call (a host such as pytest may reset the filters).
    warnings.filterwarnings("ignore", category=st.DegenerateDataWarning)
    with np.errstate(all="ignore"):
        r = st.bootstrap((v,), statistic, n_resamples=n_boot, confidence_level=level, method="BCa",
                         rng=np.random.default_rng(seed), vectorized=_takes_axis(statistic))
    lo, hi = float(r.confidence_interval.low), float(r.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):  # BCa undefined (e.g. almost constant) → percentile
        boots = r.bootstrap_distribution
        lo, hi = np.quantile(boots, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


# --------------------------------------------------------------------------------- error summary


@dataclass(frozen=True)
class ErrorSummary(_Result):
    """Error of estimates against a reference. ``within`` maps 6/12/24 months to the share of cases
    whose absolute error is at most that many months."""

    n: int
    mae: float
    mae_ci: tuple[float, float]
    rmse: float
    bias: float
    bias_ci: tuple[float, float]
    sd: float
    median_ae: float
    within: dict
    max_error: float
    level: float


def error_summary(predicted, reference, level: float = 0.95, n_boot: int = N_BOOT,
                  seed: int = SEED) -> ErrorSummary:
    """MAE = mean|e|, BCa bootstrap CI; RMSE = sqrt(mean e²); bias = mean e with the t-based CI
    bias ± t(n−1)·SD/√n; median absolute error; share with |e| ≤ 6, 12, 24; max |e| (e = predicted −
    reference)."""
    p, r = _pairs(predicted, reference, ("predicted", "reference"))
    e = p - r
    ae = np.abs(e)
    n = e.size
    sd = float(e.std(ddof=1))
    half = _t(level, n - 1) * sd / np.sqrt(n)
    return ErrorSummary(
        n=n, mae=float(ae.mean()), mae_ci=bootstrap_ci(ae, level=level, n_boot=n_boot, seed=seed),
        rmse=float(np.sqrt(np.mean(e**2))), bias=float(e.mean()),
        bias_ci=(float(e.mean() - half), float(e.mean() + half)), sd=sd,
        median_ae=float(np.median(ae)), within={m: float(np.mean(ae <= m)) for m in WITHIN_MONTHS},
        max_error=float(ae.max()), level=level)


def age_band(months) -> pd.Categorical:
    """Age bands (years) used for stratified results: 0-5, 5-10, 10-13, 13-16, 16+."""
    labels = ["0-5 y", "5-10 y", "10-13 y", "13-16 y", "16+ y"]
    return pd.cut(np.asarray(months, float), AGE_BANDS_MONTHS, right=False, labels=labels)


def stratified(df: pd.DataFrame, predicted: str, reference: str, by: Sequence[str] = ("sex", "age_band"),
               age: str = "chronological_age_months", level: float = 0.95, n_boot: int = N_BOOT) -> pd.DataFrame:
    """:func:`error_summary` for all cases and within each level of each ``by`` column (``age_band``
    is computed from ``age``). Strata with fewer than 3 cases report n only."""
    data = df[[c for c in {predicted, reference, age, *by} if c in df]].copy()
    if "age_band" in by and "age_band" not in df:
        data["age_band"] = age_band(data[age])
    rows = []
    groups = [("all", "all", data)] + [(col, str(k), g) for col in by
                                        for k, g in data.groupby(col, observed=True, sort=True)]
    for col, key, g in groups:
        row = {"stratum": col, "level": key, "n": len(g)}
        if len(g) >= 3:
            s = error_summary(g[predicted], g[reference], level=level, n_boot=n_boot)
            row.update(mae=s.mae, mae_lo=s.mae_ci[0], mae_hi=s.mae_ci[1], rmse=s.rmse, bias=s.bias,
                       bias_lo=s.bias_ci[0], bias_hi=s.bias_ci[1], within_12=s.within[12])
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- Bland-Altman


@dataclass(frozen=True)
class BlandAltman(_Result):
    """Bland & Altman limits of agreement and their confidence intervals.

    ``loa_*_ci`` is the approximate interval limit ± t(n−1)·SE, with SE = SD·sqrt(1/n + z²/(2(n−1)))
    (Bland & Altman 1999, §2.3; ``approx="1999"``) or SE = SD·sqrt(3/n) (the 1986 paper's shortcut;
    ``approx="1986"``); ``loa_*_ci_exact`` is the exact interval from the noncentral t
    distribution (Carkeet 2015). ``slope`` etc. regress difference on mean (proportional bias)."""

    n: int
    bias: float
    sd: float
    bias_ci: tuple[float, float]
    loa_lower: float
    loa_upper: float
    loa_lower_ci: tuple[float, float]
    loa_upper_ci: tuple[float, float]
    loa_lower_ci_exact: tuple[float, float]
    loa_upper_ci_exact: tuple[float, float]
    slope: float
    slope_ci: tuple[float, float]
    slope_p: float
    intercept: float
    z: float
    level: float
    percent: bool
    means: tuple[float, ...]
    differences: tuple[float, ...]


def _exact_loa_ci(bias: float, sd: float, n: int, z: float, level: float):
    """Exact CI of μ ± zσ: (θ_upper − d̄)·√n/s follows a noncentral t with n−1 df and noncentrality z√n."""
    nc = z * np.sqrt(n)
    q_lo, q_hi = st.nct.ppf([0.5 - level / 2, 0.5 + level / 2], n - 1, nc)
    k = sd / np.sqrt(n)
    return (float(bias - k * q_hi), float(bias - k * q_lo)), (float(bias + k * q_lo), float(bias + k * q_hi))


def bland_altman(method, reference, level: float = 0.95, z: float | None = None,
                 percent: bool = False, approx: str = "1999") -> BlandAltman:
    """Bland & Altman (1986, 1999). d = method − reference (or 100·d/mean with ``percent``),
    bias = mean d, SD = sd(d, ddof=1), limits = bias ± z·SD with z = Φ⁻¹(0.5 + level/2) (1.96) unless
    given (the 1986 paper used z = 2). Bias CI: bias ± t(n−1)·SD/√n."""
    m, r = _pairs(method, reference)
    zz = _z(level) if z is None else float(z)
    mean = (m + r) / 2
    d = m - r
    if percent:
        if np.any(mean == 0):
            raise StatsError("percentage differences need every pair's mean to be non-zero.")
        d = 100 * d / mean
    n = d.size
    bias, sd = float(d.mean()), float(d.std(ddof=1))
    t = _t(level, n - 1)
    se_bias = sd / np.sqrt(n)
    if approx not in ("1999", "1986"):
        raise StatsError(f"approx must be '1999' or '1986', got {approx!r}.")
    se_loa = sd * (np.sqrt(1 / n + zz**2 / (2 * (n - 1))) if approx == "1999" else np.sqrt(3 / n))
    lo, hi = bias - zz * sd, bias + zz * sd
    ex_lo, ex_hi = _exact_loa_ci(bias, sd, n, zz, level)
    with np.errstate(invalid="ignore", divide="ignore"):
        reg = st.linregress(mean, d) if np.ptp(mean) > 0 else None
    slope = float(reg.slope) if reg else float("nan")
    slope_half = _t(level, n - 2) * reg.stderr if reg else float("nan")
    return BlandAltman(
        n=n, bias=bias, sd=sd, bias_ci=(bias - t * se_bias, bias + t * se_bias),
        loa_lower=lo, loa_upper=hi, loa_lower_ci=(lo - t * se_loa, lo + t * se_loa),
        loa_upper_ci=(hi - t * se_loa, hi + t * se_loa), loa_lower_ci_exact=ex_lo, loa_upper_ci_exact=ex_hi,
        slope=slope, slope_ci=(slope - slope_half, slope + slope_half),
        slope_p=float(reg.pvalue) if reg else float("nan"),
        intercept=float(reg.intercept) if reg else float("nan"), z=zz, level=level, percent=percent,
        means=tuple(mean.tolist()), differences=tuple(d.tolist()))


@dataclass(frozen=True)
class RegressionLimits(_Result):
    """Limits that change with the size of the measurement (Bland & Altman 1999, §3.3):
    D(A) = b0 + b1·A; |residual|(A) = c0 + c1·A; limits = D(A) ± z·√(π/2)·(c0 + c1·A)."""

    bias_intercept: float
    bias_slope: float
    spread_intercept: float
    spread_slope: float
    z: float

    def at(self, mean) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bias, lower and upper limit at the given pair means."""
        a = np.asarray(mean, float)
        d = self.bias_intercept + self.bias_slope * a
        half = self.z * np.sqrt(np.pi / 2) * (self.spread_intercept + self.spread_slope * a)
        return d, d - half, d + half


def regression_limits(method, reference, level: float = 0.95) -> RegressionLimits:
    m, r = _pairs(method, reference)
    a, d = (m + r) / 2, m - r
    if np.ptp(a) == 0:
        raise StatsError("regression-based limits need pairs whose means differ.")
    b1, b0 = np.polyfit(a, d, 1)
    c1, c0 = np.polyfit(a, np.abs(d - (b0 + b1 * a)), 1)
    return RegressionLimits(float(b0), float(b1), float(c0), float(c1), _z(level))


@dataclass(frozen=True)
class RepeatedBlandAltman(_Result):
    """Limits of agreement with several readings per case and method, true value constant
    (Bland & Altman 1999, §5.2): bias = mean over cases of (mean_x − mean_y);
    SD² = s_d̄² + (1 − 1/m_x)·s²_wx + (1 − 1/m_y)·s²_wy, with s_d̄ the SD of the per-case differences of
    means, s²_w the within-case variance of each method (one-way ANOVA residual mean square) and m the
    harmonic mean of the number of readings per case."""

    n_cases: int
    bias: float
    sd: float
    loa_lower: float
    loa_upper: float
    within_sd_method: float
    within_sd_reference: float


def _within(case, value, name):
    df = pd.DataFrame({"case": np.asarray(case), "v": _vector(value, name)})
    g = df.groupby("case")["v"]
    counts, means = g.size(), g.mean()
    resid = df["v"] - g.transform("mean")
    dof = len(df) - len(counts)
    var = float((resid**2).sum() / dof) if dof > 0 else 0.0
    return means, counts, var


def bland_altman_repeated(method_case, method_value, reference_case, reference_value,
                          level: float = 0.95) -> RepeatedBlandAltman:
    mx, nx, vx = _within(method_case, method_value, "method")
    my, ny, vy = _within(reference_case, reference_value, "reference")
    common = mx.index.intersection(my.index)
    if len(common) < 3:
        raise StatsError(f"at least 3 cases need readings by both methods, got {len(common)}.")
    d = (mx[common] - my[common]).to_numpy()
    hx, hy = st.hmean(nx[common]), st.hmean(ny[common])
    sd = float(np.sqrt(d.var(ddof=1) + (1 - 1 / hx) * vx + (1 - 1 / hy) * vy))
    z, bias = _z(level), float(d.mean())
    return RepeatedBlandAltman(len(common), bias, sd, bias - z * sd, bias + z * sd,
                               float(np.sqrt(vx)), float(np.sqrt(vy)))


# --------------------------------------------------------------------------------------------- ICC

ICC_FORMS = {
    # name: (Shrout-Fleiss, McGraw-Wong, description)
    "ICC1": ("ICC(1,1)", "ICC(1)", "one-way random, single rater"),
    "ICC2": ("ICC(2,1)", "ICC(A,1)", "two-way random, absolute agreement, single rater"),
    "ICC3": ("ICC(3,1)", "ICC(C,1)", "two-way mixed, consistency, single rater"),
    "ICC1k": ("ICC(1,k)", "ICC(k)", "one-way random, mean of k raters"),
    "ICC2k": ("ICC(2,k)", "ICC(A,k)", "two-way random, absolute agreement, mean of k raters"),
    "ICC3k": ("ICC(3,k)", "ICC(C,k)", "two-way mixed, consistency, mean of k raters"),
}


def icc(data: pd.DataFrame, targets: str, raters: str, ratings: str, level: float = 0.95) -> pd.DataFrame:
    """The six intraclass correlations of Shrout & Fleiss (1979) / McGraw & Wong (1996) from a long
    table (one row per target × rater), with F tests and CIs.

    Mean squares of the two-way ANOVA without replication: BMS (targets), JMS (raters), EMS
    (residual), WMS (within targets). ICC1 = (BMS−WMS)/(BMS+(k−1)WMS); ICC2 = (BMS−EMS)/(BMS+(k−1)EMS+
    k(JMS−EMS)/n); ICC3 = (BMS−EMS)/(BMS+(k−1)EMS); ICC1k = (BMS−WMS)/BMS; ICC2k = (BMS−EMS)/(BMS+
    (JMS−EMS)/n); ICC3k = (BMS−EMS)/BMS. CIs: F-distribution limits (McGraw & Wong 1996, table 7),
    Satterthwaite degrees of freedom for the absolute-agreement forms. Every target must be rated
    by every rater exactly once."""
    missing = [c for c in (targets, raters, ratings) if c not in data]
    if missing:
        raise StatsError(f"ICC: column {missing[0]!r} is not in the data.")
    _vector(data[ratings], ratings)
    if data.duplicated([targets, raters]).any():
        row = data.index[data.duplicated([targets, raters])][0]
        raise StatsError(f"ICC: row {row} repeats a target-rater pair; give one rating per pair.")
    wide = data.pivot(index=targets, columns=raters, values=ratings)
    if wide.isna().any().any():
        t = wide.index[wide.isna().any(axis=1)][0]
        raise StatsError(f"ICC: target {t} is not rated by every rater; ICCs need complete data.")
    x = wide.to_numpy(float)
    n, k = x.shape
    if n < 3 or k < 2:
        raise StatsError(f"ICC needs at least 3 targets and 2 raters, got {n} and {k}.")
    grand = x.mean()
    ss_total = ((x - grand) ** 2).sum()
    ss_rows = k * ((x.mean(1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(0) - grand) ** 2).sum()
    bms, jms = ss_rows / (n - 1), ss_cols / (k - 1)
    ems = (ss_total - ss_rows - ss_cols) / ((n - 1) * (k - 1))
    wms = (ss_total - ss_rows) / (n * (k - 1))
    a = 1 - level
    f = lambda q, d1, d2: st.f.ppf(q, d1, d2)  # noqa: E731
    out = {}

    # one-way
    df1, df2 = n - 1, n * (k - 1)
    F1 = bms / wms
    fl, fu = F1 / f(1 - a / 2, df1, df2), F1 * f(1 - a / 2, df2, df1)
    out["ICC1"] = ((bms - wms) / (bms + (k - 1) * wms), F1, df1, df2,
                   ((fl - 1) / (fl + k - 1), (fu - 1) / (fu + k - 1)))
    out["ICC1k"] = ((bms - wms) / bms, F1, df1, df2, (1 - 1 / fl, 1 - 1 / fu))

    # two-way: consistency
    df2 = (n - 1) * (k - 1)
    F3 = bms / ems
    fl, fu = F3 / f(1 - a / 2, df1, df2), F3 * f(1 - a / 2, df2, df1)
    out["ICC3"] = ((bms - ems) / (bms + (k - 1) * ems), F3, df1, df2,
                   ((fl - 1) / (fl + k - 1), (fu - 1) / (fu + k - 1)))
    out["ICC3k"] = ((bms - ems) / bms, F3, df1, df2, (1 - 1 / fl, 1 - 1 / fu))

    # two-way: absolute agreement (Satterthwaite df)
    icc2 = (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n)
    aa = k * icc2 / (n * (1 - icc2))
    bb = 1 + k * icc2 * (n - 1) / (n * (1 - icc2))
    v = (aa * jms + bb * ems) ** 2 / ((aa * jms) ** 2 / (k - 1) + (bb * ems) ** 2 / df2)
    fs, fstar = f(1 - a / 2, n - 1, v), f(1 - a / 2, v, n - 1)
    lo = n * (bms - fs * ems) / (fs * (k * jms + (k * n - k - n) * ems) + n * bms)
    hi = n * (fstar * bms - ems) / (k * jms + (k * n - k - n) * ems + n * fstar * bms)
    out["ICC2"] = (icc2, F3, df1, df2, (lo, hi))
    out["ICC2k"] = ((bms - ems) / (bms + (jms - ems) / n), F3, df1, df2,
                    (k * lo / (1 + (k - 1) * lo), k * hi / (1 + (k - 1) * hi)))

    rows = []
    for name in ICC_FORMS:
        value, F, d1, d2, ci = out[name]
        sf, mw, desc = ICC_FORMS[name]
        rows.append(dict(type=name, shrout_fleiss=sf, mcgraw_wong=mw, description=desc, icc=float(value),
                         F=float(F), df1=float(d1), df2=float(d2), pval=float(st.f.sf(F, d1, d2)),
                         ci_lower=float(ci[0]), ci_upper=float(ci[1]), n_targets=n, n_raters=k))
    return pd.DataFrame(rows).set_index("type", drop=False)


# ----------------------------------------------------------------------------- CCC and regression


@dataclass(frozen=True)
class Concordance(_Result):
    """Lin's concordance correlation ρc = 2·s_xy / (s_x² + s_y² + (x̄ − ȳ)²) with moments divided by n
    (Lin 1989); CI from Fisher's z with Lin's asymptotic variance; ρc = r·C_b."""

    n: int
    ccc: float
    ci: tuple[float, float]
    pearson_r: float
    bias_correction: float
    level: float


def concordance(x, y, level: float = 0.95) -> Concordance:
    a, b = _pairs(x, y, ("x", "y"))
    n = a.size
    sx2, sy2 = a.var(), b.var()
    sxy = np.mean((a - a.mean()) * (b - b.mean()))
    denom = sx2 + sy2 + (a.mean() - b.mean()) ** 2
    if denom == 0:
        raise StatsError("concordance is undefined when both sequences are constant and equal.")
    pc = 2 * sxy / denom
    r = sxy / np.sqrt(sx2 * sy2) if sx2 > 0 and sy2 > 0 else float("nan")
    if abs(pc) >= 1 or not np.isfinite(r) or r == 0:
        ci = (float(pc), float(pc))
    else:
        u = (a.mean() - b.mean()) / (sx2 * sy2) ** 0.25
        var_z = ((1 - r**2) * pc**2 / ((1 - pc**2) * r**2)
                 + 2 * pc**3 * (1 - pc) * u**2 / (r * (1 - pc**2) ** 2)
                 - pc**4 * u**4 / (2 * r**2 * (1 - pc**2) ** 2)) / (n - 2)
        zc, half = np.arctanh(pc), _z(level) * np.sqrt(max(var_z, 0.0))
        ci = (float(np.tanh(zc - half)), float(np.tanh(zc + half)))
    return Concordance(n, float(pc), ci, float(r), float(pc / r) if r else float("nan"), level)


@dataclass(frozen=True)
class LineFit(_Result):
    method: str
    n: int
    slope: float
    slope_ci: tuple[float, float]
    intercept: float
    intercept_ci: tuple[float, float]
    level: float


def _deming_fit(x, y, lam):
    sxx, syy = np.var(x, ddof=1), np.var(y, ddof=1)
    sxy = np.cov(x, y, ddof=1)[0, 1]
    if sxy == 0:
        raise StatsError("Deming regression is undefined when x and y are uncorrelated.")
    slope = (syy - lam * sxx + np.sqrt((syy - lam * sxx) ** 2 + 4 * lam * sxy**2)) / (2 * sxy)
    return slope, y.mean() - slope * x.mean()


def deming(x, y, error_ratio: float = 1.0, level: float = 0.95) -> LineFit:
    """Deming regression of y on x; ``error_ratio`` λ = var(error of y) / var(error of x) (1 gives
    orthogonal regression). slope = (s_yy − λs_xx + √((s_yy − λs_xx)² + 4λs_xy²)) / (2s_xy),
    intercept = ȳ − slope·x̄ (Linnet 1993). CIs by the jackknife with t(n−1)."""
    a, b = _pairs(x, y, ("x", "y"))
    slope, intercept = _deming_fit(a, b, error_ratio)
    n = a.size
    keep = ~np.eye(n, dtype=bool)
    jack = np.array([_deming_fit(a[k], b[k], error_ratio) for k in keep])
    t = _t(level, n - 1)
    ci = []
    for full, j in ((slope, jack[:, 0]), (intercept, jack[:, 1])):
        se = np.sqrt((n - 1) / n * ((j - j.mean()) ** 2).sum())
        ci.append((float(full - t * se), float(full + t * se)))
    return LineFit("deming", n, float(slope), ci[0], float(intercept), ci[1], level)


def passing_bablok(x, y, level: float = 0.95) -> LineFit:
    """Passing & Bablok (1983) regression: slope = shifted median of all pairwise slopes S_ij
    (pairs with equal x and y dropped; slopes of exactly −1 dropped; shift K = #{S < −1});
    CI ranks M1 = round((N − C)/2), M2 = N − M1 + 1 with C = z·√(n(n−1)(2n+5)/18);
    intercept = median(y − slope·x) with CI from the slope's limits."""
    a, b = _pairs(x, y, ("x", "y"))
    n = a.size
    i, j = np.triu_indices(n, 1)
    dx, dy = a[j] - a[i], b[j] - b[i]
    ok = ~((dx == 0) & (dy == 0))
    dx, dy = dx[ok], dy[ok]
    with np.errstate(divide="ignore"):
        s = np.where(dx == 0, np.sign(dy) * np.inf, dy / np.where(dx == 0, 1, dx))
    s = np.sort(s[s != -1])
    N = s.size
    if N < 2:
        raise StatsError("Passing-Bablok regression needs pairs with distinct values.")
    K = int(np.sum(s < -1))
    if N // 2 + K >= N:  # the shifted median's upper index would run past the largest slope
        raise StatsError("Passing-Bablok regression cannot estimate a slope: at least half the pairwise slopes are "
                         "below -1 (the two methods do not increase together).")
    med = s[(N + 1) // 2 + K - 1] if N % 2 else 0.5 * (s[N // 2 + K - 1] + s[N // 2 + K])
    C = _z(level) * np.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    m1 = int(round((N - C) / 2))
    m2 = N - m1 + 1
    lo_i, hi_i = m1 + K - 1, m2 + K - 1
    lo = s[lo_i] if 0 <= lo_i < N else -np.inf
    hi = s[hi_i] if 0 <= hi_i < N else np.inf
    icpt = float(np.median(b - med * a))
    bounded = np.isfinite(lo) and np.isfinite(hi)  # too few pairs for a finite slope CI
    ici = (float(np.median(b - hi * a)), float(np.median(b - lo * a))) if bounded else (-np.inf, np.inf)
    return LineFit("passing_bablok", n, float(med), (float(lo), float(hi)), icpt, ici, level)


# ------------------------------------------------------------------------- comparing two methods


@dataclass(frozen=True)
class PairedComparison(_Result):
    """MAE of method A minus MAE of method B on the same cases (negative: A is more accurate).
    Primary: paired bootstrap BCa CI of mean(|e_A| − |e_B|); secondary: Wilcoxon signed-rank and
    paired t test on |e_A| − |e_B|."""

    n: int
    mae_a: float
    mae_b: float
    mae_difference: float
    mae_difference_ci: tuple[float, float]
    wilcoxon_p: float
    paired_t_p: float
    level: float


def compare_errors(estimate_a, estimate_b, reference, level: float = 0.95, n_boot: int = N_BOOT,
                   seed: int = SEED) -> PairedComparison:
    a, r = _pairs(estimate_a, reference, ("estimate A", "reference"))
    b, _ = _pairs(estimate_b, reference, ("estimate B", "reference"))
    ea, eb = np.abs(a - r), np.abs(b - r)
    d = ea - eb
    if np.all(d == 0):
        wp = tp = 1.0
    else:
        wp = float(st.wilcoxon(ea, eb).pvalue)
        tp = float(st.ttest_rel(ea, eb).pvalue)
    return PairedComparison(d.size, float(ea.mean()), float(eb.mean()), float(d.mean()),
                            bootstrap_ci(d, level=level, n_boot=n_boot, seed=seed), wp, tp, level)


# ------------------------------------------------------------ clinically significant error (issue #20)


def wilson_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (Wilson 1927); (nan, nan) when n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    z = _z(level)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def error_exceedance(predicted, reference, thresholds=WITHIN_MONTHS, level: float = 0.95) -> dict:
    """Share of cases whose absolute error exceeds each threshold (months), with a Wilson CI:
    ``{t: {"n_over": k, "share": k/n, "ci": (lo, hi)}}``."""
    p, r = _pairs(predicted, reference, ("predicted", "reference"))
    ae = np.abs(p - r)
    out = {}
    for t in thresholds:
        k = int((ae > t).sum())
        out[int(t) if float(t).is_integer() else float(t)] = {"n_over": k, "share": k / ae.size,
                                                               "ci": wilson_ci(k, ae.size, level)}
    return out


@dataclass(frozen=True)
class Kappa(_Result):
    """Cohen's kappa (1960) between two classifications of the same cases. ``matrix[i][j]`` counts cases
    that ``a`` put in ``categories[i]`` and ``b`` in ``categories[j]``. SE: the large-sample (non-null)
    standard error of Fleiss, Cohen & Everitt (1969), used for the CI κ ± z·SE (clipped to [−1, 1]);
    ``se0`` is the SE under κ = 0, used for the z test."""

    n: int
    categories: tuple
    matrix: tuple
    observed_agreement: float
    expected_agreement: float
    kappa: float
    se: float
    ci: tuple[float, float]
    se0: float
    p_value: float
    level: float


def cohen_kappa(a, b, categories: Sequence, level: float = 0.95) -> Kappa:
    """Unweighted Cohen's kappa of two category labellings with its Fleiss-Cohen-Everitt CI.

    With p_ij the cell proportions, p_i. and p_.j the margins, p_o = Σ p_ii and p_e = Σ p_i.·p_.i:
    κ = (p_o − p_e)/(1 − p_e);
    Var(κ) = [Σ_i p_ii((1 − p_e) − (p_i. + p_.i)(1 − p_o))² + (1 − p_o)² Σ_{i≠j} p_ij(p_.i + p_j.)²
              − (p_o·p_e − 2p_e + p_o)²] / (n(1 − p_e)⁴);
    Var₀(κ) = [p_e + p_e² − Σ_i p_i.·p_.i(p_i. + p_.i)] / (n(1 − p_e)²)."""
    cats = list(categories)
    la, lb = list(a), list(b)
    if len(la) != len(lb):
        raise StatsError(f"the first labelling has {len(la)} cases but the second has {len(lb)}; they must pair up.")
    if len(la) < 3:
        raise StatsError(f"at least 3 pairs are needed, got {len(la)}.")
    index = {c: i for i, c in enumerate(cats)}
    for name, lab in (("first", la), ("second", lb)):
        bad = [v for v in lab if v not in index]
        if bad:
            raise StatsError(f"the {name} labelling has {bad[0]!r}, which is not one of {cats}.")
    k, n = len(cats), len(la)
    m = np.zeros((k, k), int)
    for x, y in zip(la, lb):
        m[index[x], index[y]] += 1
    p = m / n
    row, col = p.sum(1), p.sum(0)
    po, pe = float(np.trace(p)), float(row @ col)
    if pe >= 1:  # both labellings put every case in one and the same category: kappa undefined
        kappa, se, se0 = float("nan"), float("nan"), float("nan")
    else:
        kappa = (po - pe) / (1 - pe)
        diag = sum(p[i, i] * ((1 - pe) - (row[i] + col[i]) * (1 - po)) ** 2 for i in range(k))
        off = (1 - po) ** 2 * sum(p[i, j] * (col[i] + row[j]) ** 2 for i in range(k) for j in range(k) if i != j)
        var = (diag + off - (po * pe - 2 * pe + po) ** 2) / (n * (1 - pe) ** 4)
        se = float(np.sqrt(max(var, 0.0)))
        var0 = (pe + pe**2 - float(np.sum(row * col * (row + col)))) / (n * (1 - pe) ** 2)
        se0 = float(np.sqrt(max(var0, 0.0)))
    z = _z(level)
    ci = (max(-1.0, kappa - z * se), min(1.0, kappa + z * se)) if np.isfinite(se) else (float("nan"),) * 2
    pval = float(2 * st.norm.sf(abs(kappa / se0))) if np.isfinite(se0) and se0 > 0 else float("nan")
    return Kappa(n, tuple(cats), tuple(tuple(int(v) for v in r) for r in m), po, pe, float(kappa), se,
                 (float(ci[0]), float(ci[1])), se0, pval, level)


# --------------------------------------------------------------------------- small summaries and pooling


def mae(estimate, reference) -> float | None:
    """Mean |estimate − reference| over the pairs where both are finite; None when there are none."""
    a, b = np.asarray(estimate, float), np.asarray(reference, float)
    m = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(a[m] - b[m]).mean()) if m.any() else None


def standard_error(values) -> float:
    """SD (ddof = 1) / √n of the mean of ``values``."""
    v = np.asarray(values, float)
    return float(v.std(ddof=1) / np.sqrt(v.size))


@dataclass(frozen=True)
class Recalibration(_Result):
    """Cross-validated linear recalibration reference ≈ intercept + slope·predicted: each case corrected by
    the line fitted on the other folds (``corrected``); the line reported is fitted on all cases."""

    intercept: float
    slope: float
    folds: int
    mae_before: float
    mae_after: float
    bias_before: float
    bias_after: float
    corrected: tuple = ()


def recalibration(predicted, reference, folds: int = 5, seed: int = 0) -> Recalibration:
    """See :class:`Recalibration`; needs at least 2 cases per fold. Folds are a seeded random split."""
    p, r = _pairs(predicted, reference, ("predicted", "reference"))
    if p.size < 2 * folds:
        raise StatsError(f"recalibration needs at least {2 * folds} cases, got {p.size}.")
    fold = np.random.default_rng(seed).permutation(p.size) % folds
    corrected = np.empty_like(p)
    for k in range(folds):
        b, a = np.polyfit(p[fold != k], r[fold != k], 1)
        corrected[fold == k] = a + b * p[fold == k]
    b, a = np.polyfit(p, r, 1)
    before, after = error_summary(p, r), error_summary(corrected, r)
    return Recalibration(float(a), float(b), folds, before.mae, after.mae, before.bias, after.bias,
                         tuple(float(v) for v in corrected))


@dataclass(frozen=True)
class Heterogeneity(_Result):
    """Inverse-variance fixed-effect pool, Cochran's Q on ``df`` = k − 1 (p from χ²), I² = max(0, (Q − df)/Q),
    and the DerSimonian-Laird random-effects pool with τ² and its normal CI."""

    fixed: float
    random: float
    random_ci: tuple[float, float]
    Q: float
    df: int
    Q_p: float | None
    I2: float
    tau2: float


def heterogeneity(estimates, standard_errors, level: float = 0.95) -> Heterogeneity:
    """Meta-analysis of per-site estimates with their standard errors (see :class:`Heterogeneity`)."""
    est, se = np.asarray(estimates, float), np.asarray(standard_errors, float)
    w = 1 / se**2
    fixed = float((w * est).sum() / w.sum())
    q = float((w * (est - fixed) ** 2).sum())
    df = len(est) - 1
    tau2 = max(0.0, (q - df) / (w.sum() - (w**2).sum() / w.sum())) if df > 0 else 0.0
    wr = 1 / (se**2 + tau2)
    rand = float((wr * est).sum() / wr.sum())
    half = _z(level) * float(np.sqrt(1 / wr.sum()))
    return Heterogeneity(fixed, rand, (rand - half, rand + half), q, df, float(st.chi2.sf(q, df)) if df > 0 else None,
                         max(0.0, (q - df) / q) if q > 0 else 0.0, float(tau2))


def bootstrap_readers_cases(data: pd.DataFrame, case: str, reader: str, value: str, n_boot: int = 1000,
                            seed: int = 0, level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """The mean of ``value`` over a cases × readers table, with a two-stage bootstrap over both (resample
    readers, then cases, each with replacement; cells missing from the table are skipped; percentile CI)."""
    readers, cases = data[reader].unique(), data[case].unique()
    table = data.pivot_table(index=case, columns=reader, values=value).loc[cases, readers].to_numpy(float)
    est = float(np.nanmean(table))
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for i in range(n_boot):
        r = rng.choice(readers.size, readers.size)
        c = rng.choice(cases.size, cases.size)
        sub = table[np.ix_(c, r)]
        ok = np.isfinite(sub)
        boots[i] = sub[ok].mean() if ok.any() else np.nan
    lo, hi = np.nanquantile(boots, [0.5 - level / 2, 0.5 + level / 2])
    return est, (float(lo), float(hi))
