"""AppTest of the validation page (zip upload → dry run → run → results → exports) and the pooling page."""

import io
import json
import zipfile

import pytest
from streamlit.testing.v1 import AppTest

from kneeage.phantom import write_cohort
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("tiny_model")  # the workflow, not the model: a tiny one (conftest)


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
    """The page after PI sign-in."""
    from kneeage import access

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    at.switch_page(path).run()
    assert not at.exception and not at.get("file_uploader")  # nothing before sign-in
    if not access.pi_configured():
        access.set_pi_password("validation pi password")  # on the server, as `python -m kneeage pi-password` does
        at.run()
    at.text_input(key="pi_password").set_value("validation pi password")
    at.button(key="pi_login").click().run()
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
    assert len(at.get("plotly_chart")) >= 4 and len(at.get("image")) == 8  # figures; the gallery: framing and saliency
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == [f"Download {n}" for n in ("cases.csv", "summary.json", "report.html", "report.pdf", "site_bundle.zip")]
    assert any(c.value.startswith("95% CI ") for c in at.caption)  # CIs on screen, not only in tooltips
    assert any("chronological age" in md.value and "zero" in md.value for md in at.markdown)  # the plain comparison
    assert (tmp_path / "kneeage.db").exists() and not list(tmp_path.rglob("*.zip"))  # the upload is not stored
    # the stored run gives the same numbers and the bundle the site would download
    from kneeage import report, validation
    from kneeage.store import Store

    store = Store()
    cases, result, meta = validation.results_for(store, store.runs().id[0])
    summary = result.as_dict()
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
    assert len(pool.get("plotly_chart")) == 2 and any("I²" in md.value for md in pool.markdown)
    pooled = validation.pool([validation.read_bundle(bundle), validation.read_bundle(other.getvalue())]).as_dict()
    assert m["Pooled MAE (months, random effects)"] == f"{pooled['mae_heterogeneity']['random']:.2f}"  # = the diamond
    labels = [b.proto.label for b in pool.get("download_button")]
    assert labels == ["Download pooled report (HTML)", "Download pooled.json"]
    one = _page("pages/pooling.py")
    one.file_uploader(key="bundles").upload("north.zip", bundle, "application/zip").run()
    assert any("Only one bundle (north.zip)" in e.value and "at least two sites" in e.value for e in one.error)


def _zip(d, skip=()):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.name not in ("truth.csv", *skip):
                z.write(p, str(p.relative_to(d)))
    return buf.getvalue()


def test_new_run_is_shown_stale_dry_run_cleared_partial_run_marked(cohort_zip, tmp_path, monkeypatch):
    """Issue 14.3 and 14.4: after a run the results show that run (not an older one), a changed manifest
    clears the dry run and its Run button, and an interrupted run is marked partial with no bundle."""
    import pandas as pd

    from kneeage import validation
    from kneeage.cohort import FolderSource, check_cohort, read_manifest
    from kneeage.predict import Predictor
    from kneeage.store import Store

    monkeypatch.setenv("KNEEAGE_HOME", str(tmp_path))
    older = tmp_path / "older"
    write_cohort(older, 6, seed=31, size=160)
    store, pred = Store(), Predictor()
    check = check_cohort(read_manifest(older / "manifest.csv"), FolderSource(older))
    cid = validation.ingest(store, check, "older cohort", "Site Old", FolderSource(older))
    partial = store.run_for(cid, pred.card.name, pred.hash, str(pred.model_dir), True)  # interrupted after 4 cases
    store.save_results(partial, [{"case_id": c, "status": "done", "predicted_bone_age_months": 100.0}
                                 for c in check.cases.case_id[:4]])

    at = _page("pages/validation.py")
    assert any("PARTIAL RUN: 2 of 6 cases" in e.value for e in at.error)
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download site_bundle.zip" not in labels and "Download report.html" in labels
    at.checkbox(key="partial_bundle").check().run()
    assert "Download site_bundle.zip" in [b.proto.label for b in at.get("download_button")]

    at.text_input(key="site").set_value("Site New")
    at.file_uploader(key="zip").upload("cohort.zip", cohort_zip, "application/zip").run()
    at.button(key="check").click().run()
    at.button(key="run").click().run()
    assert not at.exception
    new_run = at.selectbox(key="run_pick").value
    assert new_run != partial and not any("PARTIAL RUN" in e.value for e in at.error)
    exported = {b.proto.label: b for b in at.get("download_button")}
    assert "Download site_bundle.zip" in exported
    cases = validation.case_table(Store(), new_run)
    assert store.cohort(store.run(new_run)["cohort_id"])["site"] == "Site New" and len(cases) == 12

    # a manifest without a sex column replaces the one inside the zip: the old dry run must go
    at.button(key="check").click().run()
    assert at.button(key="run")
    m = pd.read_csv(io.BytesIO(zipfile.ZipFile(io.BytesIO(cohort_zip)).read("site_export/manifest.csv")))
    at.file_uploader(key="manifest").upload("nosex.csv", m.drop(columns="sex").to_csv(index=False).encode(), "text/csv").run()
    assert not at.exception
    assert any("changed since the dry run" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "run"] and not [x for x in at.metric if x.label == "Usable"]
    at.button(key="check").click().run()  # one message about the header, not one per row
    assert [e.value for e in at.error if "sex" in e.value] == [
        "nosex.csv: the header has no 'sex' column (columns: " + ", ".join(c for c in m.columns if c != "sex")
        + "); add it and check again."]
    assert not [x for x in at.metric if x.label == "Usable"]  # no dry run with a row per case


