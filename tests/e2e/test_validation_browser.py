"""End to end in a real headless Chromium: a small synthetic cohort through upload, dry run, run,
results and export (the downloaded summary equals kneeage.stats on the downloaded per-case CSV)."""

import json
import os
import re
import zipfile

import pandas as pd
import pytest
from playwright.sync_api import expect

from kneeage import stats
from kneeage.phantom import write_cohort
from tests.conftest import ROOT
from tests.e2e.conftest import sign_in


def test_cohort_upload_run_results_export(page, tmp_path, pi_password):
    d = tmp_path / "cohort"
    write_cohort(d, 10, seed=31, size=160)
    zpath = tmp_path / "cohort.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.name != "truth.csv":
                z.write(p, str(p.relative_to(d)))
    page.get_by_role("link", name="External validation").click()
    expect(page.get_by_role("heading", name="External validation")).to_be_visible()
    sign_in(page, pi_password)
    page.get_by_label("Site").fill("Browser Site")
    page.get_by_label("Site").press("Enter")
    page.locator('input[type="file"]').first.set_input_files(str(zpath))
    page.get_by_role("button", name="Check cohort (dry run)").click()
    run = page.get_by_role("button", name="Run the model on 10 cases")
    expect(run).to_be_visible()
    # a stale dry run is cleared: another manifest replaces the zip's, and the Run button goes with the old check
    m = pd.read_csv(d / "manifest.csv").head(4)
    (tmp_path / "four.csv").write_text(m.to_csv(index=False))
    page.locator('input[type="file"]').nth(1).set_input_files(str(tmp_path / "four.csv"))
    expect(page.get_by_text("changed since the dry run")).to_be_visible()
    expect(page.get_by_role("button", name="Run the model on 10 cases")).to_have_count(0)
    page.get_by_role("button", name="Remove four.csv").click()  # back to the zip's own manifest
    page.get_by_role("button", name="Check cohort (dry run)").click()
    run = page.get_by_role("button", name="Run the model on 10 cases")
    expect(run).to_be_visible()
    run.click()
    # earlier tests' runs are on the page too: the run just made is the one shown
    cases_shown = page.get_by_test_id("stMetric").filter(has_text="Cases").get_by_test_id("stMetricValue")
    expect(cases_shown).to_have_text("10 / 10", timeout=120_000)
    shown = page.get_by_role("combobox", name="Run", exact=True)
    expect(shown).to_have_value(re.compile(r"^Browser Site · knee cohort · "))  # the run just made is the one shown
    expect(page.get_by_test_id("stMetricLabel").filter(has_text="MAE (months)")).to_be_visible()
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=120_000)  # the rerun has finished
    expect(page.get_by_text("95% CI ", exact=False).first).to_be_visible()  # CIs on screen
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download report.pdf").click()
    assert re.fullmatch(r"browser-site_knee-cohort_\d{4}-\d{2}-\d{2}_report\.pdf", dl.value.suggested_filename)
    assert open(dl.value.path(), "rb").read(4) == b"%PDF"
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download summary.json").click()
    summary = json.loads(open(dl.value.path()).read())
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download cases.csv").click()
    cases = pd.read_csv(dl.value.path())
    es = stats.error_summary(cases.predicted_bone_age_months, cases.reference_bone_age_months)
    assert summary["n"] == 10 and summary["mae"] == pytest.approx(es.mae) and summary["mae_ci"] == pytest.approx(list(es.mae_ci))
    if os.environ.get("KNEEAGE_SCREENSHOTS"):
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
        page.get_by_role("heading", name="3 · Results").evaluate("h => h.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ROOT / "docs" / "img" / "validation.png"), full_page=True)
    shown = page.get_by_test_id("stMetric").filter(has_text="MAE (months)").get_by_test_id("stMetricValue").inner_text()
    assert shown == f"{es.mae:.2f}"
