"""End to end in a real headless Chromium: the single-case page."""

import os
import re

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
    assert re.fullmatch(r"\d+ y \d+ mo \(\d+ mo\)", value)  # years and months, months in brackets
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


def test_a_chest_film_is_refused_unless_overridden(page):
    """Issue #18: a chest film gets no number, only the refusal; an override shows it marked as overridden."""
    from pydicom.data import get_testdata_file

    page.locator('input[type="file"]').first.set_input_files(get_testdata_file("RG1_UNCI.dcm"))
    page.get_by_text("Female", exact=True).click()  # the film's header gives no sex
    expect(page.get_by_text("No bone age: this does not look like a knee radiograph")).to_be_visible()
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    expect(page.get_by_test_id("stMetric").filter(has_text="Bone age")).to_have_count(0)  # no number
    expect(page.get_by_text("95% interval:", exact=True)).to_have_count(0)
    page.get_by_text("Show the model's number anyway").click()
    expect(page.get_by_test_id("stMetricValue").filter(has_text="OVERRIDDEN").first).to_be_visible()


def _demo(pg):
    pg.get_by_role("button", name="Try a demo case").click()
    expect(pg.get_by_test_id("stMetricLabel").filter(has_text="Bone age").first).to_be_visible()
    expect(pg.get_by_test_id("stStatusWidget")).to_have_count(0)


def test_result_above_the_fold_at_1400x1000_nothing_overflows_at_390_px_no_white_frames(browser, app_url):
    """Issue #18: the result is visible without scrolling at 1400×1000; a 390-px phone scrolls nothing sideways;
    in the dark theme the images have no light frame (the film's collimation is shown black, plots transparent)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme="dark")
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(app_url)
    _demo(pg)
    box = pg.get_by_test_id("stMetric").filter(has_text="Bone age").first.bounding_box()
    assert box["y"] + box["height"] <= 1000
    interval = pg.get_by_text("95% interval:", exact=True).bounding_box()
    assert interval["y"] + interval["height"] <= 1000
    pg.get_by_text("Knee region and where the model looked").scroll_into_view_if_needed()
    pg.wait_for_timeout(1500)
    crop = pg.locator(".stPlotlyChart").first
    shot = crop.screenshot()
    from io import BytesIO

    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(BytesIO(shot)).convert("L"), float)
    edge = np.concatenate([img[:4].ravel(), img[-4:].ravel(), img[:, :4].ravel(), img[:, -4:].ravel()])
    assert (edge > 200).mean() < 0.05  # no white frame around the radiograph
    ctx.close()
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, color_scheme="dark")
    pg = phone.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(app_url)
    _demo(pg)
    wide = pg.evaluate("""() => [...document.querySelectorAll('[data-testid="stMain"] *')]
        .filter(e => e.getBoundingClientRect().width > 0 && e.getBoundingClientRect().right > window.innerWidth + 1)
        .map(e => e.getAttribute('data-testid') || e.tagName).slice(0, 5)""")
    assert wide == []  # nothing sticks out to the right
    assert pg.evaluate("() => document.documentElement.scrollWidth") <= 390
    phone.close()
