"""Validation and pooling results as in a paper (issue #18): CIs in words, tidy tables with units, plain
comparison sentences, coverage by band, HTML and PDF exports named with site, cohort and date."""

import re
from datetime import date

import numpy as np
import pandas as pd
import pytest

from kneeage import paper, plots, validation


def _cases(seed=0, n=40, bias=2.0):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(10, 200, n)
    pred = ref + rng.normal(bias, 8, n)
    return pd.DataFrame({"case_id": [f"s{seed}-{i}" for i in range(n)], "sex": rng.choice(["F", "M"], n),
                         "chronological_age_months": ref + rng.normal(0, 14, n), "reference_bone_age_months": ref,
                         "predicted_bone_age_months": pred, "interval_lower": pred - 15, "interval_upper": pred + 15,
                         "status": "done", "flags": "", "error": None, "reference_method": "", "reader": "",
                         "comparator_fels": ref + rng.normal(0, 8.5, n)})


@pytest.fixture(scope="module")
def summary():
    return validation.analyse(_cases(), n_boot=400).as_dict()


META = {"site": "St. Elsewhere Hospital", "cohort": "Knee cohort 2026", "model_name": "demo", "model_hash": "abc123",
        "synthetic_demo": True, "prediction_source": "kneeage model directory demo"}


def _tidy(df: pd.DataFrame):
    text = df.to_string()
    assert not re.search(r"\b(mae_lo|mae_hi|bias_lo|None|nan|NaN)\b", text)
    assert not re.search(r"\d\.\d{4,}", text)  # no 4-decimal floats
    assert all(df[c].map(lambda v: v is not None).all() for c in df.columns)


def test_tables_are_tidy_with_units_and_bands_in_order(summary):
    for df in (paper.agreement_table(summary), paper.strata_table(summary), paper.comparison_table(summary),
               paper.coverage_table(summary)):
        _tidy(df)
    strata = paper.strata_table(summary)
    assert list(strata.Group) == ["All cases", "Girls", "Boys", "Age 0-5 y", "Age 5-10 y", "Age 10-13 y", "Age 13-16 y",
                                  "Age 16+ y"][: len(strata)]
    assert "MAE (mo)" in strata.columns and "Bias 95% CI" in strata.columns
    # one CI per quantity: the all-cases row is the headline's
    assert strata.loc[0, "MAE (mo)"] == f"{summary['mae']:.2f}"
    assert strata.loc[0, "MAE 95% CI"] == f"{summary['mae_ci'][0]:.2f} to {summary['mae_ci'][1]:.2f}"
    heads = {h["label"]: h for h in paper.headline(summary)}
    assert heads["MAE (months)"]["ci"].startswith(f"95% CI {summary['mae_ci'][0]:.2f} to")  # on screen, not in a tooltip
    cov = paper.coverage_table(summary)
    assert cov.iloc[0, 0] == "All" and list(cov.iloc[1:, 0]) == sorted(cov.iloc[1:, 0], key=paper.BANDS.index)


def test_a_plain_sentence_per_comparison_says_who_is_better_and_whether_the_ci_excludes_zero():
    s = validation.analyse(_cases(seed=1, n=60), n_boot=400).as_dict()
    sentences = paper.comparison_sentences(s)
    assert len(sentences) == 2 and "chronological age" in sentences[0] and "fels" in sentences[1]
    for text, c in zip(sentences, s["comparisons"].values()):
        lo, hi = c["mae_difference_ci"]
        if lo > 0 or hi < 0:
            assert "CI excludes zero" in text and ("the model was better" in text) == (c["mae_difference"] < 0)
        else:
            assert "includes zero" in text and "neither was shown to be better" in text
    table = paper.comparison_table(s)
    assert set(table.Better) <= {"model", "chronological age", "fels", "no difference shown"}


def test_results_export_as_self_contained_html_and_as_pdf(summary):
    cases = _cases()
    figs = plots.validation_figures(cases, summary)
    page = paper.results_html(summary, META, figs)
    assert "<h2>Methods</h2>" in page and "abc123" in page and "BCa" in page and "Bland JM, Altman DG" in page
    assert page.count("<script") >= 1 and 'src="http' not in page  # plotly inlined; nothing fetched
    assert "Synthetic demo model" in page and "Table 2. By sex and age band" in page
    pdf = paper.results_pdf(summary, META, cases, "PARTIAL RUN: 3 of 40 cases have no result yet.")
    assert pdf.startswith(b"%PDF") and len(pdf) > 5000
    name = paper.export_name(META, "report.pdf", date(2026, 11, 28))
    assert name == "st-elsewhere-hospital_knee-cohort-2026_2026-11-28_report.pdf"


def test_report_html_is_the_results_section(summary):
    from kneeage import report

    out = report.validation_exports(_cases(), summary, META, {})
    html = out["report.html"].decode()
    assert "<h2>Results</h2>" in html and "Details" in html and out["report.pdf"].startswith(b"%PDF")


def test_pooled_headline_is_the_pooled_estimate_in_the_forest_plot():
    result = validation.pool([(_cases(2), {"site": "A"}), (_cases(3, bias=5), {"site": "B"}),
                              (_cases(4), {"site": "C"})], n_boot=300).as_dict()
    h = paper.pooled_headline(result)
    fig = plots.pooling_figure(result, "mae")
    diamond = [t for t in fig.data if t.name == "pooled"][0]
    assert h["random_effects"] == pytest.approx(diamond.x[0])  # the number stated first is the diamond below
    html = paper.pooled_html(result, {"mae_by_site": fig}, demo=True)
    assert "random effects" in html and "Table 1. Each site" in html and "<script" in html and "demonstration" in html
    _tidy(paper.sites_table(result))


def test_summary_json_has_one_ci_per_quantity():
    s = validation.analyse(_cases(seed=5), n_boot=900).as_dict()  # the strata use fewer resamples than the headline
    everyone = s["stratified"][0]
    assert everyone["stratum"] == "all" and [everyone["mae_lo"], everyone["mae_hi"]] == s["mae_ci"]
    assert [everyone["bias_lo"], everyone["bias_hi"]] == s["bias_ci"]


def test_cli_pool_writes_the_pooled_report(tmp_path):
    from click.testing import CliRunner

    from kneeage import report
    from kneeage.cli import main

    paths = []
    for seed, site in ((6, "North"), (7, "South")):
        cases = _cases(seed)
        summary = validation.analyse(cases, n_boot=200).as_dict()
        p = tmp_path / f"{site}.zip"
        p.write_bytes(report.validation_exports(cases, summary, META | {"site": site}, {})["site_bundle.zip"])
        paths.append(str(p))
    r = CliRunner().invoke(main, ["pool", *paths, "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Pooled external validation: 2 sites" in page and page.count("Figure ") == 2
    r = CliRunner().invoke(main, ["pool", paths[0], "--out", str(tmp_path / "one")])
    assert r.exit_code != 0 and "at least two" in r.output  # one bundle is refused with the reason
