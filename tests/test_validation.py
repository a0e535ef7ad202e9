"""Validation: every manifest problem with its message, crash + resume in a real subprocess, exports
equal to kneeage.stats on the per-case CSV, site bundles and pooling."""

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pandas as pd
import pytest

from kneeage import stats, validation
from kneeage.cohort import FolderSource, ZipSource, check_cohort, manifest_in, read_manifest
from kneeage.errors import InputError
from kneeage.phantom import render_hand, write_cohort, write_dicom
from kneeage.predict import REFUSALS, Predictor
from kneeage.store import Store
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("cohort")
    write_cohort(d, 24, seed=11, size=160)
    return d


@pytest.fixture(scope="module")
def predictor():
    return Predictor()


def _problems(check):
    return {(p.row, p.severity, p.problem) for p in check.problems.itertuples()}


def test_every_manifest_problem_is_reported_with_row_and_reason(cohort):
    m = pd.read_csv(cohort / "manifest.csv", dtype=str, keep_default_na=False)
    m.loc[1, "case_id"] = m.loc[0, "case_id"]                       # duplicate id
    m.loc[2, "image"] = "images/missing.dcm"                         # missing file
    m.loc[3, "sex"] = "X"                                            # bad sex
    m.loc[4, "chronological_age_months"] = "300"                     # age out of range
    m.loc[5, "reference_bone_age_months"] = "abc"                    # not a number
    m.loc[6, "reference_bone_age_months"] = ""                       # missing reference (warning)
    m.loc[7, "image"] = m.loc[8, "image"]                            # same file twice → duplicate image
    (cohort / "images" / "broken.dcm").write_bytes(b"DICM" * 10)
    m.loc[9, "image"] = "images/broken.dcm"                          # unreadable
    ph = render_hand(100, "F", 1, 160)
    from datetime import date
    write_dicom(cohort / "images" / "hand.dcm", ph.stored, ph.truth, birth=date(2010, 1, 1), study=date(2018, 1, 1),
                patient_id="H", body_part="HAND")
    m.loc[10, "image"] = "images/hand.dcm"                           # not a knee (warning)
    m.loc[11, "image"] = "../../etc/passwd"                          # traversal
    m.loc[12, "sex"] = ""                                            # missing sex
    m["crop_box"] = ""
    m.loc[13, "crop_box"] = "1,2,3"                                  # bad crop box
    csv = m.to_csv(index=False).encode()
    check = check_cohort(read_manifest(csv), FolderSource(cohort))
    got = _problems(check)
    first = m.loc[0, "case_id"]
    expected = {
        (3, "error", f"case id {first!r} repeats row 2"),
        (4, "error", "image file 'images/missing.dcm' is not in " + str(cohort.resolve())),
        (5, "error", "sex 'X' is not F or M"),
        (6, "error", "chronological age 300.0 months is outside 0-240 months"),
        (7, "error", "reference bone age 'abc' is not a number"),
        (8, "warning", "reference bone age is missing"),
        (10, "error", "the image is identical to row 9's"),
        (12, "warning", "the DICOM header says body part 'HAND', not a knee"),
        (13, "error", "image file '../../etc/passwd' is refused: its path leaves the images folder"),
        (14, "error", "sex is missing"),
        (15, "error", "Crop box '1,2,3' is not four numbers x0,y0,x1,y1"),
    }
    assert expected <= got
    unreadable = [p for p in got if p[0] == 11]
    assert unreadable == [(11, "error", "unreadable: images/broken.dcm: it is not an image file (neither DICOM nor PNG, JPEG or TIFF)")]
    assert check.summary["rows"] == 24 and check.summary["usable"] == 24 - 10
    assert set(check.cases.row).isdisjoint({3, 4, 5, 6, 7, 10, 11, 13, 14, 15})
    assert "images/missing.dcm" not in set(check.cases.image)


