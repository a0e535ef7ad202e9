"""kneeage.growth: published table values, refusals, ranges, and the clinical view of error (kappa, confusion
matrix and SEs against scikit-learn / statsmodels, test-only dependencies)."""

import numpy as np
import pandas as pd
import pytest

from kneeage import growth, stats
from kneeage.errors import InputError, StatsError


# ------------------------------------------------------------------ Paley et al. 2000 multipliers


@pytest.mark.parametrize("sex, years, published", [
    ("M", 0, 5.080), ("F", 0, 4.630), ("M", 1, 3.240), ("F", 1, 2.970), ("M", 5, 1.820), ("F", 5, 1.660),
    ("M", 10, 1.310), ("F", 10, 1.190), ("M", 12, 1.180), ("F", 12, 1.070), ("M", 14, 1.080), ("F", 14, 1.000),
    ("M", 16.5, 1.010), ("M", 17, 1.000),
])
def test_paley_multiplier_reproduces_the_table(sex, years, published):
    assert growth.paley_multiplier(years * 12, sex) == pytest.approx(published, abs=1e-9)


def test_paley_methods_follow_the_paper():
    m = 1.310  # boy, 10 years
    assert growth.limb_at_maturity(40, 120, "M") == pytest.approx(40 * m)
    assert growth.discrepancy_at_maturity(2.0, 120, "M") == pytest.approx(2.0 * m)
    assert growth.maturity_months("F") == 168 and growth.maturity_months("M") == 204
    m_table = list(growth.PALEY_MULTIPLIERS["M"].values())
    assert all(a >= b for a, b in zip(m_table, m_table[1:]))  # never increases with age


# -------------------------------------------------------------------- Bayley-Pinneau (1952) tables


@pytest.mark.parametrize("sex, category, months, published", [
    ("M", "average", 84, 69.5), ("M", "average", 120, 78.4), ("M", "average", 156, 87.6), ("M", "average", 222, 100.0),
    ("M", "accelerated", 144, 80.9), ("M", "accelerated", 204, 99.0), ("M", "retarded", 72, 68.0),
    ("M", "retarded", 156, 88.0), ("F", "average", 72, 72.0), ("F", "average", 144, 92.2),
    ("F", "accelerated", 132, 88.3), ("F", "retarded", 144, 93.2), ("F", "retarded", 204, 100.0),
])
def test_bayley_pinneau_percentages(sex, category, months, published):
    assert growth.percent_mature_height(months, sex, category) == pytest.approx(published)


@pytest.mark.parametrize("sex, height_in, ba, ca, printed", [
    ("M", 60, 120, 120, 76.5),  # Table IIA, 60 in at skeletal age 10-0 → 76.5 in
    ("F", 50, 120, 120, 58.0),  # Table IIIA, 50 in at 10-0 → 58.0 in
    ("M", 59, 150, 102, 71.3),  # Table IID (accelerated), 59 in at 12-6 → 71.3 in
])
def test_bayley_pinneau_reproduces_printed_predictions(sex, height_in, ba, ca, printed):
    h, _, _ = growth.adult_height(height_in * 2.54, ba, ca, sex)
    assert round(h / 2.54, 1) == printed


def test_bayley_pinneau_table_choice_from_bone_age_minus_age():
    # the tables' directions: one year or more ahead → accelerated, one year or more behind → retarded
    assert growth.maturity_category(126, 120) == "average"
    assert growth.maturity_category(132, 120) == "accelerated"
    assert growth.maturity_category(109, 120) == "average"
    assert growth.maturity_category(108, 120) == "retarded"


