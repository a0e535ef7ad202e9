"""The study database on both backends (SQLite and a real PostgreSQL server): URLs, schema versions and
migrations, one transaction per write, answers saved once under concurrency (threads and processes),
copying a study between backends, and backups."""

import json
import os
import sqlite3
import subprocess
import sys
import threading

import pandas as pd
import pytest
import sqlalchemy as sa

from kneeage import readerstudy as rs
from kneeage import store as store_module
from kneeage.access import AccessError
from kneeage.errors import InputError, StoreError
from kneeage.store import SCHEMA_VERSION, Store, copy_database, database_url
from tests.conftest import ROOT

LEGACY = ROOT / "tests" / "data" / "store_unversioned.sql"


def _cohort(store, n=6) -> str:
    frame = pd.DataFrame({"case_id": [f"C{i}" for i in range(n)], "row": range(2, n + 2), "image": [f"i{i}.dcm" for i in range(n)],
                          "sex": ["F", "M"] * (n // 2), "chronological_age_months": [60.0 + 10 * i for i in range(n)],
                          "reference_bone_age_months": [62.0 + 10 * i for i in range(n)]})
    return store.add_cohort(frame, "c", "site", "folder:/nowhere", [])


def _study(store, n=6, allow_changes=False) -> str:
    """A reader study over a small stored cohort (no images: answering needs none)."""
    p = rs.Protocol.from_dict({"name": "store test", "arms": {"unassisted": True, "assisted": False},
                               "display": {"allow_changes": allow_changes}})
    return rs.create_study(store, p, _cohort(store, n), None)


def _answer_all(store, code, base=100.0):
    reader = rs.authenticate(store, code)
    while not isinstance(t := rs.next_task(store, reader), str):
        rs.submit(store, reader, t, base + t.position, 1.0)


# ------------------------------------------------------------------------------------ URLs


def test_database_urls(tmp_path, monkeypatch):
    monkeypatch.delenv("KNEEAGE_DATABASE_URL", raising=False)
    monkeypatch.setenv("KNEEAGE_HOME", str(tmp_path))
    assert database_url() == f"sqlite:///{tmp_path}/kneeage.db"
    assert database_url(tmp_path / "a.db") == database_url(f"sqlite:///{tmp_path}/a.db") == f"sqlite:///{tmp_path}/a.db"
    assert database_url("postgresql://u:p@h:5433/d") == "postgresql+psycopg://u:p@h:5433/d"
    assert database_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    monkeypatch.setenv("KNEEAGE_DATABASE_URL", "postgresql://u@h/d")
    assert database_url() == "postgresql+psycopg://u@h/d"
    with pytest.raises(InputError, match=r"^mysql://…: kneeage stores studies in SQLite .* or PostgreSQL"):
        database_url("mysql://u@h/d")
    with pytest.raises(InputError, match="needs a file"):
        database_url("sqlite://")


def test_unreachable_server_and_missing_database_are_one_sentence(tmp_path):
    with pytest.raises(StoreError) as e:
        Store("postgresql://someone:s3cret@127.0.0.1:1/nothing")
    msg = str(e.value)
    assert msg.startswith("cannot open the study database postgresql+psycopg://someone:***@127.0.0.1:1/nothing: ")
    assert "s3cret" not in msg and "\n" not in msg and msg.endswith(".")
    with pytest.raises(StoreError, match="there is no study database at this path"):
        Store(tmp_path / "missing.db", must_exist=True)
    (tmp_path / "text.db").write_text("not a database at all, just some text " * 100)
    with pytest.raises(StoreError, match="cannot open the study database .*text.db: file is not a database"):
        Store(tmp_path / "text.db")


def test_cli_refuses_a_bad_database_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "kneeage", "study", "status", "x", "--db", "postgresql://k@127.0.0.1:1/x"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: cannot open the study database") and r.stderr.count("\n") == 1


# --------------------------------------------------------------------------- schema versions


def test_a_new_database_is_stamped_with_the_schema_version(new_db):
    s = Store(new_db())
    assert s.schema_version() == SCHEMA_VERSION
    assert set(s.table_counts()) == {t.name for t in store_module.DATA_TABLES}
    assert [r["version"] for r in s.rows("schema_version")] == [SCHEMA_VERSION]


def _legacy(path):
    with sqlite3.connect(path) as c:
        c.executescript(LEGACY.read_text())
    c.close()
    return path


def test_a_database_of_the_release_before_versions_opens_and_keeps_everything(tmp_path):
    s = Store(_legacy(tmp_path / "old.db"))
    assert [r["version"] for r in s.rows("schema_version")] == [1]
    assert s.cases("c0ffee000001").comparator_fels.tolist() == [101.0, 119.0, 141.0]
    res = s.results(s.runs().id[0]).set_index("case_id")
    assert res.status.to_dict() == {"C1": "done", "C2": "failed", "C3": "pending"}
    assert s.reader("ABC123")["name"] == "Dr Old" and s.reads(reader_id="ABC123").estimate_months.tolist() == [117.0]
    assert s.failure_times("reader:ABC123", 0) == [1000.0]
    # and it takes new writes: an answer, an audit line with the next id, a login failure
    row = {"reader_id": "ABC123", "position": 1, "study_id": "5tudy001", "case_id": "C1", "arm": "unassisted", "repeat": 0,
           "estimate_months": 99.0, "submitted": store_module.now()}
    assert s.save_read(row, False, "0" * 16) == "saved" and s.save_read(row, False, "0" * 16) is None
    assert [a["id"] for a in s.rows("audit")] == [1, 2, 3, 4]


def test_a_later_schema_version_migrates_once_and_a_newer_database_is_refused(new_db, monkeypatch):
    url = new_db()
    s = Store(url)
    _cohort(s)
    s.close()
    add_note = lambda c: c.execute(sa.text("alter table cohorts add column note text"))  # noqa: E731
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(store_module.MIGRATIONS, 2, add_note)
    s = Store(url)
    assert [r["version"] for r in s.rows("schema_version")] == [1, 2]
    assert "note" in {c["name"] for c in sa.inspect(s.engine).get_columns("cohorts")}
    assert len(s.rows("cases")) == 6  # the data came along
    s.close()
    assert [r["version"] for r in Store(url).rows("schema_version")] == [1, 2]  # not migrated twice
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 1)
    s.close()
    with pytest.raises(StoreError, match=r"written by a newer kneeage \(schema version 2; this release reads up to 1\)"):
        Store(url)