def test_units_dates_and_identifying_columns(cohort):
    m = pd.read_csv(cohort / "manifest.csv").head(6)
    years = pd.DataFrame({"ID": m.case_id, "File": m.image, "Gender": ["female", "Male", "F", "m", "girl", "boy"],
                          "Age": (m.chronological_age_months / 12).round(3), "Bone age": (m.reference_bone_age_months / 12).round(3),
                          "Patient Name": "DOE^JANE", "MRN": "12345", "fels_bone_age_years": 5.0})
    check = check_cohort(read_manifest(years.to_csv(index=False, sep=";").encode("utf-16")), FolderSource(cohort))
    assert check.errors.empty
    assert list(check.cases.sex) == ["F", "M", "F", "M", "F", "M"]
    assert np.allclose(check.cases.chronological_age_months, m.chronological_age_months, atol=0.01)
    assert np.allclose(check.cases.comparator_fels, 60)
    said = " ".join(check.assumptions)
    assert "read as years because the largest value is" in said and "identifying columns dropped" in said
    assert not any("DOE" in str(v) or "12345" in str(v) for v in check.cases.to_numpy().ravel())
    dated = pd.DataFrame({"case_id": ["a"], "image": [m.image[0]], "sex": ["F"], "birth_date": ["2010-01-15"],
                          "study_date": ["2020-07-15"], "reference_bone_age_months": [120]})
    c = check_cohort(read_manifest(dated.to_csv(index=False).encode()), FolderSource(cohort))
    assert c.cases.chronological_age_months[0] == pytest.approx(126, abs=0.1)
    assert "birth_date" not in c.cases and "study_date" not in c.cases
    with pytest.raises(InputError, match="manifest.csv: the header has no 'image' column"):
        read_manifest(b"case_id,sex\n1,F\n")


def test_refusal_reasons_reach_the_dry_run(cohort, tmp_path, monkeypatch):
    """Issue 14.7: traversal, absolute paths, links out of the folder, FIFOs, oversized files and refused zip
    members are each reported with their own reason, not as 'not in the folder'."""
    d = tmp_path / "imgs"
    d.mkdir()
    first = sorted((cohort / "images").iterdir())[0]
    (d / "ok.dcm").write_bytes(first.read_bytes())
    (tmp_path / "outside.dcm").write_bytes(first.read_bytes())
    (d / "out.dcm").symlink_to(tmp_path / "outside.dcm")
    os.mkfifo(d / "pipe.dcm")
    (d / "big.dcm").write_bytes(b"\0" * 3 * 2**20)
    monkeypatch.setenv("KNEEAGE_MAX_MEMBER_MB", "2")
    names = ["ok.dcm", "../outside.dcm", "/etc/passwd", "out.dcm", "pipe.dcm", "big.dcm", "gone.dcm"]
    m = pd.DataFrame({"case_id": [f"c{i}" for i in range(len(names))], "image": names, "sex": "F",
                      "chronological_age_months": 100, "reference_bone_age_months": 100})
    check = check_cohort(read_manifest(m.to_csv(index=False).encode()), FolderSource(d))
    got = {p.row: p.problem for p in check.problems.itertuples() if p.severity == "error"}
    assert got[3] == "image file '../outside.dcm' is refused: its path leaves the images folder"
    assert got[4] == "image file '/etc/passwd' is refused: its path leaves the images folder"
    assert got[5] == "image file 'out.dcm' is refused: its path leaves the images folder (through a link)"
    assert got[6] == "image file 'pipe.dcm' is refused: it is not a regular file (a folder, pipe or device)"
    assert got[7].startswith("image file 'big.dcm' is refused: it unpacks to 3 MB") and "KNEEAGE_MAX_MEMBER_MB" in got[7]
    assert got[8] == f"image file 'gone.dcm' is not in {d.resolve()}"
    assert 2 not in got and check.summary["usable"] == 1
    # the same reasons from a zip
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("site/manifest.csv", m.to_csv(index=False))
        z.write(first, "site/ok.dcm")
        z.writestr("site/big.dcm", b"\0" * 3 * 2**20, compress_type=zipfile.ZIP_STORED)
        link = zipfile.ZipInfo("site/out.dcm")
        link.external_attr = 0o120777 << 16
        z.writestr(link, "../../outside.dcm")
    src = ZipSource(buf.getvalue(), "site.zip")
    manifest, inside = manifest_in(src)
    check = check_cohort(read_manifest(manifest), inside)
    assert src.base == "" and inside.base == "site"  # the source given is left as it was
    got = {p.row: p.problem for p in check.problems.itertuples() if p.severity == "error"}
    assert got[5] == "image file 'out.dcm' is refused in site.zip: it is a symbolic link"
    assert got[7].startswith("image file 'big.dcm' is refused in site.zip: it unpacks to 3 MB")
    assert got[3] == "image file '../outside.dcm' is refused in site.zip: its path leaves the archive"
    assert got[8] == "image file 'gone.dcm' is not in site.zip" and 2 not in got


