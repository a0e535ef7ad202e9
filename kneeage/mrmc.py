"""Multi-reader multi-case (MRMC) analysis: Obuchowski-Rockette with Hillis's degrees of freedom (ORH).

The figure of merit (FOM) θ_ij is computed for every condition (test, modality, arm) i and reader j on
the cases that reader read; the ORH model (Obuchowski & Rockette 1995; Hillis 2007) then compares the
conditions with readers and cases random (Hillis df), readers fixed, or cases fixed. Formulas,
conventions and references: docs/statistics.md, section "Reader studies: ORH MRMC analysis".

Conventions, everywhere in this module:

* differences are condition A − condition B in the FOM's own units, for every pair A before B in the
  order of ``conditions`` (e.g. assisted − unassisted MAE: negative means assisted is more accurate);
* the FOM keeps its natural sign (MAE and RMSE in months, lower is better; the share within 12
  months and the AUC, higher is better); every result says which with ``higher_is_better``;
* covariances of the FOMs over case samples: the jackknife over cases, (n−1)/n·Σ(θ₍ₖ₎ − θ̄₍.₎)(θ′₍ₖ₎ − θ̄′₍.₎),
  or DeLong's method for the empirical AUC;
* a normal-theory result (fixed readers) has ``df=None``;
* bad input raises :class:`~kneeage.errors.StatsError` with one sentence saying why.

Results are frozen dataclasses (mapping access and ``as_dict()`` as in :mod:`kneeage.stats`).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as st

from .errors import StatsError
from .stats import _Result

# ------------------------------------------------------------------------------ figures of merit


@dataclass(frozen=True)
class FigureOfMerit:
    """A reader's performance over cases. ``value(truth, ratings)`` reduces the last axis of
    ``ratings`` (cases); ``leave_one_out`` returns, for each case k, the FOM without case k."""

    name: str
    label: str
    higher_is_better: bool
    value: Callable[[np.ndarray, np.ndarray], np.ndarray]
    leave_one_out: Callable[[np.ndarray, np.ndarray], np.ndarray]


def _mean_loo(x: np.ndarray) -> np.ndarray:
    n = x.shape[-1]
    return (x.sum(-1, keepdims=True) - x) / (n - 1)


def _abs(y, r):
    return np.abs(r - y)


def _within(months: float):
    return lambda y, r: (np.abs(r - y) <= months).astype(float)


def _auc_parts(y, r):
    y = np.asarray(y)
    levels = np.unique(y)
    if levels.size != 2:
        raise StatsError(f"the empirical AUC needs a truth with exactly two values, got {levels.size}.")
    pos = y == levels[1]
    p, q = r[..., pos], r[..., ~pos]
    psi = (p[..., :, None] > q[..., None, :]) + 0.5 * (p[..., :, None] == q[..., None, :])
    return pos, psi


def _auc(y, r):
    return _auc_parts(y, r)[1].mean((-2, -1))


def _auc_loo(y, r):
    pos, psi = _auc_parts(y, r)
    m, q = psi.shape[-2], psi.shape[-1]
    total = psi.sum((-2, -1))[..., None]
    out = np.empty(r.shape, float)
    out[..., pos] = (total - psi.sum(-1)) / ((m - 1) * q)
    out[..., ~pos] = (total - psi.sum(-2)) / (m * (q - 1))
    return out


FOMS: dict[str, FigureOfMerit] = {
    "mae": FigureOfMerit("mae", "MAE (months; lower is better)", False,
                         lambda y, r: _abs(y, r).mean(-1), lambda y, r: _mean_loo(_abs(y, r))),
    "rmse": FigureOfMerit("rmse", "RMSE (months; lower is better)", False,
                          lambda y, r: np.sqrt(((r - y) ** 2).mean(-1)),
                          lambda y, r: np.sqrt(np.maximum(_mean_loo((r - y) ** 2), 0))),
    "within12": FigureOfMerit("within12", "share within 12 months (higher is better)", True,
                              lambda y, r: _within(12)(y, r).mean(-1), lambda y, r: _mean_loo(_within(12)(y, r))),
    "auc": FigureOfMerit("auc", "empirical (trapezoidal) AUC (higher is better)", True, _auc, _auc_loo),
}


def figure_of_merit(fom: str | FigureOfMerit) -> FigureOfMerit:
    if isinstance(fom, FigureOfMerit):
        return fom
    if fom not in FOMS:
        raise StatsError(f"unknown figure of merit {fom!r}; choose one of {', '.join(FOMS)}.")
    return FOMS[fom]


def _jackknife_cov(loo: np.ndarray) -> np.ndarray:
    """Jackknife covariance of the rows of ``loo`` (one column per left-out case)."""
    n = loo.shape[-1]
    d = loo - loo.mean(-1, keepdims=True)
    return (n - 1) / n * (d @ d.T)


def _delong_cov(truth: np.ndarray, ratings: np.ndarray) -> np.ndarray:
    """DeLong et al. (1988): S10/m + S01/q from the structural components of each row's AUC."""
    _, psi = _auc_parts(truth, ratings)
    v10, v01 = psi.mean(-1), psi.mean(-2)
    m, q = v10.shape[-1], v01.shape[-1]
    if m < 2 or q < 2:
        raise StatsError("DeLong covariances need at least 2 cases of each truth value.")
    return np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / q


