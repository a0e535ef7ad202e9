"""kneeage.stats against published values and independent implementations.

Reference data (tests/data):
* bland_altman_1986_pefr.csv — Bland JM, Altman DG. Statistical methods for assessing agreement between
  two methods of clinical measurement. Lancet 1986;i:307-310 (Wright vs mini Wright peak flow, 17 subjects).
* shrout_fleiss_1979.csv — Shrout PE, Fleiss JL. Intraclass correlations: uses in assessing rater
  reliability. Psychol Bull 1979;86:420-428 (6 targets × 4 judges).
"""

import warnings

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from scipy import stats as st

from kneeage import plots, reference, stats
from kneeage.errors import InputError, StatsError

from .conftest import ROOT

DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="module")
def pefr():
    return pd.read_csv(DATA / "bland_altman_1986_pefr.csv")


@pytest.fixture(scope="module")
def judges():
    wide = pd.read_csv(DATA / "shrout_fleiss_1979.csv")
    return wide.melt(id_vars="target", var_name="judge", value_name="rating")


def test_bland_altman_reproduces_the_1986_paper(pefr):
    # Paper: mean difference −2.1, SD 38.8, limits −2.1 ± 2·38.8 = −79.7 to 75.5; CI of the bias
    # −2.1 ± 2.12·9.4 = −22.0 to 17.8; CIs of the limits ± 2.12·16.3: −114.3 to −45.1 and 40.9 to 110.1.
    ba = stats.bland_altman(pefr.wright_1, pefr.mini_wright_1, z=2, approx="1986")
    assert ba.n == 17
    assert ba.bias == pytest.approx(-2.1, abs=0.05) and ba["bias"] == ba.bias
    assert ba.sd == pytest.approx(38.77, abs=0.005)
    assert ba.loa_lower == pytest.approx(-79.7, abs=0.1) and ba.loa_upper == pytest.approx(75.5, abs=0.1)
    assert ba.bias_ci == pytest.approx((-22.0, 17.8), abs=0.1)
    assert ba.loa_lower_ci == pytest.approx((-114.3, -45.1), abs=0.2)
    assert ba.loa_upper_ci == pytest.approx((40.9, 110.1), abs=0.2)


def test_bland_altman_default_uses_1_96_and_the_1999_standard_error(pefr):
    ba = stats.bland_altman(pefr.wright_1, pefr.mini_wright_1)
    d = (pefr.wright_1 - pefr.mini_wright_1).to_numpy(float)
    n, s, z = 17, d.std(ddof=1), st.norm.ppf(0.975)
    assert ba.z == pytest.approx(1.959964)
    assert ba.loa_lower == pytest.approx(d.mean() - z * s)
    se = s * np.sqrt(1 / n + z**2 / (2 * (n - 1)))
    assert ba.loa_upper_ci == pytest.approx((d.mean() + z * s - st.t.ppf(0.975, 16) * se,
                                             d.mean() + z * s + st.t.ppf(0.975, 16) * se))
    # exact CIs are asymmetric and wider than the approximation at n = 17
    for exact, approx in ((ba.loa_lower_ci_exact, ba.loa_lower_ci), (ba.loa_upper_ci_exact, ba.loa_upper_ci)):
        assert exact[1] - exact[0] > approx[1] - approx[0]
    assert ba.loa_upper_ci_exact[1] - ba.loa_upper > ba.loa_upper - ba.loa_upper_ci_exact[0]
    # proportional bias: regression of difference on mean, as scipy computes it
    reg = st.linregress((pefr.wright_1 + pefr.mini_wright_1) / 2, d)
    assert ba.slope == pytest.approx(reg.slope) and ba.slope_p == pytest.approx(reg.pvalue)
    assert ba.slope_ci[0] < ba.slope < ba.slope_ci[1]


def test_exact_loa_interval_has_nominal_coverage():
    rng = np.random.default_rng(1)
    true_upper = 1.959964
    hits_exact = hits_approx = 0
    for _ in range(2000):
        d = rng.normal(size=10)
        ba = stats.bland_altman(d, np.zeros(10))
        hits_exact += ba.loa_upper_ci_exact[0] <= true_upper <= ba.loa_upper_ci_exact[1]
        hits_approx += ba.loa_upper_ci[0] <= true_upper <= ba.loa_upper_ci[1]
    assert 0.935 <= hits_exact / 2000 <= 0.965  # exact: 95% (binomial SD 0.5%)
    assert hits_approx / 2000 < hits_exact / 2000  # the approximation undercovers at n = 10