def test_a_huge_zip_member_is_refused_without_reading_it(tmp_path, monkeypatch):
    """Issue 14.6: one member that unpacks past the cap is refused from its header; one whose header lies
    is read streamed and cut at the cap, so memory stays bounded."""
    import resource

    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("huge.dcm", "w", force_zip64=True) as f:
            chunk = b"\0" * 2**24
            for _ in range(40):  # 640 MB of zeros, ~0.6 MB compressed (ratio ~1000)
                f.write(chunk)
    monkeypatch.setenv("KNEEAGE_MAX_MEMBER_RATIO", "5000")  # only the size cap stands in the way
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    src = ZipSource(path)
    with pytest.raises(InputError, match="huge.dcm is refused in big.zip: it unpacks to 640 MB"):
        src.read("huge.dcm")
    # a header that lies about the size: the stream stops one byte past the cap
    monkeypatch.setenv("KNEEAGE_MAX_MEMBER_MB", "100000")
    src = ZipSource(path)
    monkeypatch.setenv("KNEEAGE_MAX_MEMBER_MB", "8")
    with pytest.raises(InputError, match="huge.dcm is refused: it unpacks to 8 MB or more"):
        src.read("huge.dcm")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # kB: far below 640 MB


def test_zip_source_refuses_traversal_links_bombs_and_nested(cohort):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.write(cohort / "images" / sorted(os.listdir(cohort / "images"))[0], "images/a.dcm")
        z.writestr("../evil.dcm", b"x")
        link = zipfile.ZipInfo("images/link.dcm")
        link.external_attr = (0o120777 << 16)
        z.writestr(link, "/etc/passwd")
        z.writestr(zipfile.ZipInfo("images/bomb.dcm"), b"\0" * 5_000_000, compress_type=zipfile.ZIP_DEFLATED)
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as zi:
            zi.writestr("x.dcm", b"x")
        z.writestr("images/nested.zip", inner.getvalue())
    src = ZipSource(buf.getvalue(), "site.zip")
    assert src.names() == ["images/a.dcm", "images/nested.zip"]
    assert src.refused["images/link.dcm"] == "it is a symbolic link"
    assert "zip bomb" in src.refused["images/bomb.dcm"]
    assert "../evil.dcm" in src.refused
    with pytest.raises(InputError, match="images/link.dcm is refused in site.zip: it is a symbolic link"):
        src.read("images/link.dcm")
    with pytest.raises(InputError, match="zip archive inside the archive"):
        src.read("images/nested.zip")
    with pytest.raises(InputError, match="not a readable zip archive"):
        ZipSource(b"not a zip", "x.zip")


