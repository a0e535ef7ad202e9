"""Predictions made elsewhere (issue #19): a cohort of prediction columns and no images runs the whole validation
analysis (summary, comparators, exports, bundle, pooling) and the pairwise model comparison; CLI included."""

import html
import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from kneeage import compare, predictions, report, stats, validation
from kneeage.cli import main
from kneeage.errors import InputError
from kneeage.store import Store


def _manifest(n=30, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    ref = rng.uniform(20, 200, n)
    df = pd.DataFrame({"case_id": [f"C{i}" for i in range(n)], "sex": rng.choice(["F", "M"], n),
                       "chronological_age_months": (ref + rng.normal(0, 12, n)).round(1),
                       "reference_bone_age_months": ref.round(1),
                       "predicted_bone_age_months": (ref + rng.normal(0, 6, n)).round(1),
                       "bonexpert_bone_age_years": ((ref + rng.normal(1, 8, n)) / 12).round(3)})
    df.loc[3, "bonexpert_bone_age_years"] = np.nan
    return df.to_csv(index=False).encode()


def test_a_predictions_cohort_is_checked_without_images():
    check = predictions.check_predictions(_manifest(), "hand_models.csv")
    assert check.summary["usable"] == 30 and check.summary["predictions"] == {
        "predicted": "predicted_bone_age_months", "bonexpert": "bonexpert_bone_age_years"}
    assert [(p.row, p.severity, p.problem) for p in check.problems.itertuples()] == [
        (5, "warning", "no prediction in column bonexpert_bone_age_years")]
    assert check.cases.comparator_bonexpert.iloc[0] == pytest.approx(
        pd.read_csv(io.BytesIO(_manifest())).bonexpert_bone_age_years[0] * 12)
    with pytest.raises(InputError, match="hand.csv: no prediction column; name it predicted_bone_age_months"):
        predictions.check_predictions(b"case_id,sex,reference_bone_age_months\nA,F,100\n", "hand.csv")


def test_each_prediction_column_is_validated_like_a_model(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    check = predictions.check_predictions(_manifest(), "hand_models.csv")
    cid, runs = predictions.ingest(store, check, "hand models", "Site A", "hand_models.csv")
    assert predictions.ingest(store, check, "hand models", "Site A", "hand_models.csv") == (cid, runs)  # idempotent
    raw = pd.read_csv(io.BytesIO(_manifest()))
    for rid, col, n in zip(runs, ("predicted_bone_age_months", "bonexpert_bone_age_years"), (30, 29)):
        cases, result, meta = validation.results_for(store, rid, n_boot=300)
        summary = result.as_dict()
        expected = raw[col] * (12 if col.endswith("years") else 1)
        assert cases.predicted_bone_age_months.to_numpy() == pytest.approx(expected.to_numpy(), nan_ok=True)
        es = stats.error_summary(cases.predicted_bone_age_months[cases.status == "done"],
                                 cases.reference_bone_age_months[cases.status == "done"], n_boot=300)
        assert summary["n"] == n and summary["mae"] == pytest.approx(es.mae) and summary["stratified"]
        assert meta["prediction_source"].startswith(f"made elsewhere: column {col}")
        own = "comparator_" + col.split("_bone_age")[0]
        assert own not in cases and len([c for c in cases if c.startswith("comparator_")]) == 1  # the other column
        assert len(summary["comparisons"]) == 2  # chronological age and the other method
        files = report.validation_exports(cases, summary, meta, {})
        with zipfile.ZipFile(io.BytesIO(files["site_bundle.zip"])) as z:
            assert json.loads(z.read("meta.json"))["prediction_source"] == meta["prediction_source"]
        assert html.escape(meta["prediction_source"]) in files["report.html"].decode()
    # two sites' bundles of the same method pool
    other = Store(tmp_path / "b.sqlite")
    _, runs_b = predictions.ingest(other, predictions.check_predictions(_manifest(seed=1)), "hand models", "Site B")
    def bundle(s, r):
        cases, result, meta = validation.results_for(s, r, n_boot=200)
        return validation.read_bundle(report.validation_exports(cases, result.as_dict(), meta, {})["site_bundle.zip"])

    bundles = [bundle(s, r) for s, r in ((store, runs[1]), (other, runs_b[1]))]
    pooled = validation.pool(bundles, n_boot=200).as_dict()
    assert pooled["n_sites"] == 2 and pooled["same_model"] and pooled["pooled"]["n"] == 29 + 30 - int(
        pd.read_csv(io.BytesIO(_manifest(seed=1))).bonexpert_bone_age_years.isna().sum())
    # and the two methods compare pairwise
    cmp = compare.compare_models(store, runs, n_boot=300)
    row = cmp.table.iloc[0]
    a, b = (validation.case_table(store, r).set_index("case_id").predicted_bone_age_months for r in runs)
    ref = validation.case_table(store, runs[0]).set_index("case_id").reference_bone_age_months
    keep = b.notna()
    c = stats.compare_errors(a[keep], b[keep], ref[keep], n_boot=300)
    ba = stats.bland_altman(a[keep], b[keep])
    assert row.n == 29 and row.mae_difference == pytest.approx(c.mae_difference)
    assert (row.mae_difference_lower, row.mae_difference_upper) == pytest.approx(c.mae_difference_ci)
    assert row.bias_a_minus_b == pytest.approx(ba.bias) and row.loa_upper == pytest.approx(ba.loa_upper)
    assert 0 < row.class_agreement <= 1 and -1 <= row.kappa <= 1
    assert {"comparison.csv", "comparison.json", "comparison.html"} == set(compare.exports(cmp))


def test_cli_validate_predictions(tmp_path):
    (tmp_path / "m.csv").write_bytes(_manifest())
    r = CliRunner().invoke(main, ["validate", "--manifest", str(tmp_path / "m.csv"), "--predictions", "--out",
                                  str(tmp_path / "out"), "--db", str(tmp_path / "db.sqlite"), "--site", "S"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert [x["n"] for x in lines[:2]] == [30, 29] and lines[2]["compare"].startswith("predictions (column predicted")
    assert (tmp_path / "out" / "comparison.csv").exists() and len(list((tmp_path / "out").rglob("site_bundle.zip"))) == 2
    r = CliRunner().invoke(main, ["validate", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "give --images (to run models) or --predictions" in r.output