def test_percentage_and_regression_limits(pefr):
    ba = stats.bland_altman(pefr.wright_1, pefr.mini_wright_1, percent=True)
    m = (pefr.wright_1 + pefr.mini_wright_1) / 2
    assert ba.bias == pytest.approx((100 * (pefr.wright_1 - pefr.mini_wright_1) / m).mean())
    # errors growing with size: regression limits widen with the mean; constant limits do not
    rng = np.random.default_rng(0)
    ref = rng.uniform(10, 200, 400)
    meth = ref + rng.normal(0, 0.05 * ref)
    rl = stats.regression_limits(meth, ref)
    _, lo, hi = rl.at([20, 180])
    assert hi[1] - lo[1] > 5 * (hi[0] - lo[0])
    # at each size the limits cover about 95% of the differences
    d = meth - ref
    _, lo, hi = rl.at((meth + ref) / 2)
    assert 0.92 < np.mean((d >= lo) & (d <= hi)) < 0.98


def test_repeated_readings_limits(pefr):
    # Both readings of both meters (Bland & Altman 1999 §5.2); with one reading per case the result
    # is the ordinary analysis.
    w = pefr.melt(id_vars="subject", value_vars=["wright_1", "wright_2"])
    mw = pefr.melt(id_vars="subject", value_vars=["mini_wright_1", "mini_wright_2"])
    rep = stats.bland_altman_repeated(w.subject, w.value, mw.subject, mw.value)
    dbar = (pefr[["wright_1", "wright_2"]].mean(1) - pefr[["mini_wright_1", "mini_wright_2"]].mean(1))
    sw2 = ((pefr.wright_1 - pefr.wright_2) ** 2).sum() / (2 * 17)  # within-subject variance, 2 readings
    smw2 = ((pefr.mini_wright_1 - pefr.mini_wright_2) ** 2).sum() / (2 * 17)
    assert rep.bias == pytest.approx(dbar.mean())
    assert rep.sd == pytest.approx(np.sqrt(dbar.var(ddof=1) + sw2 / 2 + smw2 / 2))
    assert rep.within_sd_method == pytest.approx(np.sqrt(sw2))
    one = stats.bland_altman_repeated(pefr.subject, pefr.wright_1, pefr.subject, pefr.mini_wright_1)
    plain = stats.bland_altman(pefr.wright_1, pefr.mini_wright_1)
    assert (one.bias, one.sd, one.loa_lower) == pytest.approx((plain.bias, plain.sd, plain.loa_lower))


def test_icc_reproduces_shrout_fleiss_table(judges):
    r = stats.icc(judges, "target", "judge", "rating")
    published = {"ICC1": .17, "ICC2": .29, "ICC3": .71, "ICC1k": .44, "ICC2k": .62, "ICC3k": .91}
    for form, value in published.items():
        assert round(r.loc[form, "icc"], 2) == value
    assert r.loc["ICC2", "mcgraw_wong"] == "ICC(A,1)"


def test_icc_matches_pingouin(judges):
    ours = stats.icc(judges, "target", "judge", "rating")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pg.intraclass_corr(judges, "target", "judge", "rating").set_index("Type")
    names = {"ICC1": "ICC(1,1)", "ICC2": "ICC(A,1)", "ICC3": "ICC(C,1)",
             "ICC1k": "ICC(1,k)", "ICC2k": "ICC(A,k)", "ICC3k": "ICC(C,k)"}
    for form, pname in names.items():
        row = theirs.loc[pname]
        assert ours.loc[form, "icc"] == pytest.approx(row["ICC"], abs=1e-9)
        assert ours.loc[form, "F"] == pytest.approx(row["F"], abs=1e-9)
        assert ours.loc[form, "pval"] == pytest.approx(row["pval"], abs=1e-9)
        assert (ours.loc[form, "ci_lower"], ours.loc[form, "ci_upper"]) == pytest.approx(tuple(row["CI95"]), abs=0.006)


