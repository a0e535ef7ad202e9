"""Reader studies: protocols, access codes, blinding, order, answers, concurrency and the analysis."""

import io
import json
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from kneeage import access, readerstudy as rs, report, stats
from kneeage.access import AccessError
from kneeage.errors import InputError
from kneeage.store import Store
from kneeage.store import readers as readers_table
from tests.conftest import ROOT

PROTOCOL = {"name": "test study", "seed": 5, "cases": {"sampling": "stratified", "n": 6},
            "arms": {"unassisted": True, "assisted": True, "repeats": 3}, "design": {"order": "crossover"},
            "synthetic": {"n": 12, "seed": 3, "size": 160}}


@pytest.fixture(scope="module")
def home(tmp_path_factory, new_db):
    """The study folder, and the default database on the backend under test (SQLite there, or PostgreSQL)."""
    import os

    d = tmp_path_factory.mktemp("home")
    old = {k: os.environ.get(k) for k in ("KNEEAGE_HOME", "KNEEAGE_DATABASE_URL")}
    os.environ["KNEEAGE_HOME"] = str(d)
    os.environ["KNEEAGE_DATABASE_URL"] = new_db()
    yield d
    for k, v in old.items():
        if v is None:
            os.environ.pop(k)
        else:
            os.environ[k] = v


def _expire(store, reader_id):
    with store.engine.begin() as c:
        c.execute(sa.update(readers_table).where(readers_table.c.id == reader_id)
                  .values(expires=(datetime.now(timezone.utc) - timedelta(days=1)).isoformat()))


@pytest.fixture(scope="module")
def study(home):
    store = Store()
    sid = rs.setup_study(store, rs.Protocol.from_dict(PROTOCOL))
    return store, sid


def _answer_all(store, reader, rng, noise=8.0):
    refs = store.cases(store.study(reader["study_id"])["cohort_id"]).set_index("case_id").reference_bone_age_months
    while not isinstance(t := rs.next_task(store, reader), str):
        est = refs[t.case_id] + rng.normal(0, noise)
        rs.submit(store, reader, t, float(np.clip(est, 0, 240)), float(rng.uniform(5, 30)), 3)


def test_protocols_load_and_refuse_bad_settings():
    p = rs.Protocol.load(ROOT / "studies" / "demo.toml")
    assert p.arms == ["unassisted", "assisted"] and p.sampling == "stratified" and p.synthetic["n"] == 30
    with pytest.raises(InputError, match="unknown setting 'colour'"):
        rs.Protocol.from_dict({"name": "x", "display": {"colour": "red"}})
    with pytest.raises(InputError, match="sampling must be all, random or stratified"):
        rs.Protocol.from_dict({"name": "x", "cases": {"sampling": "some"}})
    with pytest.raises(InputError, match="at least one arm"):
        rs.Protocol.from_dict({"name": "x", "arms": {"unassisted": False, "assisted": False}})


def test_sampling_and_order_are_reproducible_from_the_seed(study):
    store, sid = study
    p, ids = rs.study_protocol(store, sid)
    assert len(ids) == 6 and ids == rs.sample_cases(store.cases(store.study(sid)["cohort_id"]), p)
    a1, a2 = rs.reader_order(p, ids, "ABC123", 0), rs.reader_order(p, ids, "ABC123", 0)
    assert a1 == a2
    assert [x["case_id"] for x in rs.reader_order(p, ids, "XYZ789", 0)] != [x["case_id"] for x in a1]
    assert a1[0]["arm"] == "unassisted" and rs.reader_order(p, ids, "ABC123", 1)[0]["arm"] == "assisted"  # crossover
    assert sum(x["repeat"] for x in a1) == 3 and len(a1) == 6 * 2 + 3


def test_codes_are_hashed_and_bad_expired_withdrawn_codes_refused(study):
    store, sid = study
    code = rs.invite(store, sid, "Dr Code")
    rid = code.split("-")[0]
    assert code not in json.dumps(store.rows("readers"))
    assert "code_hash" not in store.readers(sid).columns
    assert rs.authenticate(store, code)["id"] == rid
    for bad in ("", "nonsense", f"{rid}-wrong", code + "x", "ZZZZZZ-" + code.split("-", 1)[1]):
        with pytest.raises(AccessError, match="not valid"):
            rs.authenticate(store, bad)
    _expire(store, rid)
    with pytest.raises(AccessError, match="expired"):
        rs.authenticate(store, code)
    store.revoke(rid)
    with pytest.raises(AccessError, match="withdrawn"):
        rs.authenticate(store, code)


