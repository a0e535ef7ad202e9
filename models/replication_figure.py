"""Render the replication figure: MAE against true bone age by band, for the results of
``models/make_demo.sh`` (RESULTS.json). Uses the Chromium that the browser tests use.

    python models/replication_figure.py RESULTS.json docs/img/replication_by_age.png
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, when run as a script
from kneeage.plots import error_by_true_age  # noqa: E402

NAMES = {"main": "demo model (image + sex, hand-initialised)", "sex_scratch": "image + sex, from scratch",
         "sex_hand_init": "image + sex, hand-initialised (matched)", "image_only": "image only",
         "sex_chron": "image + sex + chronological age", "reference_labels": "trained on reference reads"}


def main(results_json: str, png: str) -> None:
    from playwright.sync_api import sync_playwright

    res = json.loads(Path(results_json).read_text())
    fig = error_by_true_age({NAMES.get(k, k): v for k, v in res.items() if isinstance(v, dict) and "by_true_bone_age" in v})
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        html = Path(tmp) / "figure.html"
        fig.write_html(html, include_plotlyjs=True, full_html=True, default_width=1100, default_height=520)
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page(viewport={"width": 1140, "height": 560})
        page.goto(html.as_uri())
        page.wait_for_selector(".main-svg")
        page.screenshot(path=png, full_page=True)
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