# ------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Components(_Result):
    """OR variance components. ``var_error`` = mean Var(θ_ij | readers) over the case samples,
    ``cov1`` same reader/different conditions, ``cov2`` different readers/same condition, ``cov3``
    different readers and conditions (``cov2``/``cov3`` over reader pairs that read the same cases);
    ``share_pairs`` = share of reader pairs that read the same cases (1 factorial, 0 each reader
    their own cases). ``var_reader``, ``var_reader_condition``: σ²_R, σ²_TR (method of moments)."""

    var_reader: float
    var_reader_condition: float
    var_error: float
    cov1: float
    cov2: float
    cov3: float
    ms_t: float
    ms_r: float
    ms_tr: float
    share_pairs: float


@dataclass(frozen=True)
class GlobalTest(_Result):
    """H0: all conditions have the same mean FOM. ``statistic`` is "F" (random readers: df2 Hillis;
    random readers, fixed cases: (t−1)(J−1)) or "chi2" (fixed readers, df1 = t−1, df2 None)."""

    statistic: str
    value: float
    df1: float
    df2: float | None
    p: float
    denominator: float


@dataclass(frozen=True)
class Contrast(_Result):
    """A difference of mean FOMs with its SE, CI (t with ``df``, or normal when ``df`` is None) and
    two-sided p-value; ``reader`` is set for a fixed reader's own difference."""

    label: str
    estimate: float
    se: float
    df: float | None
    ci: tuple[float, float]
    p: float
    reader: str | None = None


@dataclass(frozen=True)
class ConditionMean(_Result):
    """Mean FOM over readers in one condition, with its SE and CI."""

    condition: str
    estimate: float
    se: float
    df: float | None
    ci: tuple[float, float]


@dataclass(frozen=True)
class ORHResult(_Result):
    """An Obuchowski-Rockette-Hillis analysis (see the module docstring for conventions)."""

    fom: str
    fom_label: str
    higher_is_better: bool
    design: str
    readers_effect: str
    cases_effect: str
    covariance: str
    level: float
    conditions: tuple[str, ...]
    readers: tuple[str, ...]
    n_cases: int
    reader_fom: tuple[dict, ...]
    components: Components
    global_test: GlobalTest
    differences: tuple[Contrast, ...]
    means: tuple[ConditionMean, ...]
    reader_differences: tuple[Contrast, ...]


@dataclass(frozen=True)
class StandaloneComparison(_Result):
    """Readers − model on the same cases: the model is a reader without reader variability (one
    fixed value per case sample), so D_j = θ_j − θ_model is analysed as a single-condition ORH
    study (Chakraborty 2017, "1T-RRRC"). ``estimate`` = mean D_j; for MAE negative means the readers
    are more accurate than the model."""

    fom: str
    fom_label: str
    higher_is_better: bool
    readers_effect: str
    covariance: str
    level: float
    readers: tuple[str, ...]
    n_cases: int
    model_fom: float
    reader_fom: tuple[dict, ...]
    difference: Contrast
    ms_r: float
    var_error: float
    cov2: float
    reader_differences: tuple[Contrast, ...]


