"""AppTest of the validation page (zip upload → dry run → run → results → exports) and the pooling page."""

import io
import json
import zipfile

import pytest
from streamlit.testing.v1 import AppTest

from kneeage.phantom import write_cohort
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def cohort_zip(tmp_path_factory):
    d = tmp_path_factory.mktemp("c")
    write_cohort(d, 12, seed=21, size=160)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.name != "truth.csv":
                z.write(p, "site_export/" + str(p.relative_to(d)))
    return buf.getvalue()


def _page(path):
    """The page after PI sign-in (first run: the password is set on the page itself)."""
    from kneeage import access

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    at.switch_page(path).run()
    assert not at.exception and not at.get("file_uploader")  # nothing before sign-in
    if access.pi_configured():
        at.text_input(key="pi_password").set_value("validation pi password")
        at.button(key="pi_login").click().run()
    else:
        at.text_input(key="pi_new").set_value("validation pi password")
        at.text_input(key="pi_again").set_value("validation pi password")
        at.button(key="pi_set").click().run()
    assert not at.exception
    return at


def test_validation_flow_and_bundles_pool(cohort_zip, tmp_path, monkeypatch):
    monkeypatch.setenv("KNEEAGE_HOME", str(tmp_path))
    at = _page("pages/validation.py")
    assert "No validation runs yet." in [i.value for i in at.info]
    at.text_input(key="site").set_value("Site North")
    at.file_uploader(key="zip").upload("cohort.zip", cohort_zip, "application/zip").run()
    at.button(key="check").click().run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Rows"] == "12" and metrics["Usable"] == "12" and metrics["Errors (excluded)"] == "0"
    at.button(key="run").click().run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Cases"] == "12 / 12" and float(metrics["MAE (months)"]) > 0
    assert any("Synthetic demo model" in e.value for e in at.error)
    assert len(at.get("plotly_chart")) >= 4 and len(at.get("image")) == 4  # figures and the saliency gallery
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == [f"Download {n}" for n in ("cases.csv", "summary.json", "report.html", "site_bundle.zip")]
    assert (tmp_path / "kneeage.db").exists() and not list(tmp_path.rglob("*.zip"))  # the upload is not stored
    # the stored run gives the same numbers and the bundle the site would download
    from kneeage import report, validation
    from kneeage.store import Store

    store = Store()
    cases, summary, meta = validation.results_for(store, store.runs().id[0])
    assert summary["n"] == 12 and f"{summary['mae']:.2f}" == metrics["MAE (months)"] and meta["site"] == "Site North"
    bundle = report.validation_exports(cases, summary, meta, {})["site_bundle.zip"]

    pool = _page("pages/pooling.py")
    other = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(bundle)) as src, zipfile.ZipFile(other, "w") as dst:
        for n in src.namelist():
            data = src.read(n)
            if n == "meta.json":
                data = json.dumps(json.loads(data) | {"site": "Site South"}).encode()
            dst.writestr(n, data)
    pool.file_uploader(key="bundles").upload("north.zip", bundle, "application/zip")
    pool.file_uploader(key="bundles").upload("south.zip", other.getvalue(), "application/zip").run()
    assert not pool.exception
    m = {x.label: x.value for x in pool.metric}
    assert m["Sites"] == "2" and m["Cases"] == "24"
    assert len(pool.get("plotly_chart")) == 2 and any("I²" in c.value for c in pool.caption)
