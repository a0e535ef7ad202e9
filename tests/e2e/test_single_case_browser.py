"""End to end in a real headless Chromium: the single-case page."""

import os

from playwright.sync_api import expect

from kneeage.model import load_card
from kneeage.phantom import demo_case_dicom
from tests.conftest import ROOT


def test_upload_a_dicom_and_see_bone_age_and_overlay(page, tmp_path):
    name, data = demo_case_dicom(0)
    f = tmp_path / name
    f.write_bytes(data)
    expect(page.get_by_role("heading", name="Single case")).to_be_visible()
    page.locator('input[type="file"]').first.set_input_files(str(f))
    expect(page.get_by_test_id("stMetricLabel").filter(has_text="Bone age").first).to_be_visible()
    expect(page.get_by_text("synthetic demo model", exact=False).first).to_be_visible()
    expect(page.get_by_text("on the model input (fold 0)")).to_be_visible()
    value = page.get_by_test_id("stMetricValue").first.inner_text()
    assert value.endswith("mo") and " y " in value
    overlay = page.get_by_test_id("stImage").last.locator("img")
    expect(overlay).to_be_visible()
    assert overlay.evaluate("img => img.naturalWidth") == load_card(ROOT / "models" / "demo").config.input_size
    expect(page.get_by_text("Download report (HTML)")).to_be_visible()
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)  # the script run has finished
    shot = ROOT / "docs" / "img" / "single_case.png" if os.environ.get("KNEEAGE_SCREENSHOTS") else tmp_path / "s.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_upload_a_non_image_and_see_the_refusal(page, tmp_path):
    f = tmp_path / "letter.txt"
    f.write_text("Dear colleague, this is not a radiograph.")
    page.locator('input[type="file"]').first.set_input_files(str(f))
    expect(page.get_by_text("letter.txt: it is not an image file")).to_be_visible()


def test_a_damaged_dicom_is_refused_and_nothing_identifying_reaches_the_server_log(page, tmp_path):
    """Issue 14.11: pydicom's warning about the damaged element would print the raw header to the log."""
    from tests.test_privacy_and_crash import damaged_dicom, text_leaks

    f = tmp_path / "damaged.dcm"
    damaged_dicom(f)
    page.locator('input[type="file"]').first.set_input_files(str(f))
    expect(page.get_by_text("damaged.dcm: the DICOM object contains no image pixel data")).to_be_visible()
    log = open(os.environ["KNEEAGE_E2E_LOG"]).read()
    assert text_leaks(log) == [] and "Traceback" not in log