# --------------------------------------------------------------------------------------- core


def _ci(est: float, se: float, level: float, df: float | None) -> tuple[tuple[float, float], float]:
    if not np.isfinite(se) or se <= 0:
        return (float(est), float(est)), (1.0 if est == 0 else 0.0)
    q = st.norm.ppf(0.5 + level / 2) if df is None else st.t.ppf(0.5 + level / 2, df)
    stat = est / se
    p = 2 * (st.norm.sf(abs(stat)) if df is None else st.t.sf(abs(stat), df))
    return (float(est - q * se), float(est + q * se)), float(p)


def _f_sf(value: float, df1: float, df2: float) -> float:
    """P(F(df1, df2) > value); df2 = ∞ is the χ²(df1)/df1 limit."""
    if np.isnan(value):
        return float("nan")
    return float(st.chi2.sf(value * df1, df1) if np.isinf(df2) else st.f.sf(value, df1, df2))


def _ratio(num: float, den: float) -> float:
    """num/den, ∞ when only the denominator is 0, NaN when both are (no variation at all)."""
    return num / den if den > 0 else (float("inf") if num > 0 else float("nan"))


def _satterthwaite(num: float, ms: float, dof: float) -> float:
    """Hillis's df: num² / (ms²/dof); infinite when ms = 0."""
    return float("inf") if ms <= 0 else float(num**2 / (ms**2 / dof))


def _check(level: float, readers: str, cases: str, covariance: str):
    if not 0 < level < 1:
        raise StatsError(f"level must lie between 0 and 1, got {level}.")
    if readers not in ("random", "fixed") or cases not in ("random", "fixed"):
        raise StatsError("readers and cases must each be 'random' or 'fixed'.")
    if readers == "fixed" and cases == "fixed":
        raise StatsError("readers and cases cannot both be fixed; at least one must be random.")
    if covariance not in ("jackknife", "delong"):
        raise StatsError(f"covariance must be 'jackknife' or 'delong', got {covariance!r}.")