def test_a_cohort_zip_dropped_on_pooling_is_named_not_dumped(cohort_zip, tmp_path, monkeypatch):
    """Issue 14.5: the error names the file in one short sentence; the zip's bytes never reach the page."""
    monkeypatch.setenv("KNEEAGE_HOME", str(tmp_path))
    pool = _page("pages/pooling.py")
    pool.file_uploader(key="bundles").upload("cohort.zip", cohort_zip, "application/zip")
    pool.file_uploader(key="bundles").upload("junk.zip", b"PK\x03\x04 not really a zip", "application/zip").run()
    assert not pool.exception
    errors = [e.value for e in pool.error]
    assert "cohort.zip: not a kneeage site bundle (it has no cases.csv)." in errors
    assert any(e.startswith("junk.zip: not a kneeage site bundle") for e in errors)
    assert all(len(e) < 300 for e in errors)


def test_dry_run_messages_manifests_and_the_reader_study_demo_cohort(tmp_path, monkeypatch):
    """Issue #18: a folder's manifest.csv is used; a zip without one says so; a cohort without reference bone ages
    blocks the run unless the site asks for predictions only; a reader-study demo cohort is not a validation run."""
    import pandas as pd

    from kneeage import readerstudy as rs
    from kneeage.store import Store

    monkeypatch.setenv("KNEEAGE_HOME", str(tmp_path))
    folder = tmp_path / "folder_cohort"
    write_cohort(folder, 6, seed=41, size=160)
    sid = rs.setup_study(Store(), rs.Protocol.from_dict({"name": "demo", "arms": {"assisted": True},
                                                         "synthetic": {"n": 4, "seed": 3, "size": 128}}))
    assert Store().study(sid)["run_id"]  # the assisted arm ran the model on the demo cohort
    at = _page("pages/validation.py")
    assert "No validation runs yet." in [i.value for i in at.info]  # the study's run is not a validation run

    at.radio(key="source_kind").set_value("Folder on this server").run()
    at.text_input(key="folder").set_value(str(folder)).run()
    assert not any("has no manifest.csv" in i.value for i in at.info)
    at.button(key="check").click().run()  # the folder's own manifest.csv
    assert {m.label: m.value for m in at.metric}["Rows"] == "6"

    bare = io.BytesIO()
    with zipfile.ZipFile(bare, "w") as z:
        z.write(folder / "images" / sorted(p.name for p in (folder / "images").iterdir())[0], "images/a.dcm")
    at.radio(key="source_kind").set_value("Zip upload (images, optionally with manifest.csv inside)").run()
    at.file_uploader(key="zip").upload("bare.zip", bare.getvalue(), "application/zip").run()
    assert any("The zip has no manifest.csv" in i.value for i in at.info)

    at.radio(key="source_kind").set_value("Folder on this server").run()
    no_ref = pd.read_csv(folder / "manifest.csv").drop(columns="reference_bone_age_months")
    at.file_uploader(key="manifest").upload("noref.csv", no_ref.to_csv(index=False).encode(), "text/csv").run()
    at.button(key="check").click().run()
    assert any("gives no reference bone age" in w.value for w in at.warning)
    assert not [b for b in at.button if b.key == "run"]  # blocked …
    at.checkbox(key="no_reference").check().run()
    assert [b for b in at.button if b.key == "run"]  # … unless the site asks for predictions only