# ------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("call, words", [
    (lambda: growth.paley_multiplier(-1, "M"), "age must lie between 0 and 240 months, got -1"),
    (lambda: growth.paley_multiplier(120, "X"), "sex must be F or M, got 'X'"),
    (lambda: growth.percent_mature_height(168, "M", "retarded"), "outside the Bayley-Pinneau table for retarded boys"),
    (lambda: growth.percent_mature_height(60, "F", "average"), "outside the Bayley-Pinneau table for average girls"),
    (lambda: growth.adult_height(0, 120, 120, "F"), "current height must lie between 30 and 230 cm, got 0"),
    (lambda: growth.limb_at_maturity("long", 120, "F"), "limb length must be a number of centimetres, got 'long'"),
    (lambda: growth.discrepancy_at_maturity(-2, 120, "F"), "limb-length discrepancy must lie between 0 and 50 cm"),
    (lambda: growth.knee_remaining_growth(float("nan"), "M"), "bone age must lie between 0 and 240 months"),
])
def test_out_of_range_input_is_refused_in_one_sentence(call, words):
    with pytest.raises(InputError) as e:
        call()
    msg = str(e.value)
    assert words in msg and msg.endswith(".") and msg.count(". ") == 0


# ------------------------------------------------------------------------- knee and the panel


def test_knee_remaining_growth_uses_birch_rates_to_maturity():
    g = growth.knee_remaining_growth(120, "F")  # 4 years of skeletal growth left (maturity at 14 y)
    assert g["distal_femur"] == pytest.approx(3.6) and g["proximal_tibia"] == pytest.approx(2.4)
    assert g["knee"] == pytest.approx(6.0)
    assert growth.knee_remaining_growth(192, "M")["knee"] == pytest.approx(1.5)
    assert growth.knee_remaining_growth(200, "F")["knee"] == 0


def test_growth_panel_gives_ranges_over_the_interval():
    r = growth.growth_panel(132, (120, 144), "M", chronological_age_months=130, height_cm=145, femur_cm=40,
                            tibia_cm=33, discrepancy_cm=2)
    rows = {i.label: i for i in r.items}
    assert {"Predicted adult height", "Femur length at maturity", "Tibia growth remaining",
            "Growth remaining at the knee (femur + tibia)"} <= set(rows)
    for i in r.items:
        assert i.low <= i.value <= i.high and i.source
    knee = rows["Growth remaining at the knee (femur + tibia)"]
    assert knee.value == pytest.approx(1.5 * (204 - 132) / 12)
    assert knee.low == pytest.approx(1.5 * 5) and knee.high == pytest.approx(1.5 * 7)
    femur = rows["Femur length at maturity"]
    assert femur.low == pytest.approx(40 * growth.paley_multiplier(144, "M"))
    assert femur.high == pytest.approx(40 * growth.paley_multiplier(120, "M"))
    assert "Decision support, not a decision" in r.statement
    assert r.as_dict()["items"][0]["source"].startswith("Birch")


def test_growth_panel_explains_what_it_cannot_show():
    r = growth.growth_panel(170, (160, 180), "M", chronological_age_months=190, height_cm=160)
    assert any("outside the Bayley-Pinneau table for retarded boys" in n for n in r.notes)
    r = growth.growth_panel(120, (110, 130), "F", height_cm=140)
    assert any("needs the chronological age" in n for n in r.notes)


# -------------------------------------------------------------------- clinical view of error


def test_kappa_and_confusion_matrix_match_scikit_learn():
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    rng = np.random.default_rng(3)
    cats = ["delayed", "normal", "advanced"]
    a = rng.choice(cats, 200, p=[0.2, 0.6, 0.2])
    b = np.where(rng.random(200) < 0.7, a, rng.choice(cats, 200))
    k = stats.cohen_kappa(a, b, cats)
    assert k.kappa == pytest.approx(cohen_kappa_score(a, b, labels=cats), abs=1e-12)
    assert np.array_equal(np.array(k.matrix), confusion_matrix(a, b, labels=cats))


