"""Privacy: identifying DICOM tags, private tags and identifying manifest columns never reach the
database, stored files or exports (unless a site opts in). Crash safety of a reader session killed
mid-way, and the database backup."""

import io
import os
import signal
import subprocess
import sys
import zipfile
from datetime import date

import pandas as pd
import pydicom
import pytest

from kneeage.phantom import render_knee, write_dicom
from kneeage.store import Store
from tests.conftest import ROOT

SECRETS = {"PatientName": "SMITHERS^JOHNATHAN^Q", "PatientID": "MRN-99887766", "AccessionNumber": "ACC55443322",
           "InstitutionName": "St Secretive Hospital", "ReferringPhysicianName": "DR^WHOSOEVER",
           "OperatorsName": "TECH^ZEBEDEE", "StudyDescription": "Knee pain Smithers", "PatientAddress": "1 Hidden Lane",
           "OtherPatientIDs": "OTHER-12344321", "StudyID": "STUDY-7766"}
DATES = ["20120304", "2012-03-04", "20240506", "2024-05-06", "04/03/2012"]
PRIVATE = "PRIVATE-SECRET-123"


def _cohort(d, n=6):
    (d / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        ph = render_knee(60 + 15 * i, "F" if i % 2 else "M", i, 160)
        path = d / "images" / f"k{i}.dcm"
        write_dicom(path, ph.stored, ph.truth, birth=date(2012, 3, 4), study=date(2024, 5, 6), patient_id="X")
        ds = pydicom.dcmread(path)
        for k, v in SECRETS.items():
            setattr(ds, k, v)
        ds.private_block(0x0011, "ACME SECRETS", create=True).add_new(0x01, "LO", PRIVATE)
        ds.save_as(path)
        rows.append({"case_id": f"S{i:03d}", "image": f"images/k{i}.dcm", "sex": ph.truth.sex,
                     "birth_date": "2012-03-04", "study_date": "2024-05-06", "patient_name": SECRETS["PatientName"],
                     "mrn": SECRETS["PatientID"], "reference_bone_age_months": 60 + 15 * i})
    pd.DataFrame(rows).to_csv(d / "manifest.csv", index=False)


def damaged_dicom(path) -> None:
    """A phantom carrying every secret whose SOPClassUID claims 512 bytes: pydicom then reads the rest of the
    header as that UID and, unless kneeage silences it, prints those raw bytes as a warning (issue 14.11)."""
    import struct

    ph = render_knee(100, "F", 9, 128)
    buf = io.BytesIO()
    write_dicom(buf, ph.stored, ph.truth, birth=date(2012, 3, 4), study=date(2024, 5, 6), patient_id="X")
    ds = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    for k, v in SECRETS.items():
        setattr(ds, k, v)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = bytearray(out.getvalue())
    at = data.find(b"\x08\x00\x16\x00UI", 132)
    struct.pack_into("<H", data, at + 6, 0x200)
    path.write_bytes(bytes(data))


def _all_bytes(paths):
    for p in paths:
        if p.is_file():
            data = p.read_bytes()
            yield p, data
            if p.suffix == ".zip":
                with zipfile.ZipFile(io.BytesIO(data)) as z:
                    for n in z.namelist():
                        yield p / n, z.read(n)


def _needles():
    parts = [p for v in SECRETS.values() if "^" in v for p in v.split("^") if len(p) >= 5]
    return [*SECRETS.values(), *parts, PRIVATE, *DATES]


def _leaks(paths):
    return [(str(p), n) for p, data in _all_bytes(paths) for n in _needles()
            if n.encode() in data or n.encode("utf-16-le") in data]


def text_leaks(text: str) -> list[str]:
    """Identifying values found in a log or console output."""
    return [n for n in _needles() if n in text]


def _validate(d, home, out, *extra):
    env = dict(os.environ, KNEEAGE_HOME=str(home), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "kneeage", "validate", "--manifest", str(d / "manifest.csv"), "--images",
                        str(d), "--out", str(out), "--site", "Privacy site", *extra],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_nothing_identifying_is_stored_exported_or_logged(tmp_path):
    d, home, out = tmp_path / "cohort", tmp_path / "home", tmp_path / "out"
    _cohort(d)
    damaged_dicom(d / "images" / "damaged.dcm")
    with open(d / "manifest.csv", "a") as f:
        f.write("S999,images/damaged.dcm,F,2012-03-04,2024-05-06,X,Y,100\n")
    assert _leaks([d / "images" / "k0.dcm"])  # the inputs really carry the secrets
    r = _validate(d, home, out)
    stored = [p for p in home.rglob("*")] + [p for p in out.rglob("*")]
    assert any(p.name == "kneeage.db" for p in stored) and any(p.name == "site_bundle.zip" for p in stored)
    assert _leaks(stored) == []
    assert "row 8 (S999): error: unreadable: images/damaged.dcm: the DICOM object contains no image pixel data" in r.stderr
    info = subprocess.run([sys.executable, "-m", "kneeage", "info", str(d / "images" / "damaged.dcm"),
                           str(d / "images" / "k1.dcm")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert info.returncode == 1 and '"ok": true' in info.stdout  # k1 decodes; the damaged one is refused
    assert text_leaks(r.stdout + r.stderr + info.stdout + info.stderr) == []  # issue 14.11
    # issue 14.12: the database and its WAL/SHM files are the owner's alone
    modes = {p.name: p.stat().st_mode & 0o777 for p in home.glob("kneeage.db*")}
    assert "kneeage.db" in modes and set(modes.values()) == {0o600}, modes
    backup = subprocess.run([sys.executable, "-m", "kneeage", "backup", "--out", str(tmp_path / "b.db")], cwd=ROOT,
                            env=dict(os.environ, KNEEAGE_HOME=str(home)), capture_output=True, text=True, timeout=120)
    assert backup.returncode == 0 and (tmp_path / "b.db").stat().st_mode & 0o777 == 0o600
    assert "identifying columns dropped" in r.stderr
    cases = pd.read_csv(out / "cases.csv")
    assert cases.chronological_age_months.round(0).tolist() == [146.0] * 6  # the derived age is kept


def test_identifying_manifest_columns_are_kept_only_with_opt_in(tmp_path):
    d, home, out = tmp_path / "cohort", tmp_path / "home", tmp_path / "out"
    _cohort(d, 3)
    _validate(d, home, out, "--identifying")
    db = b"".join(p.read_bytes() for p in home.glob("kneeage.db*"))  # the database and its WAL
    assert SECRETS["PatientID"].encode() in db  # kept because the site opted in
    assert PRIVATE.encode() not in db and SECRETS["InstitutionName"].encode() not in db  # header values never
    assert _leaks([out / "cases.csv", out / "summary.json", out / "site_bundle.zip"]) == []  # exports never


READER = r'''
import sys, time
from kneeage import readerstudy as rs
from kneeage.store import Store
s = Store(); reader = rs.authenticate(s, sys.argv[1])
while not isinstance(t := rs.next_task(s, reader), str):
    rs.submit(s, reader, t, 100.0 + t.position, 1.0)
    print("ACK", t.position, flush=True)
    time.sleep(0.05)  # a reader's pace, however brisk: the kill lands mid-session
'''


def test_reader_session_killed_midway_loses_and_doubles_nothing(tmp_path, new_db, monkeypatch):
    from kneeage import readerstudy as rs

    home = tmp_path / "home"
    url = new_db()
    env = dict(os.environ, KNEEAGE_HOME=str(home), KNEEAGE_DATABASE_URL=url, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    with monkeypatch.context() as m:
        m.setenv("KNEEAGE_HOME", str(home))
        store = Store(url)
        p = rs.Protocol.from_dict({"name": "crash", "arms": {"unassisted": True, "assisted": False},
                                   "synthetic": {"n": 40, "seed": 5, "size": 128}})
        sid = rs.setup_study(store, p)
        code = rs.invite(store, sid, "Dr Crash")
    proc = subprocess.Popen([sys.executable, "-c", READER, code], env=env, stdout=subprocess.PIPE, text=True)
    acks = []
    for line in proc.stdout:
        acks.append(int(line.split()[1]))
        if len(acks) >= 8:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    reads = store.reads(study_id=sid)
    assert set(acks) <= set(reads.position) and len(reads) < 40  # every acknowledged answer is stored
    done = subprocess.run([sys.executable, "-c", READER, code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    reads = store.reads(study_id=sid)
    assert len(reads) == 40 and reads.position.tolist() == list(range(40))  # one answer per case, none lost
    assert (reads.estimate_months == 100.0 + reads.position).all()


def test_backup_copies_everything(tmp_path, new_db):
    db = new_db()
    s = Store(db)
    s.add_cohort(pd.DataFrame({"case_id": ["a", "b"], "row": [2, 3], "image": ["x", "y"], "sex": ["F", "M"]}),
                 "c", "site", "folder:/x", [])
    r = subprocess.run([sys.executable, "-m", "kneeage", "backup", "--db", str(db), "--out", str(tmp_path / "b.db")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    copy = Store(tmp_path / "b.db")
    assert copy.cases(copy.cohorts().id[0]).case_id.tolist() == ["a", "b"]
    if s.path is not None:
        with pytest.raises(Exception, match="must not overwrite"):
            s.backup(db)