def _fit(theta: np.ndarray, cov: np.ndarray, share: np.ndarray, fom: FigureOfMerit, *, conditions, readers_names,
         n_cases: int, design: str, readers: str, cases: str, covariance: str, level: float) -> ORHResult:
    """ORH from the t × J FOM matrix, the (t·J)² covariance matrix (row index i·J + j) and the J × J
    matrix ``share`` (True where two readers read the same cases)."""
    t, J = theta.shape
    ti, rj = np.divmod(np.arange(t * J), J)
    same_t, same_r = ti[:, None] == ti[None, :], rj[:, None] == rj[None, :]
    shared = share[rj[:, None], rj[None, :]]

    def mean_of(mask):
        return float(cov[mask].mean()) if mask.any() else 0.0

    var = float(np.diag(cov).mean())
    cov1 = mean_of(~same_t & same_r)
    cov2 = mean_of(same_t & ~same_r & shared)
    cov3 = mean_of(~same_t & ~same_r & shared)
    w = float((share.sum() - J) / (J * (J - 1))) if J > 1 else 0.0
    grand, mi, mj = theta.mean(), theta.mean(1), theta.mean(0)
    ms_t = float(J * ((mi - grand) ** 2).sum() / (t - 1))
    ms_r = float(t * ((mj - grand) ** 2).sum() / (J - 1)) if J > 1 else float("nan")
    ms_tr = float(((theta - mi[:, None] - mj[None, :] + grand) ** 2).sum() / ((t - 1) * (J - 1))) if J > 1 else float("nan")
    comps = Components(var_reader=(ms_r - ms_tr) / t - cov1 + w * cov3,
                       var_reader_condition=ms_tr - var + cov1 + w * (cov2 - cov3),
                       var_error=var, cov1=cov1, cov2=cov2, cov3=cov3, ms_t=ms_t, ms_r=ms_r, ms_tr=ms_tr, share_pairs=w)
    names = [str(c) for c in conditions]
    pairs = list(combinations(range(t), 2))

    def within(i):  # per-condition error variance and Cov2
        m = (ti == i)[:, None] & (ti == i)[None, :]
        return float(np.diag(cov)[ti == i].mean()), mean_of(m & ~same_r & shared)

    reader_diffs = []
    if readers == "random" and cases == "random":
        den = ms_tr + J * w * max(cov2 - cov3, 0.0)
        df2 = _satterthwaite(den, ms_tr, (t - 1) * (J - 1))
        value = _ratio(ms_t, den)
        test = GlobalTest("F", value, t - 1, df2, _f_sf(value, t - 1, df2), den)
        se_d, df_d = np.sqrt(2 / J * den), df2
        means = []
        for i in range(t):
            msr_i = float(theta[i].var(ddof=1))
            c2 = within(i)[1]
            se = float(np.sqrt(msr_i / J + w * max(c2, 0.0)))
            df = _satterthwaite(msr_i + J * w * max(c2, 0.0), msr_i, J - 1)
            means.append(ConditionMean(names[i], float(mi[i]), se, df, _ci(mi[i], se, level, df)[0]))
    elif readers == "random":  # fixed cases
        den = ms_tr
        df2 = float((t - 1) * (J - 1))
        value = _ratio(ms_t, den)
        test = GlobalTest("F", value, t - 1, df2, _f_sf(value, t - 1, df2), den)
        se_d, df_d = np.sqrt(2 / J * den), df2
        means = []
        for i in range(t):
            se = float(np.sqrt(theta[i].var(ddof=1) / J))
            means.append(ConditionMean(names[i], float(mi[i]), se, J - 1.0, _ci(mi[i], se, level, J - 1)[0]))
    else:  # fixed readers, random cases
        den = var - cov1 + (J - 1) * w * (cov2 - cov3)
        value = _ratio((t - 1) * ms_t, den)
        test = GlobalTest("chi2", value, t - 1, None, float(st.chi2.sf(value, t - 1)), den)
        se_d, df_d = np.sqrt(2 / J * den), None
        means = []
        for i in range(t):
            v_i, c2 = within(i)
            se = float(np.sqrt((v_i + (J - 1) * w * max(c2, 0.0)) / J))
            means.append(ConditionMean(names[i], float(mi[i]), se, None, _ci(mi[i], se, level, None)[0]))
        for j in range(J):
            for a, b in pairs:
                ka, kb = a * J + j, b * J + j
                est = float(theta[a, j] - theta[b, j])
                se = float(np.sqrt(max(cov[ka, ka] + cov[kb, kb] - 2 * cov[ka, kb], 0.0)))
                ci, p = _ci(est, se, level, None)
                reader_diffs.append(Contrast(f"{names[a]} − {names[b]}", est, se, None, ci, p, str(readers_names[j])))
    diffs = []
    for a, b in pairs:
        est = float(mi[a] - mi[b])
        ci, p = _ci(est, float(se_d), level, df_d)
        diffs.append(Contrast(f"{names[a]} − {names[b]}", est, float(se_d), df_d, ci, p))
    rows = tuple({"condition": names[i], "reader": str(readers_names[j]), "value": float(theta[i, j])}
                 for i in range(t) for j in range(J))
    return ORHResult(fom.name, fom.label, fom.higher_is_better, design, readers, cases, covariance, level,
                     tuple(names), tuple(str(r) for r in readers_names), int(n_cases), rows, comps, test,
                     tuple(diffs), tuple(means), tuple(reader_diffs))


