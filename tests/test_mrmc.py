"""kneeage.mrmc (Obuchowski-Rockette-Hillis MRMC analysis) against published values.

Reference data (tests/data):
* vandyke_1993_mrmc.csv — Van Dyke CW et al. Cine MRI in the diagnosis of thoracic aortic dissection.
  79th RSNA Meeting, 1993: 5 readers × 114 cases (45 diseased) × 2 modalities, ratings 1-5; distributed
  with MRMCaov (Smith BJ, Hillis SL) as ``VanDyke``. Published ORH results (MRMCaov user guide):
  empirical AUC, DeLong covariances, random readers and cases; and readers fixed, jackknife covariances.
"""

import json

import numpy as np
import pandas as pd
import pytest

from kneeage import mrmc, readerstudy as rs, report
from kneeage.errors import StatsError

from .conftest import ROOT

DATA = ROOT / "tests" / "data"
APPROX = dict(rel=1e-6)  # the published values have 7 significant digits


@pytest.fixture(scope="module")
def vandyke():
    return pd.read_csv(DATA / "vandyke_1993_mrmc.csv")


def test_vandyke_delong_random_readers_and_cases_reproduce_mrmcaov(vandyke):
    r = mrmc.orh(vandyke, "auc", test="treatment", covariance="delong")
    assert [m.estimate for m in r.means] == [pytest.approx(0.8970370, **APPROX), pytest.approx(0.9408374, **APPROX)]
    c = r.components
    assert c.var_error == pytest.approx(0.0007921325, **APPROX)
    assert (c.cov1, c.cov2, c.cov3) == (pytest.approx(0.0003420090, **APPROX), pytest.approx(0.0003395265, **APPROX),
                                        pytest.approx(0.0002358497, **APPROX))
    assert c.ms_t == pytest.approx(0.004796171, **APPROX) and c.ms_tr == pytest.approx(0.0005510306, **APPROX)
    g = r.global_test
    assert (g.statistic, g.df1) == ("F", 1)
    assert g.value == pytest.approx(4.484854, **APPROX) and g.df2 == pytest.approx(15.06611, **APPROX)
    assert g.p == pytest.approx(0.05123303, **APPROX)
    (d,) = r.differences
    assert d.label == "1 − 2" and d.estimate == pytest.approx(-0.04380032, **APPROX)
    assert d.se == pytest.approx(0.0206825, **APPROX) and d.df == pytest.approx(15.06611, **APPROX)
    assert d.ci == (pytest.approx(-0.0878672, **APPROX), pytest.approx(0.0002666, rel=2e-4))  # published to 1e-7
    assert d.p == pytest.approx(g.p)  # t² = F with one df
    assert r.design == "factorial" and r.n_cases == 114 and r.readers == ("1", "2", "3", "4", "5")


def test_vandyke_fixed_readers_jackknife_reproduces_mrmcaov(vandyke):
    r = mrmc.orh(vandyke, "auc", test="treatment", readers="fixed")
    assert (r.global_test.statistic, r.global_test.df1, r.global_test.df2) == ("chi2", 1, None)
    assert r.global_test.value == pytest.approx(5.475953, **APPROX)
    assert r.global_test.p == pytest.approx(0.01927984, **APPROX)
    assert len(r.reader_differences) == 5 and all(x.df is None for x in r.reader_differences)
    # the per-reader difference is that reader's own AUC difference, SE² = Var1 + Var2 − 2·Cov
    fom = {(x["condition"], x["reader"]): x["value"] for x in r.reader_fom}
    assert r.reader_differences[0].estimate == pytest.approx(fom[("1", "1")] - fom[("2", "1")])


def test_array_and_table_entry_points_agree_and_random_cases_fixed_is_the_plain_anova(vandyke):
    a = mrmc.orh(vandyke, "auc", test="treatment")
    wide = vandyke.pivot_table(index=["treatment", "reader"], columns="case", values="rating")
    truth = vandyke.drop_duplicates("case").set_index("case").truth.loc[wide.columns]
    b = mrmc.orh_arrays(truth.to_numpy(), wide.to_numpy().reshape(2, 5, 114), "auc")
    assert b.global_test.value == pytest.approx(a.global_test.value) and b.components == pytest.approx(a.components)
    f = mrmc.orh(vandyke, "auc", test="treatment", cases="fixed")
    assert f.global_test.value == pytest.approx(f.components.ms_t / f.components.ms_tr) and f.global_test.df2 == 4


def test_jackknife_leave_one_out_shortcuts_equal_refitting():
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 200, 15)
    r = y + rng.normal(0, 10, (2, 3, 15))
    yb = (rng.uniform(size=15) > 0.5).astype(float)
    for name in ("mae", "rmse", "within12", "auc"):
        f = mrmc.FOMS[name]
        truth = yb if name == "auc" else y
        loo = f.leave_one_out(truth, r)
        slow = np.stack([f.value(np.delete(truth, k), np.delete(r, k, -1)) for k in range(15)], -1)
        np.testing.assert_allclose(loo, slow, err_msg=name)


