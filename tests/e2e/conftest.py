"""Real-browser fixtures: `streamlit run app.py` on a free loopback port, driven by Debian's Chromium
through Playwright (browsers cannot be downloaded here, so the system binary is used)."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.conftest import ROOT

expect.set_options(timeout=90_000)  # the first page view loads torch and the model; CI may be busy

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    port = _free_port()
    home = str(tmp_path_factory.mktemp("kneeage_home"))
    os.environ["KNEEAGE_E2E_HOME"] = home  # tests that prepare data for the server write here
    env = dict(os.environ, HF_HUB_OFFLINE="1", KNEEAGE_HOME=home)
    log = open(tmp_path_factory.mktemp("streamlit") / "server.log", "w")
    os.environ["KNEEAGE_E2E_LOG"] = log.name  # tests scan the server's log for identifying values
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail(f"streamlit did not start; see {log.name}")
    yield url
    proc.terminate()
    proc.wait(20)


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: apt-get install -y chromium (.ci/run does this).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_url):
    ctx = browser.new_context(viewport={"width": 1400, "height": 2300})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(app_url)
    yield pg
    ctx.close()


PI_PASSWORD = "end-to-end pi password"


@pytest.fixture(scope="session")
def pi_password(app_url):
    """The server's PI password, set directly in its study folder (first-run setup is tested in AppTest)."""
    from kneeage import access

    old = os.environ.get("KNEEAGE_HOME")
    os.environ["KNEEAGE_HOME"] = os.environ["KNEEAGE_E2E_HOME"]
    try:
        if not access.pi_configured():
            access.set_pi_password(PI_PASSWORD)
    finally:
        if old is None:
            os.environ.pop("KNEEAGE_HOME")
        else:
            os.environ["KNEEAGE_HOME"] = old
    return PI_PASSWORD


def sign_in(page, password):
    page.get_by_label("PI password").fill(password)
    page.get_by_role("button", name="Sign in").click()