def orh_arrays(truth, ratings, fom: str | FigureOfMerit = "mae", *, conditions=None, reader_names=None,
               readers: str = "random", cases: str = "random", covariance: str = "jackknife",
               level: float = 0.95) -> ORHResult:
    """ORH analysis of a factorial study given as arrays: ``truth`` (n cases) and ``ratings``
    (t conditions × J readers × n cases)."""
    _check(level, readers, cases, covariance)
    f = figure_of_merit(fom)
    y = np.asarray(truth, float)
    r = np.asarray(ratings, float)
    if r.ndim != 3 or r.shape[-1] != y.size:
        raise StatsError(f"ratings must be conditions × readers × cases with {y.size} cases, got shape {r.shape}.")
    t, J, n = r.shape
    if t < 2:
        raise StatsError("an ORH comparison needs at least 2 conditions.")
    if readers == "random" and J < 2:
        raise StatsError("random readers need at least 2 readers; with one reader, treat it as fixed.")
    if n < 3:
        raise StatsError(f"at least 3 cases are needed, got {n}.")
    if not (np.isfinite(y).all() and np.isfinite(r).all()):
        raise StatsError("truth and ratings must be finite numbers (no missing reads).")
    theta = f.value(y, r)
    if covariance == "delong":
        if f.name != "auc":
            raise StatsError("DeLong covariances are for the empirical AUC only; use the jackknife.")
        cov = _delong_cov(y, r.reshape(t * J, n))
    else:
        cov = _jackknife_cov(f.leave_one_out(y, r).reshape(t * J, n))
    return _fit(theta, cov, np.ones((J, J), bool), f, conditions=conditions if conditions is not None else range(1, t + 1),
                readers_names=reader_names if reader_names is not None else range(1, J + 1), n_cases=n,
                design="factorial", readers=readers, cases=cases, covariance=covariance, level=level)


def _long(data: pd.DataFrame, cols: dict, numeric=("truth", "rating"), keys=("test", "reader", "case")) -> pd.DataFrame:
    missing = [c for c in cols.values() if c not in data]
    if missing:
        raise StatsError(f"column {missing[0]!r} is not in the data.")
    df = data[list(cols.values())].copy()
    df.columns = list(cols)
    for c in numeric:
        v = pd.to_numeric(df[c], errors="coerce")
        if v.isna().any():
            raise StatsError(f"{cols[c]}: row {df.index[v.isna()][0]} is missing or not a number.")
        df[c] = v.astype(float)
    dup = df.duplicated(list(keys))
    if dup.any():
        row = df[dup].iloc[0]
        where = f" under {row.test}" if "test" in keys else ""
        raise StatsError(f"reader {row.reader} read case {row.case} twice{where}; give one read per case.")
    for c in numeric:
        if c != "rating" and (df.groupby("case")[c].nunique() > 1).any():
            raise StatsError(f"a case has more than one {cols[c]} value; each case needs one.")
    return df