def test_wrong_codes_lock_out_their_client_only(study):
    """Issue 14.9: a stranger's wrong codes lock the stranger's session, never another reader's valid code;
    many clients together only slow a code down (at most a minute)."""
    store, sid = study
    code = rs.invite(store, sid, "Dr Lock")
    rid = code.split("-")[0]
    t0 = 1000.0  # a clock long past, so these failures do not lock out the other tests
    stranger = ("session:stranger",)
    for _ in range(access.CLIENT_MAX):
        with pytest.raises(AccessError, match="not valid"):
            rs.authenticate(store, f"{rid}-bad", stranger, clock=lambda: t0)
    with pytest.raises(AccessError, match="Too many wrong attempts from this browser"):
        rs.authenticate(store, code, stranger, clock=lambda: t0 + 1)
    assert rs.authenticate(store, code, ("session:dr-lock",), clock=lambda: t0 + 1)["name"] == "Dr Lock"
    # the stranger's session opens again after the window, and backs off doubling after that
    t = t0
    for _ in range(access.CLIENT_MAX):  # one more wrong code each time the lock ends: 20 in all
        t += access.WINDOW_S + 1
        with pytest.raises(AccessError, match="not valid"):
            rs.authenticate(store, "AAAAAA-bad", stranger, clock=lambda: t)
    with pytest.raises(AccessError, match="Too many"):  # now locked for twice the window
        rs.authenticate(store, code, stranger, clock=lambda: t + access.WINDOW_S + 1)
    assert rs.authenticate(store, code, stranger, clock=lambda: t + 2 * access.WINDOW_S + 1)["id"] == rid
    # a distributed attack on one code from many sessions: the code is slowed, and its reader waits ≤ 60 s
    t1 = 5000.0
    for i in range(access.TARGET_MAX):
        with pytest.raises(AccessError, match="not valid"):
            rs.authenticate(store, f"{rid}-guess{i}", (f"session:bot{i}",), clock=lambda: t1)
    with pytest.raises(AccessError, match="try again in"):
        rs.authenticate(store, code, ("session:dr-lock",), clock=lambda: t1 + 0.5)
    assert rs.authenticate(store, code, ("session:dr-lock",), clock=lambda: t1 + 1)["id"] == rid


def test_blinding_isolation_and_locked_answers(study):
    store, sid = study
    a = rs.authenticate(store, rs.invite(store, sid, "Dr A"))
    b = rs.authenticate(store, rs.invite(store, sid, "Dr B"))
    ta = rs.next_task(store, a)
    assert not hasattr(ta, "reference_bone_age_months") and "reference" not in repr(ta)
    assert ta.arm == "unassisted" and ta.model_estimate_months is None
    rs.submit(store, a, ta, 100.0, 10.0)
    with pytest.raises(AccessError, match="does not allow changes"):
        rs.submit(store, a, ta, 120.0, 10.0)
    assert rs.progress(store, b)[0] == 0 and rs.next_task(store, b).done == 0  # B sees nothing of A's
    wl_b = store.worklist(b["id"])
    forged = next(t for t in store.worklist(a["id"]).itertuples() if wl_b.case_id[t.position] != t.case_id)
    fake = rs.Task(forged.position, forged.case_id, forged.arm, False, None, None, None, 0, 1)
    with pytest.raises(AccessError, match="not on your worklist"):
        rs.submit(store, b, fake, 50.0, 1.0)
    tb = rs.next_task(store, b)  # B starts with the assisted arm (crossover): the model is shown
    assert tb.arm == "assisted" and tb.model_estimate_months is not None
    for bad, msg in ((-1.0, "between 0 and 240"), (241.0, "between 0 and 240"), (None, "between 0 and 240")):
        with pytest.raises(InputError, match=msg):
            rs.submit(store, b, tb, bad, 1.0)
    assert rs.submit(store, b, tb, None, 3.0, unreadable_reason="motion blur") == "saved"
    assert store.reads(reader_id=b["id"]).reason.tolist() == ["motion blur"]