def test_kappa_standard_errors_match_statsmodels():
    from statsmodels.stats.inter_rater import cohens_kappa

    rng = np.random.default_rng(5)
    cats = ["delayed", "normal", "advanced"]
    a = rng.choice(cats, 150, p=[0.25, 0.5, 0.25])
    b = np.where(rng.random(150) < 0.6, a, rng.choice(cats, 150))
    k = stats.cohen_kappa(a, b, cats)
    ref = cohens_kappa(np.array(k.matrix))
    assert k.kappa == pytest.approx(ref.kappa, abs=1e-12)
    assert k.se == pytest.approx(ref.std_kappa, rel=1e-9)  # Fleiss-Cohen-Everitt 1969
    assert k.se0 == pytest.approx(ref.std_kappa0, rel=1e-9)
    assert k.ci[0] == pytest.approx(ref.kappa_low, rel=1e-9) and k.ci[1] == pytest.approx(ref.kappa_upp, rel=1e-9)


def test_kappa_refuses_unknown_categories_and_unpaired_input():
    with pytest.raises(StatsError, match="not one of"):
        stats.cohen_kappa(["normal", "odd", "normal"], ["normal"] * 3, ["delayed", "normal", "advanced"])
    with pytest.raises(StatsError, match="must pair up"):
        stats.cohen_kappa(["normal"] * 3, ["normal"] * 4, ["normal"])


def test_wilson_interval_matches_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    for k, n in ((0, 20), (7, 40), (40, 40)):
        lo, hi = proportion_confint(k, n, method="wilson")
        assert stats.wilson_ci(k, n) == pytest.approx((lo, hi), abs=1e-12)


def test_clinical_view_on_a_cohort():
    rng = np.random.default_rng(0)
    n = 60
    ref = rng.uniform(60, 200, n)
    df = pd.DataFrame({"sex": rng.choice(["F", "M"], n), "chronological_age_months": ref + rng.normal(0, 12, n),
                       "reference_bone_age_months": ref, "predicted_bone_age_months": ref + rng.normal(0, 10, n)})
    v = growth.clinical_view(df)
    e = np.abs(df.predicted_bone_age_months - df.reference_bone_age_months)
    for t in (6, 12, 24):
        assert v["over"][str(t)]["share"] == pytest.approx(float((e > t).mean()))
    m = np.array(v["sds_agreement"]["matrix"])
    assert m.sum() == n and v["sds_agreement"]["rows"] == "reference"
    diff, over = growth.knee_growth_disagreement(df.predicted_bone_age_months, df.reference_bone_age_months, df.sex)
    assert v["knee_growth"]["n_over"] == int(over.sum())
    # below maturity the knee grows 1.5 cm per skeletal year, so 1 cm ↔ 8 months of bone-age error
    young = (df.predicted_bone_age_months < 160) & (df.reference_bone_age_months < 160)
    assert np.allclose(diff[young], 1.5 * e[young] / 12)


# ------------------------------------------------- validation summary, exports, bundle and pooling


def _cases(seed: int, n: int = 40) -> pd.DataFrame:
    from kneeage.validation import CASE_COLUMNS

    rng = np.random.default_rng(seed)
    ref = rng.uniform(60, 200, n)
    df = pd.DataFrame({c: np.nan for c in CASE_COLUMNS}, index=range(n)).astype(object)
    df = df.assign(case_id=[f"c{seed}-{i}" for i in range(n)], sex=rng.choice(["F", "M"], n),
                   chronological_age_months=ref + rng.normal(0, 12, n), reference_bone_age_months=ref,
                   predicted_bone_age_months=ref + rng.normal(0, 9, n), status="done", flags="")
    df["error_months"] = df.predicted_bone_age_months - df.reference_bone_age_months
    return df