def _simulated(rng, readers=4, cases=30, groups=None):
    y = rng.uniform(10, 200, cases)
    rows = []
    for j in range(readers):
        bias = rng.normal(0, 3)
        for arm, sd in (("assisted", 6), ("unassisted", 8)):
            for k in range(cases):
                if groups and k % groups != j % groups:
                    continue
                rows.append({"reader": f"R{j}", "case": f"c{k:02d}", "test": arm, "truth": y[k],
                             "rating": y[k] + bias + rng.normal(0, sd)})
    return pd.DataFrame(rows)


def test_split_plot_pools_covariances_within_groups_only():
    rng = np.random.default_rng(3)
    d = _simulated(rng, readers=6, cases=40, groups=2)  # readers 0,2,4 read even cases; 1,3,5 odd ones
    sp = mrmc.orh(d, "mae", conditions=["assisted", "unassisted"])
    assert sp.design == "split-plot" and sp.n_cases == 40
    parts = [mrmc.orh(d[d.reader.isin(g)], "mae", conditions=["assisted", "unassisted"]) for g in (["R0", "R2", "R4"], ["R1", "R3", "R5"])]
    c = sp.components
    assert c.share_pairs == pytest.approx(2 * 3 * 2 / (6 * 5))
    assert c.var_error == pytest.approx(np.mean([p.components.var_error for p in parts]))
    assert c.cov2 == pytest.approx(np.mean([p.components.cov2 for p in parts]))
    assert c.cov3 == pytest.approx(np.mean([p.components.cov3 for p in parts]))
    den = c.ms_tr + 6 * c.share_pairs * max(c.cov2 - c.cov3, 0)
    assert sp.global_test.denominator == pytest.approx(den)
    # each reader their own cases: no between-reader covariance at all
    own = mrmc.orh(_simulated(rng, readers=3, cases=30, groups=3), "mae")
    assert own.design == "cases nested within readers"
    assert (own.components.cov2, own.components.cov3, own.components.share_pairs) == (0, 0, 0)
    assert own.global_test.denominator == pytest.approx(own.components.ms_tr)


def test_readers_versus_model_equals_the_model_as_a_replicated_reader():
    """Chakraborty (2017): the single-condition analysis of reader − model differences ("1T-RRRC")
    gives the same test as an ORH analysis with the model read as a second condition by every reader."""
    rng = np.random.default_rng(5)
    d = _simulated(rng, readers=5, cases=25)
    d = d[d.test == "unassisted"].copy()
    model = d.drop_duplicates("case").set_index("case").truth + rng.normal(0, 5, 25)
    d["model"] = d.case.map(model)
    for fom in ("mae", "rmse", "within12"):
        v = mrmc.versus_model(d, fom)
        rep = pd.concat([d.assign(test="readers"), d.assign(test="model", rating=d.model)])
        o = mrmc.orh(rep, fom, conditions=["readers", "model"])
        assert v.difference.estimate == pytest.approx(o.differences[0].estimate)
        assert v.difference.p == pytest.approx(o.global_test.p) and v.difference.df == pytest.approx(o.global_test.df2)
        assert v.model_fom == pytest.approx(mrmc.FOMS[fom].value(d.drop_duplicates("case").truth.to_numpy(),
                                                                   d.drop_duplicates("case").model.to_numpy()))
    same = d.assign(model=d.case.map(d[d.reader == "R0"].set_index("case").rating))
    r0 = mrmc.versus_model(same, "mae").reader_differences[0]
    assert (r0.reader, r0.estimate, r0.se) == ("R0", 0.0, 0.0)


def test_bad_input_gets_one_sentence():
    d = _simulated(np.random.default_rng(1), readers=3, cases=10)
    with pytest.raises(StatsError, match="unknown figure of merit 'kappa'"):
        mrmc.orh(d, "kappa")
    with pytest.raises(StatsError, match="column 'score' is not in the data"):
        mrmc.orh(d, rating="score")
    with pytest.raises(StatsError, match="read case c00 twice under assisted"):
        mrmc.orh(pd.concat([d, d.iloc[:1]]))
    with pytest.raises(StatsError, match="did not read the same cases under every test"):
        mrmc.orh(d.drop(index=d.index[0]))
    with pytest.raises(StatsError, match="random readers need at least 2 readers"):
        mrmc.orh(d[d.reader == "R0"])
    assert mrmc.orh(d[d.reader == "R0"], readers="fixed").global_test.statistic == "chi2"
    with pytest.raises(StatsError, match="DeLong covariances are for the empirical AUC only"):
        mrmc.orh(d, "mae", covariance="delong")
    with pytest.raises(StatsError, match="cannot both be fixed"):
        mrmc.orh(d, readers="fixed", cases="fixed")