def orh(data: pd.DataFrame, fom: str | FigureOfMerit = "mae", *, test: str = "test", reader: str = "reader",
        case: str = "case", truth: str = "truth", rating: str = "rating", conditions=None,
        readers: str = "random", cases: str = "random", covariance: str = "jackknife",
        level: float = 0.95) -> ORHResult:
    """ORH analysis of a long table (one row per condition × reader × case read).

    Design, from the data: **factorial** when every reader read every case under every condition;
    **split-plot** when readers fall into groups, each group reading its own cases (every reader of a
    group reads the group's cases under every condition; ``share_pairs`` < 1); one reader per group
    is the design "cases nested within readers". Covariances are estimated within each group (the
    jackknife over that group's cases); FOMs from different case groups are independent."""
    _check(level, readers, cases, covariance)
    f = figure_of_merit(fom)
    df = _long(data, {"test": test, "reader": reader, "case": case, "truth": truth, "rating": rating})
    conds = list(conditions) if conditions is not None else sorted(df.test.unique().tolist())
    unknown = set(df.test) - set(conds)
    if unknown or len(conds) < 2:
        raise StatsError(f"conditions must list the {test} values to compare (at least 2); "
                         f"{sorted(map(str, unknown))[0] if unknown else 'fewer than 2'} is not among them.")
    names = sorted(df.reader.unique().tolist(), key=str)
    J = len(names)
    if readers == "random" and J < 2:
        raise StatsError("random readers need at least 2 readers; with one reader, treat it as fixed.")
    case_sets = {}
    for rd in names:
        sets = [frozenset(df.case[(df.reader == rd) & (df.test == c)]) for c in conds]
        if any(s != sets[0] for s in sets):
            raise StatsError(f"reader {rd} did not read the same cases under every {test}; ORH needs paired reads "
                             "(keep only the cases each reader read under all conditions).")
        case_sets[rd] = sets[0]
    groups: dict[frozenset, list] = {}
    for rd in names:
        groups.setdefault(case_sets[rd], []).append(rd)
    keys = list(groups)
    for a, b in combinations(keys, 2):
        if a & b:
            raise StatsError("readers' case sets overlap without being equal; the design is neither factorial nor split-plot.")
    if min(len(k) for k in keys) < 3:
        raise StatsError("every reader needs at least 3 cases read under every condition.")
    if covariance == "delong" and len(keys) > 1:
        raise StatsError("DeLong covariances need a factorial design; use the jackknife.")
    if covariance == "delong" and f.name != "auc":
        raise StatsError("DeLong covariances are for the empirical AUC only; use the jackknife.")
    t = len(conds)
    pos = {rd: j for j, rd in enumerate(names)}
    theta = np.empty((t, J))
    cov = np.zeros((t * J, t * J))
    share = np.zeros((J, J), bool)
    n_cases = 0
    for cs, members in groups.items():
        sub = df[df.reader.isin(members)]
        order = sorted(cs, key=str)
        y = sub.drop_duplicates("case").set_index("case").truth.loc[order].to_numpy()
        wide = sub.pivot_table(index=["test", "reader"], columns="case", values="rating", aggfunc="first")
        r = np.stack([np.stack([wide.loc[(c, m), order].to_numpy(float) for m in members]) for c in conds])
        js = [pos[m] for m in members]
        theta[:, js] = f.value(y, r)
        flat = r.reshape(t * len(members), len(order))
        c = _delong_cov(y, flat) if covariance == "delong" else _jackknife_cov(f.leave_one_out(y, r).reshape(flat.shape))
        idx = np.array([i * J + j for i in range(t) for j in js])
        cov[np.ix_(idx, idx)] = c
        share[np.ix_(js, js)] = True
        n_cases += len(order)
    design = "factorial" if len(keys) == 1 else ("cases nested within readers" if all(len(m) == 1 for m in groups.values())
                                                 else "split-plot")
    return _fit(theta, cov, share, f, conditions=conds, readers_names=names, n_cases=n_cases, design=design,
                readers=readers, cases=cases, covariance=covariance, level=level)


