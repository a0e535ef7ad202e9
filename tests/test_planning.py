"""kneeage.planning: cohort size and reader-study power against published values.

* ORH power with the Van Dyke data as the pilot (tests/data/vandyke_1993_mrmc.csv, see tests/test_mrmc.py):
  the values asserted by RJafroc's test suite (Chakraborty DP; tests "SsPowerGivenJK OR VarComp Input"
  and "Sample Size ROC", after its update to Hillis et al. 2011 and 2018): effect −0.043800322, 10 readers:
  RRRC 165 cases → 0.80541995, FRRC 131 → 0.80091813, RRFC 53 → 0.80496663; 6 readers, 111 cases, observed
  effect → 0.5526116; and 6 readers need 251 cases for power 0.8.
* Archer et al. (2021) criterion 4 example: a residual variance within 10% (MMOE 1.1) needs 234 cases.
"""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats as st

from kneeage import mrmc, planning
from kneeage.cli import main
from kneeage.errors import StatsError

from .conftest import ROOT


@pytest.fixture(scope="module")
def pilot():
    d = pd.read_csv(ROOT / "tests" / "data" / "vandyke_1993_mrmc.csv")
    r = mrmc.orh(d, "auc", test="treatment")
    return planning.pilot_components(r), r.differences[0].estimate


@pytest.mark.parametrize("analysis, cases, power", [("RRRC", 165, 0.80541995), ("FRRC", 131, 0.80091813),
                                                    ("RRFC", 53, 0.80496663)])
def test_orh_power_reproduces_rjafroc(pilot, analysis, cases, power):
    comps, _ = pilot
    assert planning.orh_power(-0.043800322, 10, cases, analysis=analysis, **comps).power == pytest.approx(power, abs=1e-8)


def test_cases_for_target_power_reproduce_rjafroc(pilot):
    comps, effect = pilot
    assert planning.orh_power(effect, 6, 111, **comps).power == pytest.approx(0.5526116, abs=5e-8)
    grid = planning.plan_reader_study(effect, readers=[6], power=0.8, **comps)
    assert grid.cases.tolist() == [251] and grid.power[0] > 0.8
    assert planning.orh_power(effect, 6, 250, **comps).power <= 0.8
    more = planning.plan_reader_study(effect, readers=range(4, 12), **comps).dropna()
    assert more.cases.is_monotonic_decreasing  # more readers, fewer cases


def test_archer_criteria_follow_their_formulas():
    z = st.norm.ppf(0.975)
    assert planning.archer_residual_variance(1.1).n == 234
    assert planning.archer_r2(0.5, 0.1).n == int(np.ceil(4 * 0.5 * 0.25 / (0.1 / (2 * z)) ** 2))
    assert planning.archer_citl(20, 10).n == int(np.ceil(400 / (10 / (2 * z)) ** 2))
    # slope: n = 1 + λ²(1 − R²)/(SE²R²); R² = 0.5 and λ = 1 with SDs √200 and 10
    assert planning.archer_slope(np.sqrt(200), 10, 1.0, 0.2).n == int(np.ceil(1 + 1 / (0.2 / (2 * z)) ** 2))
    assert planning.archer_slope(np.sqrt(200), 10, 0.8, 0.2).n == int(np.ceil(1 + 0.64 / (0.2 / (2 * z)) ** 2))


def test_mae_and_limits_of_agreement_sizes_meet_their_precision():
    p = planning.n_for_mae(0.5, mae=5)
    sd_abs = 5 * np.sqrt(np.pi / 2 - 1)
    assert 1.96 * sd_abs / np.sqrt(p.n) <= 0.5 < 1.96 * sd_abs / np.sqrt(p.n - 1) + 1e-3
    assert "normal" in p.assumption
    loa = planning.n_for_limits_of_agreement(2, 6.3)
    half = lambda n: st.t.ppf(0.975, n - 1) * 6.3 * np.sqrt(3 / n)  # noqa: E731
    assert half(loa.n) <= 2 < half(loa.n - 1)
    assert planning.n_for_limits_of_agreement(2, 6.3, approx="1999").n != loa.n
    t = planning.plan_cohort(mae=5, mae_half_width=0.5, sd_error=6.3, loa_half_width=2, sd_reference=50)
    assert list(t.columns) == ["criterion", "target", "n", "assumption", "reference"] and len(t) == 5
    with pytest.raises(StatsError, match="half_width must be a positive number"):
        planning.n_for_mae(0, mae=5)
    with pytest.raises(StatsError, match="residual SD must be smaller"):
        planning.archer_slope(5, 6)


def test_cli_plan_cohort_and_study_plan():
    run = CliRunner().invoke
    r = run(main, ["plan-cohort", "--mae", "5", "--mae-half-width", "0.5", "--sd-error", "6.3", "--loa-half-width", "2",
                   "--sd-reference", "50"])
    assert r.exit_code == 0, r.output
    assert "residual variance (Archer 4): 234 cases" in r.output and "the cohort needs 610 cases" in r.output
    r = run(main, ["study", "plan", "--effect", "1", "--var-tr", "0.3", "--var-error", "0.5", "--cov1", "0.3",
                   "--cov2", "0.2", "--cov3", "0.15", "--pilot-cases", "50", "--readers", "4-5", "--json"])
    assert r.exit_code == 0, r.output
    want = planning.plan_reader_study(1, readers=[4, 5], var_reader_condition=0.3, var_error=0.5, cov1=0.3, cov2=0.2,
                                      cov3=0.15, pilot_cases=50)
    got = [json.loads(x) for x in r.output.splitlines() if x.startswith("{")]
    assert [g["cases"] for g in got] == want.cases.tolist()
    r = run(main, ["study", "plan", "--effect", "1"])
    assert r.exit_code == 2 and "give --from-study" in r.output