def _reads(rng, readers=3, cases=12):
    """A reads table shaped like readerstudy.reads_table (first reads, both arms, model estimates)."""
    y = rng.uniform(20, 200, cases)
    model = y + rng.normal(0, 5, cases)
    rows = []
    for j in range(readers):
        for arm, sd in (("unassisted", 9), ("assisted", 6)):
            for k in range(cases):
                rows.append({"reader_id": f"R{j}", "reader": f"Dr {j}", "case_id": f"c{k}", "arm": arm, "repeat": 0,
                             "unreadable": 0, "estimate_months": y[k] + rng.normal(0, sd), "seconds": 10.0,
                             "reference_bone_age_months": y[k], "model_months": model[k], "sex": "FM"[k % 2],
                             "chronological_age_months": y[k] + 3, "confidence": 3})
    return pd.DataFrame(rows)


def test_reader_study_analysis_reports_orh_and_keeps_the_bootstrap_as_sensitivity_analysis():
    reads = _reads(np.random.default_rng(8))
    reads = reads[~((reads.reader_id == "R2") & (reads.case_id == "c0") & (reads.arm == "assisted"))]  # one read missing
    a = rs.analyse(None, "study", n_boot=200, reads=reads).as_dict()
    assert a["assisted_vs_unassisted"]["label"] == "sensitivity analysis (bootstrap)"
    orh = a["orh"]
    sec = orh["assisted_vs_unassisted"]
    assert sec["readers"] == ["R0", "R1", "R2"] and sec["n_cases"] == 11  # c0 is not complete for R2
    common = reads[reads.case_id != "c0"]
    direct = mrmc.orh(common, "mae", test="arm", reader="reader_id", case="case_id", truth="reference_bone_age_months",
                      rating="estimate_months", conditions=["assisted", "unassisted"])
    assert sec["mae"]["global_test"]["p"] == pytest.approx(direct.global_test.p)
    assert sec["mae"]["differences"][0]["label"] == "assisted − unassisted"
    assert set(sec) >= {"mae", "rmse", "within12"}
    vm = orh["readers_vs_model"]["unassisted"]["mae"]
    assert vm["difference"]["label"] == "readers − model" and vm["n_cases"] == 12
    table = mrmc.study_table(orh)
    assert {"assisted vs unassisted", "readers (assisted) vs model", "readers (unassisted) vs model"} == set(table.comparison)
    html = report.orh_html(json.loads(json.dumps(orh)))
    assert "Primary analysis: ORH MRMC" in html and "assisted − unassisted" in html and "readers − model" in html


def test_study_analysis_says_what_it_could_not_compute():
    reads = _reads(np.random.default_rng(2), readers=1, cases=2)
    orh = mrmc.study_analysis(reads)
    assert "assisted_vs_unassisted" not in orh and "fewer than 3 cases" in orh["not_computed"]["assisted_vs_unassisted"]
    one = mrmc.study_analysis(_reads(np.random.default_rng(2), readers=1, cases=8))
    assert one["assisted_vs_unassisted"]["mae"]["readers_effect"] == "fixed"


def test_study_export_and_plan_from_a_pilot_study_headless(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from kneeage import planning
    from kneeage.cli import main
    from kneeage.store import Store

    monkeypatch.setenv("KNEEAGE_HOME", str(tmp_path))
    store = Store()
    sid = rs.setup_study(store, rs.Protocol.from_dict({
        "name": "orh study", "seed": 3, "cases": {"sampling": "random", "n": 5}, "arms": {"repeats": 0},
        "synthetic": {"n": 8, "seed": 4, "size": 128}}))
    rng = np.random.default_rng(0)
    refs = store.cases(store.study(sid)["cohort_id"]).set_index("case_id").reference_bone_age_months
    for name in ("Dr A", "Dr B", "Dr C"):
        reader = rs.authenticate(store, rs.invite(store, sid, name))
        while not isinstance(t := rs.next_task(store, reader), str):
            rs.submit(store, reader, t, float(np.clip(refs[t.case_id] + rng.normal(0, 10), 0, 240)), 5.0)
    run = CliRunner().invoke
    r = run(main, ["study", "export", sid, "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    analysis = json.loads((tmp_path / "out" / "analysis.json").read_text())
    sec = analysis["orh"]["assisted_vs_unassisted"]
    assert sec["n_cases"] == 5 and len(sec["readers"]) == 3 and sec["mae"]["readers_effect"] == "random"
    assert analysis["assisted_vs_unassisted"]["label"] == "sensitivity analysis (bootstrap)"
    assert set(analysis["orh"]["readers_vs_model"]) == {"assisted", "unassisted"}
    page = (tmp_path / "out" / "analysis.html").read_text()
    assert "Primary analysis: ORH MRMC" in page and "assisted − unassisted" in page
    r = run(main, ["study", "plan", "--effect", "2", "--from-study", sid, "--readers", "3-4", "--json"])
    assert r.exit_code == 0, r.output
    comps = planning.pilot_from_reads(rs.reads_table(store, sid))
    assert comps["pilot_cases"] == 5 and comps["observed_difference"] == pytest.approx(sec["mae"]["differences"][0]["estimate"])
    comps.pop("observed_difference")
    want = planning.plan_reader_study(2, readers=[3, 4], **comps)
    got = [json.loads(x) for x in r.output.splitlines() if x.startswith("{")]
    assert [g["power"] for g in got] == pytest.approx(want.power.tolist())