def versus_model(data: pd.DataFrame, fom: str | FigureOfMerit = "mae", *, model: str = "model", reader: str = "reader",
                 case: str = "case", truth: str = "truth", rating: str = "rating", readers: str = "random",
                 covariance: str = "jackknife", level: float = 0.95) -> StandaloneComparison:
    """Readers − model in one condition, all readers reading the same cases (factorial).

    D_j = θ_j − θ_model; covariances of the D_j over case samples from the jackknife (or DeLong) of
    the readers and the model together. Random readers: SE² = MS(R)/J + max(Cov2, 0) and
    df = (MS(R) + J·max(Cov2, 0))² / (MS(R)²/(J − 1)), MS(R) the variance of the D_j (ddof = 1), Cov2
    the mean covariance of D_j, D_j′ (j ≠ j′). Fixed readers: SE² = (Var + (J − 1)·max(Cov2, 0))/J, normal."""
    _check(level, readers, "random", covariance)
    f = figure_of_merit(fom)
    df = _long(data, {"reader": reader, "case": case, "truth": truth, "rating": rating, "model": model},
               numeric=("truth", "rating", "model"), keys=("reader", "case"))
    names = sorted(df.reader.unique().tolist(), key=str)
    J = len(names)
    if readers == "random" and J < 2:
        raise StatsError("random readers need at least 2 readers; with one reader, treat it as fixed.")
    sets = {rd: frozenset(df.case[df.reader == rd]) for rd in names}
    if len(set(sets.values())) > 1:
        raise StatsError("every reader must read the same cases to be compared with the model; keep the common cases.")
    order = sorted(next(iter(sets.values())), key=str)
    if len(order) < 3:
        raise StatsError(f"at least 3 cases are needed, got {len(order)}.")
    per_case = df.drop_duplicates("case").set_index("case").loc[order]
    y, mod = per_case.truth.to_numpy(), per_case.model.to_numpy()
    wide = df.pivot_table(index="reader", columns="case", values="rating", aggfunc="first")
    r = np.vstack([wide.loc[names, order].to_numpy(float), mod[None, :]])  # readers, then the model
    if covariance == "delong":
        if f.name != "auc":
            raise StatsError("DeLong covariances are for the empirical AUC only; use the jackknife.")
        c = _delong_cov(y, r)
    else:
        c = _jackknife_cov(f.leave_one_out(y, r))
    theta = f.value(y, r)
    a = np.hstack([np.eye(J), -np.ones((J, 1))])
    d, cd = a @ theta, a @ c @ a.T
    var = float(np.diag(cd).mean())
    cov2 = float(cd[~np.eye(J, dtype=bool)].mean()) if J > 1 else 0.0
    ms_r = float(d.var(ddof=1)) if J > 1 else float("nan")
    est = float(d.mean())
    if readers == "random":
        se = float(np.sqrt(ms_r / J + max(cov2, 0.0)))
        dof = _satterthwaite(ms_r + J * max(cov2, 0.0), ms_r, J - 1)
    else:
        se, dof = float(np.sqrt((var + (J - 1) * max(cov2, 0.0)) / J)), None
    ci, p = _ci(est, se, level, dof)
    diff = Contrast("readers − model", est, se, dof, ci, p)
    per = []
    for j, rd in enumerate(names):
        sj = float(np.sqrt(max(cd[j, j], 0.0)))
        cij, pj = _ci(float(d[j]), sj, level, None)
        per.append(Contrast("reader − model", float(d[j]), sj, None, cij, pj, str(rd)))
    rows = tuple({"reader": str(rd), "value": float(theta[j])} for j, rd in enumerate(names))
    return StandaloneComparison(f.name, f.label, f.higher_is_better, readers, covariance, level, tuple(map(str, names)),
                                len(order), float(theta[-1]), rows, diff, ms_r, var, cov2, tuple(per))


# ---------------------------------------------------------------------------------- reporting


def summary_rows(section: dict) -> list[dict]:
    """Display rows from exported ORH results (``as_dict()`` form): one row per difference and per
    condition mean of an :class:`ORHResult`, or the readers − model difference of a
    :class:`StandaloneComparison`."""
    def fmt_df(v):
        return "normal" if v is None else ("∞" if v == float("inf") else f"{v:.1f}")

    rows = []
    if "difference" in section:  # standalone comparison
        d = section["difference"]
        rows.append({"figure of merit": section["fom_label"], "quantity": "readers − model",
                     "estimate": d["estimate"], "CI": "{:.3g} to {:.3g}".format(*d["ci"]), "df": fmt_df(d["df"]),
                     "p": d["p"], "model": section["model_fom"]})
        return rows
    g = section["global_test"]
    for d in section["differences"]:
        rows.append({"figure of merit": section["fom_label"], "quantity": d["label"], "estimate": d["estimate"],
                     "CI": "{:.3g} to {:.3g}".format(*d["ci"]), "df": fmt_df(d["df"]), "p": d["p"],
                     "test": f"{g['statistic']} = {g['value']:.3g}"})
    for m in section["means"]:
        rows.append({"figure of merit": section["fom_label"], "quantity": f"mean, {m['condition']}",
                     "estimate": m["estimate"], "CI": "{:.3g} to {:.3g}".format(*m["ci"]), "df": fmt_df(m["df"])})
    return rows


# ------------------------------------------------------------------------- reader-study analysis

STUDY_FOMS = ("mae", "rmse", "within12")
METHOD = ("Obuchowski-Rockette-Hillis: random readers and random cases, jackknife covariances over cases, "
          "Hillis denominator df (docs/statistics.md)")


