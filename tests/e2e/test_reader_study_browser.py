"""End to end in a real headless Chromium: a reader enters a code, reads three cases; the PI dashboard
then shows them."""

import os

from playwright.sync_api import expect

from kneeage import readerstudy as rs
from kneeage.store import Store
from tests.conftest import ROOT
from tests.e2e.conftest import sign_in

PROTOCOL = {"name": "browser study", "seed": 3, "cases": {"sampling": "random", "n": 3},
            "arms": {"unassisted": True, "assisted": False}, "synthetic": {"n": 6, "seed": 8, "size": 160}}


def test_reader_reads_three_cases_and_pi_sees_them(page, app_url, browser, pi_password):
    os.environ["KNEEAGE_HOME"] = os.environ["KNEEAGE_E2E_HOME"]  # the server's study folder
    try:
        store = Store()
        sid = rs.setup_study(store, rs.Protocol.from_dict(PROTOCOL))
        code = rs.invite(store, sid, "Dr Browser")
    finally:
        os.environ.pop("KNEEAGE_HOME")
    page.get_by_role("link", name="Reading room").click()
    page.get_by_label("Access code").fill(code)
    page.get_by_role("button", name="Enter").click()
    for k in range(3):
        expect(page.get_by_role("heading", name=f"Case {k + 1} of 3")).to_be_visible()
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)  # the rerun is over: no stale inputs
        expect(page.get_by_label("Bone age: years")).to_have_count(1)
        expect(page.locator("g.imagelayer image").first).to_be_attached()  # the radiograph is drawn
        if k == 0 and os.environ.get("KNEEAGE_SCREENSHOTS"):
            page.screenshot(path=str(ROOT / "docs" / "img" / "reading_room.png"))
        page.get_by_label("Bone age: years").fill(str(8 + k))
        page.get_by_label("Bone age: years").press("Enter")
        page.get_by_role("button", name="Submit and next").click()
    expect(page.get_by_text("All cases are read. Thank you!")).to_be_visible()

    pi = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
    pi.set_default_timeout(60_000)
    pi.goto(app_url)
    pi.get_by_role("link", name="Reader studies (PI)").click()
    sign_in(pi, pi_password)
    expect(pi.get_by_text("Analysis")).to_be_visible()
    st = Store(os.path.join(os.environ["KNEEAGE_E2E_HOME"], "kneeage.db"))
    assert len(st.reads(study_id=sid)) == 3
    grid = pi.get_by_test_id("stDataFrame").first
    expect(grid).to_be_visible()
    expect(pi.locator("td", has_text="Dr Browser").first).to_be_attached()  # grid cells draw on a canvas
    if os.environ.get("KNEEAGE_SCREENSHOTS"):
        expect(pi.get_by_test_id("stStatusWidget")).to_have_count(0)
        pi.screenshot(path=str(ROOT / "docs" / "img" / "pi_dashboard.png"), full_page=True)
    expect(pi.get_by_text("Dr Browser (unassisted)").first).to_be_attached()  # the forest plot's row