def test_run_results_and_exports_agree_with_stats(cohort, predictor, tmp_path, new_db):
    store = Store(new_db())
    check = check_cohort(read_manifest(cohort / "manifest.csv"), FolderSource(cohort))
    cid = validation.ingest(store, check, "c", "Site A", FolderSource(cohort))
    assert validation.ingest(store, check, "c", "Site A", FolderSource(cohort)) == cid  # idempotent
    seen = []
    rid = validation.run_model(store, cid, predictor, FolderSource(cohort), batch=5, progress=lambda k, n: seen.append(k))
    assert seen[-1] == 24 and store.counts(rid) == {"done": 24}
    store.save_results(rid, [{"case_id": "SYN011-00002", "status": "done", "predicted_bone_age_months": 50.0,
                              "flags": "not_a_knee;folds_disagree"}])
    cases = validation.case_table(store, rid)
    result = validation.analyse(cases, n_boot=300)
    # the refused image leaves the statistics, as does any knee the model itself withheld or censored
    refused = cases["flags"].fillna("").str.split(";").map(lambda f: any(x in REFUSALS for x in f))
    n_given = int((~refused).sum())
    assert result.complete and result.withheld["not_a_knee"] >= 1 and sum(result.withheld.values()) == 24 - n_given
    assert result.errors.n == n_given
    summary = result.as_dict()  # the summary as exported
    assert summary["flags"]["not_a_knee"] == 1 and summary["flags"]["folds_disagree"] >= 1
    from kneeage import plots, report
    meta = {"site": "Site A", "synthetic_demo": True}
    paths = report.write_validation(tmp_path / "out", report.validation_exports(cases, summary, meta,
                                                                                plots.validation_figures(cases, summary)))
    exported = pd.read_csv(paths["cases"])
    s = json.loads(paths["summary"].read_text())
    assert s["withheld"] == result.withheld  # a refused image leaves the agreement statistics
    exported = exported[exported.case_id.isin(cases.case_id[~refused])]
    es = stats.error_summary(exported.predicted_bone_age_months, exported.reference_bone_age_months, n_boot=300)
    ba = stats.bland_altman(exported.predicted_bone_age_months, exported.reference_bone_age_months)
    assert s["n"] == es.n == n_given and s["mae"] == pytest.approx(es.mae) and s["rmse"] == pytest.approx(es.rmse)
    assert s["mae_ci"] == pytest.approx(list(es.mae_ci)) and s["bias"] == pytest.approx(ba.bias)
    assert (s["loa_lower"], s["loa_upper"]) == pytest.approx((ba.loa_lower, ba.loa_upper))
    chron = stats.compare_errors(exported.predicted_bone_age_months, exported.chronological_age_months,
                                 exported.reference_bone_age_months, n_boot=300)
    assert s["comparisons"]["chronological age"]["mae_difference"] == pytest.approx(chron.mae_difference)
    html = paths["report"].read_text()
    assert f"{es.mae:.2f}" in html and "Synthetic demo model" in html and "SYN011-00001" in html
    bundle = zipfile.ZipFile(paths["bundle"])
    assert sorted(bundle.namelist()) == ["cases.csv", "meta.json", "summary.json"]
    assert "image" not in pd.read_csv(bundle.open("cases.csv")).columns
    # a second model version keeps both runs
    other = store.run_for(cid, "other", "ffff", "x", False)
    assert other != rid and len(store.runs(cid)) == 2 and len(store.pending(other)) == 24


def test_a_statistic_that_cannot_be_computed_is_reported_and_the_rest_goes_on(tmp_path):
    """Every reference 120 and predictions falling: Passing-Bablok has no slope (#14.2); the run still
    gets its summary, figures and exports, and says what was not computed."""
    from kneeage import plots, report

    n = 12
    cases = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "sex": ["F", "M"] * (n // 2),
                          "chronological_age_months": np.linspace(60, 180, n), "reference_bone_age_months": 120.0,
                          "predicted_bone_age_months": np.linspace(180, 60, n), "status": "done", "flags": ""})
    result = validation.analyse(cases, n_boot=200)
    assert result.passing_bablok is None and result.errors is not None
    summary = result.as_dict()
    assert "passing_bablok" not in summary and "cannot estimate a slope" in summary["not_computed"]["Passing-Bablok regression"]
    assert summary["mae"] == pytest.approx(np.abs(np.linspace(180, 60, n) - 120).mean()) and summary["comparisons"]
    figs = plots.validation_figures(cases, summary)
    assert {"scatter", "bland_altman"} <= set(figs)
    paths = report.write_validation(tmp_path, report.validation_exports(cases, summary, {"site": "S"}, figs))
    assert "Not computed: Passing-Bablok regression" in paths["report"].read_text()