# ------------------------------------------------------------------------------ transactions


def test_a_failed_write_leaves_nothing_behind(new_db):
    s = Store(new_db())
    sid = _study(s)
    row = {"id": "DUP001", "study_id": sid, "name": "Dr Dup", "role": "reader", "code_hash": "0" * 64, "salt": "0" * 32,
           "created": store_module.now(), "expires": "2099-01-01T00:00:00+00:00", "revoked": 0}
    items = [{"reader_id": "DUP001", "position": 0, "study_id": sid, "case_id": "C0", "arm": "unassisted", "repeat": 0,
              "session": 0}] * 2  # the same worklist position twice: the whole invitation must fail
    with pytest.raises(sa.exc.IntegrityError):
        s.add_reader(row, items)
    assert s.reader("DUP001") is None and not len(s.worklist("DUP001"))
    assert [a["action"] for a in s.rows("audit")] == ["create study"]


def test_results_upsert_changes_only_the_given_columns(new_db):
    s = Store(new_db())
    cid = _cohort(s)
    rid = s.run_for(cid, "m", "h", "d", False)
    assert s.run_for(cid, "m", "h", "d", False) == rid and len(s.runs()) == 1
    s.save_results(rid, [{"case_id": "C0", "status": "done", "predicted_bone_age_months": 70.0, "interval_lower": 60.0},
                         {"case_id": "C1", "status": "failed", "error": "unreadable"}])
    s.save_results(rid, [{"case_id": "C0", "status": "done", "predicted_bone_age_months": 71.0}])
    r = s.results(rid).set_index("case_id")
    assert r.loc["C0", "predicted_bone_age_months"] == 71.0 and r.loc["C0", "interval_lower"] == 60.0
    assert s.counts(rid) == {"done": 1, "failed": 1} and s.pending(rid) == ["C2", "C3", "C4", "C5"]
    assert s.add_cohort(pd.DataFrame({"case_id": ["x"]}), "again", "s", "src", [], cohort_id=cid) == cid
    assert len(s.cases(cid)) == 6  # idempotent


@pytest.mark.parametrize("allow_changes", [False, True])
def test_the_same_answer_sent_at_once_from_two_sessions_is_stored_once(new_db, allow_changes):
    url = new_db()
    s = Store(url)
    sid = _study(s, allow_changes=allow_changes)
    code = rs.invite(s, sid, "Dr Twice")
    reader = rs.authenticate(s, code)
    task = rs.next_task(s, reader)
    n, outcomes, barrier = 8, [], threading.Barrier(8)

    def send(k):
        mine = Store(url)  # one browser tab each
        barrier.wait()
        try:
            outcomes.append(rs.submit(mine, reader, task, 100.0 + k, 1.0))
        except AccessError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=send, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    reads = s.reads(reader_id=reader["id"])
    assert len(reads) == 1 and outcomes.count("saved") == 1
    if allow_changes:
        assert outcomes.count("changed") == n - 1 and reads.revision[0] == n - 1
    else:
        assert sum("does not allow changes" in o for o in outcomes) == n - 1 and reads.revision[0] == 0
    audit = [a["action"] for a in s.rows("audit")]
    assert audit.count("read") == 1 and audit.count("change read") == (n - 1 if allow_changes else 0)


APP = r'''
import sys, threading
from kneeage.store import Store
from tests.test_store import _answer_all
codes = sys.argv[2:]
errors = []
def go(code):
    try:
        _answer_all(Store(sys.argv[1]), code)
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=go, args=(c,)) for c in codes]
[t.start() for t in threads]
[t.join() for t in threads]
print("ERRORS", errors)
sys.exit(1 if errors else 0)
'''