def test_icc_refuses_incomplete_or_duplicate_data(judges):
    with pytest.raises(StatsError, match="target 3 is not rated by every rater"):
        stats.icc(judges.drop(index=judges.index[(judges.target == 3) & (judges.judge == "judge_2")]),
                  "target", "judge", "rating")
    with pytest.raises(StatsError, match="repeats a target-rater pair"):
        stats.icc(pd.concat([judges, judges.head(1)]), "target", "judge", "rating")
    with pytest.raises(StatsError, match="column 'score'"):
        stats.icc(judges, "target", "judge", "score")


def test_error_summary(pefr):
    s = stats.error_summary(pefr.wright_1, pefr.mini_wright_1)
    e = (pefr.wright_1 - pefr.mini_wright_1).to_numpy(float)
    assert s.n == 17 and s.mae == pytest.approx(np.abs(e).mean()) and s["mae"] == s.mae
    assert s.rmse == pytest.approx(np.sqrt((e**2).mean()))
    assert s.bias == pytest.approx(e.mean()) and s.median_ae == np.median(np.abs(e))
    assert s.within[24] == pytest.approx(np.mean(np.abs(e) <= 24)) and s.max_error == 81
    assert s.mae_ci[0] < s.mae < s.mae_ci[1]
    ref = st.bootstrap((np.abs(e),), np.mean, method="BCa", n_resamples=2000,
                       rng=np.random.default_rng(stats.SEED))
    assert s.mae_ci == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert s.as_dict()["mae_ci"] == list(s.mae_ci) and s.as_dict()["within"][12] == s.within[12]


def test_mae_ci_covers_the_true_mae():
    rng = np.random.default_rng(3)
    true_mae = 10 * np.sqrt(2 / np.pi)
    hits = 0
    for i in range(200):
        s = stats.error_summary(rng.normal(0, 10, 60), np.zeros(60), n_boot=400, seed=i)
        hits += s.mae_ci[0] <= true_mae <= s.mae_ci[1]
    assert 0.88 <= hits / 200 <= 0.99


def test_stratified_by_sex_and_age_band():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"sex": rng.choice(["F", "M"], 200), "chronological_age_months": rng.uniform(0, 216, 200)})
    df["ref"] = df.chronological_age_months + rng.normal(0, 8, 200)
    df["pred"] = df.ref + np.where(df.sex == "M", 6, 0) + rng.normal(0, 3, 200)
    t = stats.stratified(df, "pred", "ref", n_boot=200)
    assert list(t.stratum[:3]) == ["all", "sex", "sex"]
    m = t[(t.stratum == "sex") & (t.level == "M")].iloc[0]
    f = t[(t.stratum == "sex") & (t.level == "F")].iloc[0]
    assert m.bias > 4 and abs(f.bias) < 1.5
    assert t[t.stratum == "age_band"].n.sum() == 200


def test_concordance(pefr):
    c = stats.concordance(pefr.wright_1, pefr.mini_wright_1)
    x, y = pefr.wright_1.to_numpy(float), pefr.mini_wright_1.to_numpy(float)
    r = np.corrcoef(x, y)[0, 1]
    v, w = x.std() / y.std(), (x.mean() - y.mean()) / np.sqrt(x.std() * y.std())
    cb = 2 / (v + 1 / v + w**2)  # Lin 1989: ρc = r·C_b
    assert c.ccc == pytest.approx(r * cb) and c.pearson_r == pytest.approx(r)
    assert c.ci[0] < c.ccc < c.ci[1] < 1
    assert stats.concordance([1, 2, 3, 4], [1, 2, 3, 4]).ccc == pytest.approx(1)
    assert stats.concordance([1, 2, 3, 4], [11, 12, 13, 14]).ccc < 0.1


