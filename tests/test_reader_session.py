"""The reading room's access (issue #18): unambiguous codes typed any way, a signed session token that survives a
reload but not a withdrawn or re-issued code, what the dashboard says is missing, what `study create` prints."""

import time

import pytest
from click.testing import CliRunner

from kneeage import access, readerstudy as rs
from kneeage.access import AccessError
from kneeage.store import Store
from tests.conftest import new_study

PROTOCOL = {"name": "session study", "seed": 2, "cases": {"sampling": "random", "n": 3},
            "arms": {"unassisted": True, "assisted": False, "repeats": 0}, "synthetic": {"n": 5, "seed": 6, "size": 128}}


@pytest.fixture
def study(tmp_path, monkeypatch):
    return new_study(tmp_path, monkeypatch, PROTOCOL)


def test_codes_use_no_ambiguous_characters_and_are_typed_any_way(study):
    store, sid = study
    for _ in range(5):
        code = rs.invite(store, sid, "Dr Clear")
        rid, *groups = code.split("-")
        assert len(rid) == 6 and [len(g) for g in groups] == [5, 5, 5]
        assert set(rid + "".join(groups)) <= set(rs.CODE_ALPHABET) and not set("01OIL") & set(code)
        for typed in (code, code.lower(), f"{rid}-{''.join(groups)}", f"  {rid}-{' '.join(groups)} "):
            assert rs.authenticate(store, typed)["id"] == rid  # case, spaces and dashes do not matter


def test_a_signed_token_keeps_a_reader_signed_in_until_the_code_changes(study):
    store, sid = study
    code = rs.invite(store, sid, "Dr Token")
    reader = rs.authenticate(store, code)
    token = rs.session_token(store, reader)
    assert code.split("-", 1)[1] not in token and reader["code"] not in token  # neither the code nor its hash
    assert rs.reader_from_token(store, token)["id"] == reader["id"]
    body, mac = token.split(".")
    assert rs.reader_from_token(store, body + "." + ("0" if mac[0] != "0" else "1") + mac[1:]) is None  # tampered
    assert rs.reader_from_token(store, "not-a-token") is None and rs.reader_from_token(store, None) is None
    expired = access.sign({"r": reader["id"], "f": "x"}, hours=-1)
    assert access.verify(expired) is None and access.verify(access.sign({"a": 1}))["a"] == 1
    later = access.verify(token, clock=lambda: time.time() + (access.SESSION_HOURS + 1) * 3600)
    assert later is None  # the session's lifetime
    rs.reissue(store, sid, reader["id"])
    with pytest.raises(AccessError, match="replaced by a new one"):
        rs.reader_from_token(store, token)
    fresh = rs.session_token(store, rs.authenticate(store, rs.reissue(store, sid, reader["id"])))
    rs.revoke(store, sid, reader["id"])
    with pytest.raises(AccessError, match="withdrawn"):
        rs.reader_from_token(store, fresh)
    assert (access.home() / "session_key").stat().st_mode & 0o777 == 0o600


def test_the_dashboard_says_why_a_result_is_missing(study):
    store, sid = study
    reader = rs.authenticate(store, rs.invite(store, sid, "Dr Alone"))
    while not isinstance(t := rs.next_task(store, reader), str):
        rs.submit(store, reader, t, 100.0, 3.0)
    reads = rs.reads_table(store, sid)
    analysis = rs.analyse(store, sid, reads=reads).as_dict()
    why = rs.why_missing(analysis, reads, rs.study_protocol(store, sid)[0])
    assert why["Inter-reader ICC"] == "needs at least two readers who have read the same 3 or more cases; so far 1 reader has read."
    assert "only the unassisted arm" in why["Assisted vs unassisted"]
    assert why["Intra-reader agreement"] == "the protocol has no repeat reads."
    from kneeage import report

    page = report.study_exports(store, sid, reads, analysis)["analysis.html"].decode()
    assert "<pre>" not in page and "Not available yet" in page and "Dr Alone" in page and "MAE 95% CI" in page


def test_study_create_prints_what_it_made_and_what_to_do_next(tmp_path, monkeypatch):
    from kneeage.cli import main

    monkeypatch.setenv("KNEEAGE_HOME", str(tmp_path))
    monkeypatch.setenv("KNEEAGE_DATABASE_URL", str(tmp_path / "k.db"))
    proto = tmp_path / "p.toml"
    proto.write_text('name = "cli study"\n[cases]\nsampling = "random"\nn = 3\n[arms]\nassisted = false\n'
                     '[synthetic]\nn = 5\nseed = 2\nsize = 128\n')
    r = CliRunner().invoke(main, ["study", "create", "--protocol", str(proto)])
    assert r.exit_code == 0, r.output
    sid = r.output.strip().splitlines()[-1]
    assert f"Created reader study 'cli study' (id {sid})" in r.output and "cases: 3 from cohort" in r.output
    assert f"python -m kneeage study invite {sid} --reader" in r.output and "Reading room" in r.output
    assert sid in rs.demo_cohort_ids(Store()) or Store().study(sid)["cohort_id"] in rs.demo_cohort_ids(Store())
