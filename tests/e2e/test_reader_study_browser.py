"""End to end in a real headless Chromium: a reader signs in with Enter, reads three cases in a viewer that shows
the whole image at 1024×768 (zoom by wheel and keyboard, window/level by dragging), survives a reload, and sees no
PI page; the PI dashboard then shows the reads."""

import os

from playwright.sync_api import expect

from kneeage import readerstudy as rs
from kneeage.store import Store
from tests.conftest import ROOT
from tests.e2e.conftest import sign_in

PROTOCOL = {"name": "browser study", "seed": 3, "cases": {"sampling": "random", "n": 3},
            "arms": {"unassisted": True, "assisted": False}, "synthetic": {"n": 6, "seed": 8, "size": 384}}


def _viewer(page):
    frame = page.frame_locator("iframe").first
    body = frame.locator("body")
    expect(body).to_have_attribute("data-ready", "1")
    return frame, body


def test_reader_reads_three_cases_and_pi_sees_them(browser, app_url, pi_password):
    os.environ["KNEEAGE_HOME"] = os.environ["KNEEAGE_E2E_HOME"]  # the server's study folder
    try:
        store = Store()
        sid = rs.setup_study(store, rs.Protocol.from_dict(PROTOCOL))
        code = rs.invite(store, sid, "Dr Browser")
    finally:
        os.environ.pop("KNEEAGE_HOME")
    ctx = browser.new_context(viewport={"width": 1024, "height": 768}, color_scheme="dark")
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    page.goto(app_url)
    page.get_by_role("link", name="Reading room").click()
    page.get_by_label("Access code").fill(code.lower())  # case does not matter
    page.get_by_label("Access code").press("Enter")  # Enter submits the code
    expect(page.get_by_role("heading", name="Case 1 of 3")).to_be_visible()
    # a reader sees the reading room alone: no PI pages, no model name
    for name in ("External validation", "Pool sites", "Reader studies (PI)", "Single case"):
        expect(page.get_by_role("link", name=name)).to_have_count(0)
    expect(page.get_by_text("Model:", exact=False)).to_have_count(0)
    assert "session=" in page.url and code.split("-", 1)[1].lower() not in page.url.lower()  # a signed token, not the code

    for k in range(3):
        expect(page.get_by_role("heading", name=f"Case {k + 1} of 3")).to_be_visible()
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)  # the rerun is over: no stale inputs
        frame, body = _viewer(page)
        iframe = page.locator("iframe").first.bounding_box()
        assert iframe["y"] >= 0 and iframe["y"] + iframe["height"] <= 768  # the viewer fits the window …
        x, y, w, h, cw, ch = (int(v) for v in body.get_attribute("data-drawn").split(","))
        assert x >= 0 and y >= 0 and x + w <= cw + 1 and y + h <= ch + 1 and body.get_attribute("data-fit") == "1"  # … whole image
        assert page.evaluate("() => document.scrollingElement.scrollHeight") <= 768 + 2 or iframe["height"] >= 320
        if k == 0:
            if os.environ.get("KNEEAGE_SCREENSHOTS"):
                page.wait_for_timeout(500)
                page.screenshot(path=str(ROOT / "docs" / "img" / "reading_room.png"))
            wrap = frame.locator("#wrap")
            wrap.click()
            scale = float(body.get_attribute("data-scale"))
            wrap.press("+")  # keyboard zoom
            assert float(body.get_attribute("data-scale")) > scale and body.get_attribute("data-fit") == "0"
            wrap.press("0")
            assert body.get_attribute("data-fit") == "1"
            box = wrap.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.wheel(0, -400)  # wheel zoom
            expect(body).to_have_attribute("data-fit", "0")
            win = body.get_attribute("data-win")
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2 + 30, steps=5)
            page.mouse.up()  # window/level by dragging
            assert body.get_attribute("data-win") != win
            page.reload()  # the session survives a reload
            expect(page.get_by_role("heading", name="Case 1 of 3")).to_be_visible()
            expect(page.get_by_label("Access code")).to_have_count(0)
            query = page.url[page.url.index("?"):]
            page.goto(app_url + "/study_admin" + query)  # no PI page by address either
            expect(page.get_by_role("dialog").filter(has_text="Page not found")).to_be_visible()
            page.keyboard.press("Escape")
            expect(page.get_by_role("dialog")).to_have_count(0)
            page.goto(app_url + "/" + query)  # back at the reading room's own address
            expect(page.get_by_role("heading", name="Case 1 of 3")).to_be_visible()
            expect(page.get_by_label("PI password")).to_have_count(0)
        years = page.get_by_label("Bone age: years")
        expect(years).to_have_count(1)  # the last case's field is gone (a slow rerun draws the new one beside it) …
        expect(years).to_have_value("")  # … and this one is this case's own
        years.fill(str(8 + k))
        expect(years).to_have_value(str(8 + k))
        years.press("Enter")  # Enter submits the answer
    expect(page.get_by_text("All cases are read. Thank you!")).to_be_visible()
    ctx.close()

    pi = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
    pi.set_default_timeout(60_000)
    pi.goto(app_url)
    pi.get_by_role("link", name="Reader studies (PI)").click()
    sign_in(pi, pi_password)
    expect(pi.get_by_text("Analysis")).to_be_visible()
    st = Store(os.path.join(os.environ["KNEEAGE_E2E_HOME"], "kneeage.db"))
    assert sorted(st.reads(study_id=sid).estimate_months) == [96.0, 108.0, 120.0]
    grid = pi.get_by_test_id("stDataFrame").first
    expect(grid).to_be_visible()
    expect(pi.locator("td", has_text="Dr Browser").first).to_be_attached()  # grid cells draw on a canvas
    expect(pi.get_by_text("Inter-reader ICC: needs at least two readers")).to_be_visible()  # why it is missing
    if os.environ.get("KNEEAGE_SCREENSHOTS"):
        expect(pi.get_by_test_id("stStatusWidget")).to_have_count(0)
        pi.screenshot(path=str(ROOT / "docs" / "img" / "pi_dashboard.png"), full_page=True)
    expect(pi.get_by_text("Dr Browser (unassisted)").first).to_be_attached()  # the forest plot's row