def test_deming_matches_orthogonal_regression_and_recovers_a_line():
    rng = np.random.default_rng(2)
    t = rng.uniform(0, 200, 300)
    x, y = t + rng.normal(0, 5, 300), 3 + 1.1 * t + rng.normal(0, 5, 300)
    fit = stats.deming(x, y)
    # orthogonal regression = first principal axis
    evals, evecs = np.linalg.eigh(np.cov(x, y))
    vx, vy = evecs[:, -1]
    assert fit.slope == pytest.approx(vy / vx)
    assert fit.slope_ci[0] < 1.1 < fit.slope_ci[1] and fit.intercept_ci[0] < 3 < fit.intercept_ci[1]
    # ordinary least squares is attenuated by the error in x; Deming is not
    assert st.linregress(x, y).slope < fit.slope_ci[0] + 0.02


def test_passing_bablok():
    x = np.arange(1.0, 21)
    exact = stats.passing_bablok(x, 2 * x + 1)
    assert (exact.slope, exact.intercept) == pytest.approx((2, 1))
    rng = np.random.default_rng(5)
    y = 0.9 * x + 4 + rng.normal(0, 0.3, 20)
    y[[3, 11]] += 40  # outliers barely move it
    fit = stats.passing_bablok(x, y)
    assert fit.slope_ci[0] < 0.9 < fit.slope_ci[1] and abs(fit.intercept - 4) < 1.5
    # hand-computed shifted median for a small set: slopes {1, 3, 2} → median 2
    small = stats.passing_bablok([0, 1, 2], [0, 1, 4])
    assert small.slope == 2
    # at least half the slopes below −1: the shifted median has no element, a StatsError and not an IndexError (#14.2)
    for x, y in (([100, 100, 100], [3, 1, 2]), (np.arange(12.0), -2 * np.arange(12.0))):
        with pytest.raises(StatsError, match="cannot estimate a slope"):
            stats.passing_bablok(x, y)
    # a mild negative trend still fits (the shift keeps the median inside the slopes)
    assert stats.passing_bablok(np.arange(12.0), -0.5 * np.arange(12.0) + np.sin(np.arange(12.0))).slope < 0


def test_compare_errors(pefr):
    rng = np.random.default_rng(4)
    ref = rng.uniform(0, 200, 150)
    good, bad = ref + rng.normal(0, 5, 150), ref + rng.normal(0, 10, 150)
    c = stats.compare_errors(good, bad, ref)
    ea, eb = np.abs(good - ref), np.abs(bad - ref)
    assert c.mae_difference == pytest.approx(ea.mean() - eb.mean())
    assert c.mae_difference_ci[1] < 0 and c.wilcoxon_p < 0.001
    assert c.wilcoxon_p == pytest.approx(st.wilcoxon(ea, eb).pvalue)
    assert c.paired_t_p == pytest.approx(st.ttest_rel(ea, eb).pvalue)
    same = stats.compare_errors(good, good, ref)
    assert same.mae_difference == 0 and same.mae_difference_ci == (0, 0) and same.wilcoxon_p == 1


@pytest.mark.parametrize("call", [
    lambda: stats.error_summary([1, 2, 3], [1, 2]),
    lambda: stats.bland_altman([1, 2], [1, 2]),
    lambda: stats.bland_altman([1, np.nan, 3], [1, 2, 3]),
    lambda: stats.concordance([1, 2, "x"], [1, 2, 3]),
    lambda: stats.deming([1, 2, 3], [[1], [2], [3]]),
    lambda: stats.passing_bablok([1, 2, 3, 4], [1, 2, None, 4]),
    lambda: stats.compare_errors([1, 2, 3], [1, 2, 3], [1, 2]),
    lambda: stats.bland_altman([1, 2, 3], [1, 2, 3], level=95),
    lambda: stats.bland_altman_repeated([1, 2], [1, 2], [1, 2], [1, 2]),
])
def test_unusable_input_is_refused_with_a_sentence(call):
    with pytest.raises(StatsError) as e:
        call()
    assert str(e.value).endswith(".")


def test_nan_message_names_the_value():
    with pytest.raises(StatsError, match=r"reference: value 2 of 3 is missing"):
        stats.error_summary([1, 2, 3], [1, None, 3])


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.tuples(hs.floats(-1e3, 1e3), hs.floats(-1e3, 1e3)), min_size=3, max_size=40))
def test_bland_altman_invariants(pairs):
    a, b = np.array(pairs).T
    ba = stats.bland_altman(a, b)
    assert ba.loa_lower <= ba.bias <= ba.loa_upper
    assert ba.loa_upper - ba.loa_lower == pytest.approx(2 * ba.z * ba.sd, abs=1e-6)
    swapped = stats.bland_altman(b, a)
    assert swapped.bias == pytest.approx(-ba.bias, abs=1e-9)