def test_analysis_equals_stats_on_exported_reads(home, new_db):
    store = Store(new_db())
    sid = rs.setup_study(store, rs.Protocol.from_dict(PROTOCOL))
    rng = np.random.default_rng(1)
    for i in range(3):
        _answer_all(store, rs.authenticate(store, rs.invite(store, sid, f"Reader {i}")), rng)
    files = report.study_exports(store, sid)
    reads = pd.read_csv(io.BytesIO(files["reads.csv"]))
    analysis = json.loads(files["analysis.json"])
    assert len(reads) == 3 * 15 and analysis["n_reads"] == 45
    first = reads[reads["repeat"] == 0]
    for r in analysis["readers"]:
        for arm in ("unassisted", "assisted"):
            g = first[(first.reader_id == r["reader_id"]) & (first.arm == arm)]
            es = stats.error_summary(g.estimate_months, g.reference_bone_age_months, n_boot=1000)
            assert r[arm]["mae"] == pytest.approx(es.mae) and r[arm]["mae_ci"] == pytest.approx(list(es.mae_ci))
            c = stats.compare_errors(g.estimate_months, g.model_months, g.reference_bone_age_months, n_boot=1000)
            assert r[arm]["minus_model"]["difference"] == pytest.approx(c.mae_difference)
    un = first[first.arm == "unassisted"]
    icc = stats.icc(un, "case_id", "reader_id", "estimate_months")
    assert analysis["inter_reader_icc"][0]["icc"] == pytest.approx(icc.loc["ICC2", "icc"])
    assert len(analysis["intra_reader"]) == 3 and analysis["assisted_vs_unassisted"]["n_pairs"] == 18
    lo, hi = analysis["assisted_vs_unassisted"]["ci"]
    assert lo <= analysis["assisted_vs_unassisted"]["pooled_mae_difference"] <= hi
    audit = pd.read_csv(io.BytesIO(files["audit.csv"]))
    assert (audit.action == "read").sum() == 45
    assert b"analysis" in files["analysis.html"] or b"Reader study" in files["analysis.html"]