def test_validation_summary_exports_and_pooling_carry_the_clinical_view():
    import io
    import json
    import zipfile

    from kneeage import report, validation

    cases = _cases(1)
    summary = validation.analyse(cases, n_boot=200).as_dict()
    ok = cases[(cases.status == "done") & cases.reference_bone_age_months.notna()].reset_index(drop=True)
    assert summary["clinical"] == json.loads(json.dumps(growth.clinical_view(ok), default=float))
    out = report.validation_exports(cases, summary, {"site": "A", "cohort": "x"}, {})
    assert json.loads(out["summary.json"])["clinical"]["sds_agreement"]["kappa"] == summary["clinical"]["sds_agreement"]["kappa"]
    html = out["report.html"].decode()
    assert "Cohen&#x27;s kappa" in html and "Error over 12 months" in html and "differs by &gt; 1 cm" in html
    # the bundle's cases.csv reproduces the clinical view
    with zipfile.ZipFile(io.BytesIO(out["site_bundle.zip"])) as z:
        again = pd.read_csv(io.BytesIO(z.read("cases.csv")))
    assert growth.clinical_view(again)["knee_growth"] == summary["clinical"]["knee_growth"]
    pooled = validation.pool([(cases, {"site": "A"}), (_cases(2), {"site": "B"})], n_boot=200).as_dict()
    both = pd.concat([cases, _cases(2)], ignore_index=True)
    assert pooled["clinical"]["n"] == 80
    assert pooled["clinical"]["over"]["12"]["share"] == pytest.approx(
        float((both.predicted_bone_age_months - both.reference_bone_age_months).abs().gt(12).mean()))
    assert {"over_6", "over_12", "over_24", "kappa", "knee_over_1cm"} <= set(pooled["sites"][0])


# ------------------------------------------------------------------ single-case page and report


def test_single_case_growth_panel_apptest():
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.button(key="demo").click().run()
    assert not at.exception
    assert not [d for d in at.dataframe if "quantity" in d.value]
    at.toggle(key="growth_on").set_value(True).run()
    assert not at.exception
    assert any("Decision support, not a decision" in c.value for c in at.caption)
    at.number_input(key="growth_height").set_value(140.0)
    at.number_input(key="growth_femur").set_value(38.0)
    at.number_input(key="growth_lld").set_value(2.0).run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "quantity" in d.value)
    labels = list(table["quantity"])
    assert "Growth remaining at the knee (femur + tibia)" in labels and "Femur length at maturity" in labels
    assert "Limb-length discrepancy at maturity (congenital, proportional)" in labels
    assert (table["low"] <= table["value"]).all() and (table["value"] <= table["high"]).all()
    assert table["source"].str.len().gt(0).all()
    assert any("Paley" in s for s in table["source"]) and any("Birch" in s for s in table["source"])
    assert any("Ranges span the bone-age interval" in c.value for c in at.caption)


def test_report_growth_section():
    from kneeage import report

    g = growth.growth_panel(150, (140, 160), "F", chronological_age_months=150, height_cm=150, tibia_cm=33)
    h = report.growth_html(g)
    assert "Growth (decision support)" in h and "Decision support, not a decision" in h
    assert "Bayley &amp; Pinneau 1952" in h and "Predicted adult height" in h and "140.0 – 160.0 months" in h


# --------------------------------------------------------------------------- reader study


def test_reader_study_analysis_carries_the_clinical_view(tmp_path, monkeypatch):
    import io
    import json

    from kneeage import readerstudy as rs, report
    from kneeage.store import Store
    from tests.test_readerstudy import PROTOCOL, _answer_all

    monkeypatch.setenv("KNEEAGE_HOME", str(tmp_path))
    store = Store(tmp_path / "growth.db")
    sid = rs.setup_study(store, rs.Protocol.from_dict(PROTOCOL))
    rng = np.random.default_rng(2)
    for i in range(2):
        _answer_all(store, rs.authenticate(store, rs.invite(store, sid, f"Reader {i}")), rng)
    files = report.study_exports(store, sid)
    reads = pd.read_csv(io.BytesIO(files["reads.csv"]))
    analysis = json.loads(files["analysis.json"])
    first = reads[reads["repeat"] == 0]
    for r in analysis["readers"]:
        g = first[(first.reader_id == r["reader_id"]) & (first.arm == "unassisted")]
        again = json.loads(json.dumps(growth.clinical_view(g, predicted="estimate_months"), default=float))
        _close(r["unassisted"]["clinical"], again)  # reads.csv round-trips floats to the last digit only
    model = first.drop_duplicates("case_id")
    assert analysis["model"]["clinical"]["n"] == int(model.model_months.notna().sum())


def _close(a, b):
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12, nan_ok=True)
    else:
        assert a == b