def test_reference_sds():
    # Brush SD at 10 y for a boy: 9.79 months → 20 months ahead is +2.04 SD (advanced)
    r = reference.bone_age_sds(140, 120, "M")
    assert r.sd_months == pytest.approx(9.79) and r.sds == pytest.approx(20 / 9.79) and r.category == "advanced"
    assert reference.bone_age_sds(120, 120, "F").category == "normal"
    assert reference.bone_age_sds(84, 120, "F").category == "delayed"
    assert reference.sd_months(15, "F") == pytest.approx((1.77 + 3.49) / 2)  # linear between 12 and 18 mo
    assert reference.sd_months(230, "M") == 13.05  # held beyond the table
    assert "Greulich" in r.source and "Brush" in r.sentence()
    with pytest.raises(InputError, match="sex must be F or M"):
        reference.bone_age_sds(100, 100, "X")
    with pytest.raises(InputError, match="chronological age must lie"):
        reference.bone_age_sds(100, -3, "F")


def test_plots_carry_the_statistics(pefr):
    ba = stats.bland_altman(pefr.wright_1, pefr.mini_wright_1)
    fig = plots.bland_altman(ba, case_ids=[f"S{i}" for i in pefr.subject], note=plots.DEMO_NOTE)
    hlines = sorted(s.y0 for s in fig.layout.shapes if s.y0 == s.y1)
    assert hlines == pytest.approx(sorted([ba.loa_lower, ba.bias, ba.loa_upper]))
    bands = sorted((s.y0, s.y1) for s in fig.layout.shapes if s.y0 != s.y1)
    assert bands[0] == pytest.approx(ba.loa_lower_ci)
    assert fig.data[0].text[0] == "S1" and list(fig.data[0].y) == pytest.approx(ba.differences)
    fit = stats.deming(pefr.mini_wright_1, pefr.wright_1)
    sc = plots.scatter(pefr.wright_1, pefr.mini_wright_1, fit=fit)
    assert len(sc.data) == 3 and "deming" in sc.data[2].name
    df = pd.DataFrame({"error": [1, -2, 3, 4], "age_band": ["0-5 y"] * 2 + ["5-10 y"] * 2, "sex": list("FMFM")})
    assert len(plots.error_by_group(df).data) == 2
    rows = pd.DataFrame({"label": ["A", "B"], "estimate": [5, 6], "lower": [4, 5], "upper": [6, 8]})
    fo = plots.forest(rows, pooled={"estimate": 5.4, "lower": 4.8, "upper": 6.1})
    assert list(fo.data[0].error_x.array) == [1, 2] and fo.data[1].x[0] == 5.4
    bands = [{"band": "0-5 y", "n": 3, "mae": 2.0, "chron_age_mae": 4.0}, {"band": "5-10 y", "n": 2, "mae": 3.0, "chron_age_mae": 8.0}]
    rep = plots.error_by_true_age({"model": {"by_true_bone_age": bands}, "variant": {"by_true_bone_age": bands}})
    assert [t.name for t in rep.data] == ["model", "variant", "chronological age as the estimate"]
    assert list(rep.data[0].y) == [2.0, 3.0] and list(rep.data[2].y) == [4.0, 8.0] and rep.data[0].x[1] == "5-10 y (n=2)"


def test_bootstrap_ci_is_the_same_computed_all_at_once_or_one_resample_at_a_time():
    v = np.random.default_rng(3).normal(5, 3, 120)
    at_once = stats.bootstrap_ci(v)  # np.mean takes an axis: scipy computes every resample in one call
    one_by_one = stats.bootstrap_ci(v, statistic=lambda x: float(np.mean(x)))
    assert stats._takes_axis(np.mean) and not stats._takes_axis(lambda x: x)
    assert np.allclose(at_once, one_by_one, rtol=0, atol=1e-12) and at_once[0] < 5 < at_once[1]