def test_fifty_readers_answering_at_once_lose_and_duplicate_nothing(home, new_db):
    path = new_db()
    store = Store(path)
    p = rs.Protocol.from_dict(PROTOCOL | {"arms": {"unassisted": True, "assisted": False, "repeats": 0}})
    sid = rs.setup_study(store, p)
    codes = [rs.invite(store, sid, f"R{i}") for i in range(50)]
    errors, barrier = [], threading.Barrier(50)

    def work(code, seed):
        try:
            s = Store(path)  # each reader its own connection, as each browser session would
            reader = rs.authenticate(s, code)
            barrier.wait()
            _answer_all(s, reader, np.random.default_rng(seed))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(c, i)) for i, c in enumerate(codes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    reads = store.reads(study_id=sid)
    assert len(reads) == 50 * 6 and not reads.duplicated(["reader_id", "position"]).any()
    assert [a["action"] for a in store.rows("audit")].count("read") == 300


def test_pi_password(home, new_db):
    store = Store(new_db())
    assert not access.pi_configured()
    with pytest.raises(AccessError, match="at least 10 characters"):
        access.set_pi_password("short")
    access.set_pi_password("correct horse battery")
    assert "correct horse" not in (home / "access.json").read_text()
    access.check_pi_password(store, "correct horse battery")
    with pytest.raises(AccessError, match="Wrong PI password"):
        access.check_pi_password(store, "wrong one")
    with pytest.raises(AccessError, match="current PI password is wrong"):
        access.set_pi_password("another password", "wrong one")
    access.set_pi_password("another password", "correct horse battery")
    access.check_pi_password(store, "another password")


def test_headless_administration(tmp_path, monkeypatch, new_db):
    from click.testing import CliRunner

    from kneeage.cli import main

    monkeypatch.setenv("KNEEAGE_HOME", str(tmp_path))
    monkeypatch.setenv("KNEEAGE_DATABASE_URL", new_db())
    proto = tmp_path / "p.toml"
    proto.write_text('name = "cli study"\nseed = 4\n[cases]\nsampling = "random"\nn = 3\n'
                     '[arms]\nassisted = false\n[synthetic]\nn = 6\nseed = 2\nsize = 128\n')
    run = CliRunner().invoke
    r = run(main, ["study", "create", "--protocol", str(proto)])
    assert r.exit_code == 0, r.output
    sid = r.output.strip().splitlines()[-1]
    r = run(main, ["study", "invite", sid, "--reader", "Dr One", "--reader", "Dr Two"])
    codes = [line.split("\t")[1] for line in r.output.strip().splitlines()]
    assert r.exit_code == 0 and len(codes) == 2
    store = Store()
    reader = rs.authenticate(store, codes[0])
    rs.submit(store, reader, rs.next_task(store, reader), 90.0, 4.0)
    r = run(main, ["study", "status", sid])
    status = [json.loads(line) for line in r.output.strip().splitlines()]
    assert [(s["reader"], s["done"], s["total"]) for s in status] == [("Dr One", 1, 3), ("Dr Two", 0, 3)]
    r = run(main, ["study", "export", sid, "--out", str(tmp_path / "out")])
    assert r.exit_code == 0 and len(pd.read_csv(tmp_path / "out" / "reads.csv")) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["analysis.html", "analysis.json", "audit.csv", "reads.csv"]
    r = run(main, ["study", "invite", "nosuch", "--reader", "X"])
    assert r.exit_code == 2 and "study 'nosuch' does not exist" in r.output
    # revoke and re-issue (issue 14.8), and the PI password set on the server (14.10)
    rid = codes[0].split("-")[0]
    r = run(main, ["study", "revoke", sid, rid])
    assert r.exit_code == 0 and store.reader(rid)["revoked"] == 1
    r = run(main, ["study", "reissue", sid, rid])
    new = r.output.strip()
    assert r.exit_code == 0 and new.startswith(rid + "-") and rs.authenticate(store, new)["id"] == rid
    assert run(main, ["study", "revoke", sid, "nobody"]).exit_code == 2
    r = run(main, ["pi-password"], input="short\nshort\n")
    assert r.exit_code == 2 and "at least 10 characters" in r.output and not access.pi_configured()
    r = run(main, ["pi-password"], input="a server-side password\na server-side password\n")
    assert r.exit_code == 0 and access.pi_configured()
    access.check_pi_password(store, "a server-side password")


def test_washout_and_allowed_changes(home, new_db):
    store = Store(new_db())
    p = rs.Protocol.from_dict(PROTOCOL | {"arms": {"unassisted": True, "assisted": True, "repeats": 0},
                                          "design": {"order": "unassisted_first", "washout_days": 7},
                                          "display": {"allow_changes": True}})
    sid = rs.setup_study(store, p)
    reader = rs.authenticate(store, rs.invite(store, sid, "Dr Wash"))
    for _ in range(6):  # the unassisted session
        t = rs.next_task(store, reader)
        rs.submit(store, reader, t, 80.0, 2.0)
    waiting = rs.next_task(store, reader)
    assert isinstance(waiting, str) and "after the 7-day washout" in waiting
    later = datetime.now(timezone.utc) + timedelta(days=8)
    assert rs.next_task(store, reader, now=later).arm == "assisted"
    again = rs.revisit(store, reader, 0)
    assert rs.submit(store, reader, again, 95.0, 3.0) == "changed"
    row = store.reads(reader_id=reader["id"]).set_index("position").loc[0]
    assert row.estimate_months == 95.0 and row.revision == 1
    with pytest.raises(AccessError, match="Only your own answered cases"):
        rs.revisit(store, reader, 9)


def test_revisit_is_refused_when_changes_are_not_allowed(study):
    store, sid = study
    reader = rs.authenticate(store, rs.invite(store, sid, "Dr Fixed"))
    rs.submit(store, reader, rs.next_task(store, reader), 70.0, 1.0)
    with pytest.raises(AccessError, match="does not allow changing"):
        rs.revisit(store, reader, 0)


def test_revoked_or_reissued_code_stops_an_open_session(study):
    """Issue 14.8: revoke and re-issue exist, and every request re-checks the reader's standing."""
    store, sid = study
    code = rs.invite(store, sid, "Dr Gone")
    reader = rs.authenticate(store, code)
    task = rs.next_task(store, reader)
    rs.revoke(store, sid, reader["id"])
    for call in (lambda: rs.next_task(store, reader), lambda: rs.submit(store, reader, task, 100.0, 5.0),
                 lambda: rs.task_image(store, reader, task)):
        with pytest.raises(AccessError, match="withdrawn"):
            call()
    assert not len(store.reads(reader_id=reader["id"]))
    new = rs.reissue(store, sid, reader["id"].lower())
    assert new != code and new.split("-")[0] == reader["id"]
    with pytest.raises(AccessError, match="not valid"):
        rs.authenticate(store, code)
    with pytest.raises(AccessError, match="replaced by a new one"):
        rs.next_task(store, reader)  # a session opened with the old code
    again = rs.authenticate(store, new)
    assert rs.next_task(store, again).position == task.position  # same worklist
    _expire(store, again["id"])
    with pytest.raises(AccessError, match="expired"):
        rs.submit(store, again, task, 100.0, 5.0)
    with pytest.raises(InputError, match="not in study"):
        rs.revoke(store, sid, "ZZZZZZ")
    actions = [a["action"] for a in store.rows("audit") if a["detail"] == reader["id"]]
    assert "revoke reader" in actions and "reissue code" in actions