def test_readers_on_several_app_processes_lose_and_double_nothing(new_db):
    """Three app processes (as three servers behind a proxy) with four readers each, on one database."""
    url = new_db()
    s = Store(url)
    sid = _study(s, n=8)
    codes = [rs.invite(s, sid, f"R{i}") for i in range(12)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    procs = [subprocess.Popen([sys.executable, "-c", APP, url, *codes[k::3]], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, (out + err)[-2000:]
    reads = s.reads(study_id=sid)
    assert len(reads) == 12 * 8 and not reads.duplicated(["reader_id", "position"]).any()
    assert (reads.estimate_months == 100.0 + reads.position).all()
    assert [a["action"] for a in s.rows("audit")].count("read") == 96


# ---------------------------------------------------------------------- copy and backup


def _dump(s: Store) -> dict:
    return {t.name: sorted(json.dumps(r, sort_keys=True) for r in s.rows(t.name)) for t in store_module.DATA_TABLES}


def test_a_study_moves_between_sqlite_and_postgresql_and_back(tmp_path, pg_server):
    first = Store(_legacy(tmp_path / "first.db"))
    rs.invite(first, "5tudy001", "Dr New")  # a reader with a worklist, an audit line
    pg = pg_server.new_database()
    counts = copy_database(first, Store(pg))
    assert counts["cases"] == 3 and counts["reads"] == 1 and counts["audit"] == 4
    moved = Store(pg)
    assert _dump(moved) == _dump(first)
    rs.revoke(moved, "5tudy001", "ABC123")  # ids go on after the copied ones
    assert [a["id"] for a in moved.rows("audit")] == [1, 2, 3, 4, 5]
    with pytest.raises(InputError, match="already holds study data .*copy into a new, empty database"):
        copy_database(first, moved)
    back = Store(tmp_path / "back.db")
    copy_database(moved, back)
    assert _dump(back) == _dump(moved)


def test_cli_db_copy_and_backup(backend, new_db, tmp_path):
    url = new_db()
    s = Store(url)
    sid = _study(s)
    _answer_all(s, rs.invite(s, sid, "Dr Backup"))
    run = lambda *a: subprocess.run([sys.executable, "-m", "kneeage", *a], cwd=ROOT, capture_output=True, text=True,  # noqa: E731
                                    timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    r = run("backup", "--db", url, "--out", str(tmp_path / "b.db"))
    assert r.returncode == 0 and r.stdout.strip() == f"backed up {len(store_module.META.tables)} tables to {tmp_path / 'b.db'}"
    assert (tmp_path / "b.db").stat().st_mode & 0o777 == 0o600 and not list(tmp_path.glob("b.db.part*"))
    assert _dump(Store(tmp_path / "b.db")) == _dump(s)
    other = new_db()
    if backend == "postgresql":  # a password in the URL (this test server ignores it) is never printed
        other = sa.make_url(other).set(password="hunter2").render_as_string(hide_password=False)
    r = run("db", "copy", "--from", str(tmp_path / "b.db"), "--to", other)
    assert r.returncode == 0 and "reads 6" in r.stdout and "hunter2" not in r.stdout + r.stderr, r.stderr
    assert backend == "sqlite" or ":***@127.0.0.1" in r.stdout
    assert _dump(Store(other)) == _dump(s)
    r = run("db", "copy", "--from", str(tmp_path / "b.db"), "--to", other)
    assert r.returncode == 2 and "already holds study data" in r.stderr
    r = run("db", "copy", "--from", str(tmp_path / "nothing.db"), "--to", str(tmp_path / "x.db"))
    assert r.returncode == 2 and r.stderr == f"error: {tmp_path / 'nothing.db'}: there is no study database at this path.\n"


def test_text_with_nul_characters_is_stored_on_both_backends(new_db):
    """A manifest cell may hold a NUL (PostgreSQL text cannot): both backends store U+FFFD in its place."""
    s = Store(new_db())
    cid = s.add_cohort(pd.DataFrame({"case_id": ["A\x00B"], "row": [2], "image": ["x\x00.dcm"], "sex": ["F"]}),
                       "c\x00", "site", "folder:/x", [])
    assert s.cases(cid).case_id.tolist() == ["A\ufffdB"] and s.cohort(cid)["name"] == "c\ufffd"


def test_identifying_manifest_columns_never_reach_either_database(new_db):
    s = Store(new_db())
    frame = pd.DataFrame({"case_id": ["a"], "row": [2], "image": ["x.dcm"], "sex": ["F"],
                          "identifying_patient_name": ["SMITHERS^JOHNATHAN"], "comparator_fels": [100.0]})
    cid = s.add_cohort(frame, "c", "site", "folder:/x", [])
    stored = json.dumps({t.name: s.rows(t.name) for t in store_module.DATA_TABLES})
    assert "SMITHERS" not in stored and "identifying_patient_name" not in stored and "comparator_fels" in stored
    assert s.add_cohort(frame, "opt-in", "site", "folder:/x", [], identifying_opt_in=True) != cid  # kept only by choice
    assert "SMITHERS" in json.dumps(s.rows("cases"))