def test_crash_mid_run_then_resume_loses_and_doubles_nothing(cohort, tmp_path, new_db):
    db, out = new_db(), tmp_path / "out"
    probe = Store(db)
    cmd = [sys.executable, "-m", "kneeage", "validate", "--manifest", str(cohort / "manifest.csv"), "--images",
           str(cohort), "--out", str(out), "--db", str(db), "--batch", "2", "--workers", "1"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    killed_at = 0
    while time.time() < deadline and proc.poll() is None:
        n = probe.table_counts()["results"]
        if n >= 2:  # the first batch is stored: kill at once, well before the last
            proc.send_signal(signal.SIGKILL)
            killed_at = n
            break
        time.sleep(0.05)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    store = Store(db)
    run_id = store.runs().id[0]
    partial = store.counts(run_id).get("done", 0)
    assert killed_at <= partial < 24
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pd.DataFrame(store.rows("results"))
    assert len(rows) == 24 and rows.case_id.nunique() == 24
    assert len(store.runs()) == 1 and len(store.cohorts()) == 1
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["n"] + sum(summary["withheld"].values()) == 24  # every case in the statistics or withheld


def test_pooling_sites(cohort, predictor, new_db):
    store = Store(new_db())
    check = check_cohort(read_manifest(cohort / "manifest.csv"), FolderSource(cohort))
    cid = validation.ingest(store, check, "c", "A", FolderSource(cohort))
    cases = validation.case_table(store, validation.run_model(store, cid, predictor, FolderSource(cohort)))
    b = []
    for site, shift in (("A", 0.0), ("B", 24.0), ("C", -12.0)):  # far apart, whatever the model's own error
        c = cases.assign(predicted_bone_age_months=cases.predicted_bone_age_months + shift)
        b.append((c, {"site": site, "cohort": "c", "model_hash": "h"}))
    pooled = validation.pool(b, n_boot=200)
    assert pooled.n_sites == 3 and pooled.bias_heterogeneity.df == 2
    r = pooled.as_dict()  # pooled.json
    assert r["n_sites"] == 3 and r["same_model"] and r["pooled"]["n"] == 72
    biases = [s["bias"] for s in r["sites"]]
    assert biases[1] - biases[0] == pytest.approx(24)
    assert r["bias_heterogeneity"]["I2"] > 0.5  # sites with shifted biases are heterogeneous
    assert r["bias_heterogeneity"]["fixed"] == pytest.approx(np.mean(biases), abs=0.5)
    with pytest.raises(Exception, match="same site and cohort"):
        validation.pool([b[0], b[0]])
    fig = __import__("kneeage.plots", fromlist=["x"]).pooling_figure(r)
    assert "I²" in fig.layout.title.text and len(fig.data) == 2


def test_two_model_versions_on_one_cohort_are_compared(cohort, predictor, new_db):
    store = Store(new_db())
    check = check_cohort(read_manifest(cohort / "manifest.csv"), FolderSource(cohort))
    cid = validation.ingest(store, check, "c", "A", FolderSource(cohort))
    ra = validation.run_model(store, cid, predictor, FolderSource(cohort))
    rb = store.run_for(cid, "shifted", "beef", "x", True)
    a = validation.case_table(store, ra)
    shift = 12 if (a.predicted_bone_age_months - a.reference_bone_age_months).mean() >= 0 else -12  # B: A's bias, worse
    store.save_results(rb, [{"case_id": r.case_id, "status": "done", "predicted_bone_age_months": r.predicted_bone_age_months + shift}
                            for r in a.itertuples()])
    c = validation.compare_runs(store, ra, rb, n_boot=300)
    expected = stats.compare_errors(a.predicted_bone_age_months, a.predicted_bone_age_months + shift,
                                    a.reference_bone_age_months, n_boot=300)
    assert c["n"] == 24 and c["mae_difference"] == pytest.approx(expected.mae_difference) and c["mae_difference"] < 0
    assert "shifted (beef)" == c["model_b"]


@pytest.mark.parametrize("env,value,build,message", [
    ("KNEEAGE_MAX_IMAGE_MEGAPIXELS", "0.01", "image", "over the limit of 0.01 megapixels"),
    ("KNEEAGE_MAX_FILES", "2", "zip", "3 files, over the limit of 2 (KNEEAGE_MAX_FILES)"),
    ("KNEEAGE_MAX_UNPACKED_GB", "0.000001", "zip", "over the limit of 1e-06 GiB (KNEEAGE_MAX_UNPACKED_GB)"),
    ("KNEEAGE_MAX_UPLOAD_MB", "0.0001", "upload", "over the upload limit of 0.0001 MB (KNEEAGE_MAX_UPLOAD_MB)"),
])
def test_limits_are_configurable_and_their_refusals_say_so(monkeypatch, cohort, env, value, build, message):
    from kneeage.config import check_upload
    from kneeage.errors import KneeageError
    from kneeage.imaging import load_radiograph

    monkeypatch.setenv(env, value)
    first = sorted((cohort / "images").iterdir())[0]
    with pytest.raises(KneeageError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        if build == "image":
            load_radiograph(first)
        elif build == "zip":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                for k in range(3):
                    z.writestr(f"f{k}.dcm", first.read_bytes())
            ZipSource(buf.getvalue(), "big.zip")
        else:
            check_upload("cohort.zip", 1000)
    monkeypatch.setenv(env, "-1")
    with pytest.raises(KneeageError, match="must be positive"):
        from kneeage.config import limit

        limit(env.removeprefix("KNEEAGE_").lower())


def test_validate_cohort_then_resume_an_interrupted_run(cohort, predictor, new_db):
    """The workflow the page and the CLI share: dry run (seen before anything is stored), cohort, run; a run
    interrupted part-way is finished by resume() with the run's own model, nothing doubled."""
    from kneeage.errors import ModelError

    store = Store(new_db())
    seen = []
    done = validation.validate_cohort(store, (cohort / "manifest.csv").read_bytes(), FolderSource(cohort), [],
                                      name="c", site="Site R", on_check=lambda check: seen.append(len(store.cohorts())))
    assert seen == [0] and done.run_ids == () and done.check.summary["usable"] == 24  # checked, then stored
    assert store.cohort(done.cohort_id)["source"] == f"folder:{cohort.resolve()}"
    partial = store.run_for(done.cohort_id, predictor.card.name, predictor.hash, str(predictor.model_dir), True)
    store.save_results(partial, [{"case_id": c, "status": "done", "predicted_bone_age_months": 100.0}
                                 for c in done.check.cases.case_id[:5]])  # interrupted after 5 cases
    loaded = []
    assert validation.resume(store, partial, lambda d: loaded.append(d) or predictor) == partial
    assert loaded == [str(predictor.model_dir)] and store.counts(partial) == {"done": 24} and not store.pending(partial)
    assert store.results(partial).set_index("case_id").predicted_bone_age_months[done.check.cases.case_id[0]] == 100.0
    changed = store.run_for(done.cohort_id, "older version", "feed", str(predictor.model_dir), True)
    with pytest.raises(ModelError, match="not the one this run used"):
        validation.resume(store, changed, lambda d: predictor)  # never resumed with other weights
    nothing = pd.read_csv(cohort / "manifest.csv").assign(sex="X").to_csv(index=False).encode()
    with pytest.raises(InputError, match="no usable cases"):
        validation.validate_cohort(store, nothing, FolderSource(cohort), [predictor], name="bad", site="Site R")
    assert len(store.cohorts()) == 1  # nothing stored for a cohort without usable cases


def test_image_sources_are_typed_and_reopen_only_what_they_can(cohort, tmp_path):
    from kneeage.cohort import SourceRef, open_source
    from kneeage.predictions import NoImages

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.write(cohort / "manifest.csv", "export/manifest.csv")
    (tmp_path / "c.zip").write_bytes(buf.getvalue())
    upload = ZipSource(buf.getvalue(), "c.zip")
    assert upload.ref == SourceRef("upload", "c.zip") and upload.ref.text() == "upload:c.zip"
    on_disk = manifest_in(ZipSource(tmp_path / "c.zip"))[1]
    assert on_disk.ref.text() == f"zip:{(tmp_path / 'c.zip').resolve()}!export"
    assert SourceRef.parse(on_disk.ref.text()) == on_disk.ref and open_source(on_disk.ref.text()).base == "export"
    assert SourceRef.parse("nonsense") is None and SourceRef.parse(NoImages("m.csv").ref.text()) == SourceRef("predictions", "m.csv")
    with pytest.raises(InputError, match="upload:c.zip: its images are not available"):
        open_source("upload:c.zip")  # an upload is never stored
    assert open_source("upload:c.zip", upload) is upload
    with pytest.raises(InputError, match="upload:c.zip: its images are not available"):
        open_source("upload:c.zip", ZipSource(buf.getvalue(), "other.zip"))  # not the same upload
    with pytest.raises(InputError, match="the predictions were made elsewhere; this cohort has no images"):
        open_source(NoImages("m.csv").ref)


def test_a_folder_image_is_read_whole_even_if_it_grew_after_its_size_was_taken(tmp_path, monkeypatch):
    from kneeage import cohort

    (tmp_path / "a.dcm").write_bytes(bytes(range(256)) * 40)
    real = os.fstat
    monkeypatch.setattr(cohort.os, "fstat", lambda fd: os.stat_result((0,) * 6 + (10,) + (0,) * 3) if fd > 2 else real(fd))
    assert FolderSource(tmp_path).read("a.dcm") == bytes(range(256)) * 40  # stat said 10 bytes: read on
    monkeypatch.setenv("KNEEAGE_MAX_MEMBER_MB", str(5000 / 2**20))  # a cap below the file: refused, not cut
    with pytest.raises(InputError, match="a.dcm is refused: it unpacks to 0 MB or more"):
        FolderSource(tmp_path).read("a.dcm")
