"""End to end in a real headless Chromium (issue #19): a predictions-only cohort (a CSV of prediction columns, no
images) through upload, dry run, recording, results and exports; the bundle says where the predictions came from."""

import io
import json
import zipfile

import pandas as pd
import pytest
from playwright.sync_api import expect

from kneeage import stats
from tests.e2e.conftest import sign_in
from tests.test_predictions import _manifest


def test_predictions_only_upload_results_and_exports(page, tmp_path, pi_password):
    (tmp_path / "hand_models.csv").write_bytes(_manifest(seed=4))
    page.get_by_role("link", name="External validation").click()
    expect(page.get_by_role("heading", name="External validation")).to_be_visible()
    sign_in(page, pi_password)
    page.get_by_text("No images: predictions made elsewhere").click()
    expect(page.get_by_text("Prediction columns: predicted_bone_age_months")).to_be_visible()
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Manifest CSV")
    uploader.locator('input[type="file"]').set_input_files(str(tmp_path / "hand_models.csv"))
    page.get_by_role("button", name="Check cohort (dry run)").click()
    record = page.get_by_role("button", name="Record 2 prediction column(s) of 30 cases")
    expect(record).to_be_visible()
    record.click()
    expect(page.get_by_test_id("stMetricLabel").filter(has_text="MAE (months)")).to_be_visible()
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download summary.json").click()
    summary = json.loads(open(dl.value.path()).read())
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download cases.csv").click()
    cases = pd.read_csv(dl.value.path())
    es = stats.error_summary(cases.predicted_bone_age_months, cases.reference_bone_age_months)
    assert summary["n"] == 30 and summary["mae"] == pytest.approx(es.mae)
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download site_bundle.zip").click()
    with zipfile.ZipFile(io.BytesIO(open(dl.value.path(), "rb").read())) as z:
        meta = json.loads(z.read("meta.json"))
    assert meta["prediction_source"].startswith("made elsewhere: column predicted_bone_age_months")