def complete_subset(data: pd.DataFrame, reader: str, case: str, conditions: str, needed) -> tuple[list, list, list]:
    """Readers and cases forming a complete block: the cases every kept reader read under every
    condition in ``needed``. Readers are dropped, fewest such cases first, until at least 3 cases are
    common. Returns (readers kept, cases, readers dropped)."""
    d = data[data[conditions].isin(list(needed))]
    full = d.groupby([reader, case])[conditions].nunique()
    full = full[full == len(set(needed))].reset_index()
    per = {r: set(g[case]) for r, g in full.groupby(reader)}
    kept = sorted(per, key=lambda r: (-len(per[r]), str(r)))
    dropped = sorted(set(data[reader]) - set(kept), key=str)
    while kept:
        common = set.intersection(*(per[r] for r in kept))
        if len(common) >= 3 or len(kept) == 1:
            break
        dropped.append(kept.pop())
    common = set.intersection(*(per[r] for r in kept)) if kept else set()
    if len(common) < 3:
        return [], [], sorted(set(data[reader]), key=str)
    return sorted(kept, key=str), sorted(common, key=str), dropped


def study_analysis(first: pd.DataFrame, *, arm: str = "arm", reader: str = "reader_id", case: str = "case_id",
                   truth: str = "reference_bone_age_months", rating: str = "estimate_months", model: str = "model_months",
                   conditions=("assisted", "unassisted"), foms=STUDY_FOMS, level: float = 0.95) -> dict:
    """The reader study's ORH analyses, as exported dicts: ``assisted_vs_unassisted`` (difference =
    assisted − unassisted) and ``readers_vs_model`` per arm (readers − model), each for MAE, RMSE
    and the share within 12 months, on the largest complete block of readers × cases
    (:func:`complete_subset`). One reader gives a fixed-reader analysis. What cannot be computed is
    said in ``not_computed``."""
    out: dict = {"method": METHOD, "primary": "mae", "not_computed": {}}
    if not len(first):
        return out
    arms = set(first[arm])
    if set(conditions) <= arms:
        kept, cases, dropped = complete_subset(first, reader, case, arm, conditions)
        if kept:
            d = first[first[reader].isin(kept) & first[case].isin(cases) & first[arm].isin(conditions)]
            sec = {"readers": [str(r) for r in kept], "n_cases": len(cases), "excluded_readers": [str(r) for r in dropped]}
            try:
                for f in foms:
                    sec[f] = orh(d, f, test=arm, reader=reader, case=case, truth=truth, rating=rating, conditions=conditions,
                                 readers="random" if len(kept) > 1 else "fixed", level=level).as_dict()
                out["assisted_vs_unassisted"] = sec
            except StatsError as e:
                out["not_computed"]["assisted_vs_unassisted"] = str(e)
        else:
            out["not_computed"]["assisted_vs_unassisted"] = "fewer than 3 cases were read by a reader in both arms."
    vs = {}
    for a in [c for c in conditions if c in arms]:
        g = first[(first[arm] == a) & first[model].notna()]
        kept, cases, dropped = complete_subset(g, reader, case, arm, [a])
        if not kept:
            out["not_computed"][f"readers_vs_model/{a}"] = "fewer than 3 cases with a model estimate were read in this arm."
            continue
        d = g[g[reader].isin(kept) & g[case].isin(cases)]
        sec = {"readers": [str(r) for r in kept], "n_cases": len(cases), "excluded_readers": [str(r) for r in dropped]}
        try:
            for f in foms:
                sec[f] = versus_model(d, f, model=model, reader=reader, case=case, truth=truth, rating=rating,
                                      readers="random" if len(kept) > 1 else "fixed", level=level).as_dict()
            vs[a] = sec
        except StatsError as e:
            out["not_computed"][f"readers_vs_model/{a}"] = str(e)
    if vs:
        out["readers_vs_model"] = vs
    return out


def study_table(section: dict) -> pd.DataFrame:
    """One display table of a reader study's ORH analysis (:func:`study_analysis` output)."""
    rows = []
    av = section.get("assisted_vs_unassisted")
    for f in STUDY_FOMS:
        if av and f in av:
            rows += [{"comparison": "assisted vs unassisted", **r} for r in summary_rows(av[f])]
    for a, sec in (section.get("readers_vs_model") or {}).items():
        for f in STUDY_FOMS:
            if f in sec:
                rows += [{"comparison": f"readers ({a}) vs model", **r} for r in summary_rows(sec[f])]
    return pd.DataFrame(rows)
