"""AppTest of the reading room and the PI dashboard (access, blinding, answers, analysis)."""

import pytest
from streamlit.testing.v1 import AppTest

from kneeage import access, readerstudy as rs
from kneeage.store import Store
from tests.conftest import ROOT, new_study

pytestmark = pytest.mark.usefixtures("tiny_model")  # the workflow, not the model: a tiny one (conftest)

PROTOCOL = {"name": "page study", "seed": 9, "cases": {"sampling": "random", "n": 4},
            "arms": {"unassisted": True, "assisted": True, "repeats": 0}, "synthetic": {"n": 8, "seed": 4, "size": 160}}


@pytest.fixture
def study(tmp_path, monkeypatch):
    return new_study(tmp_path, monkeypatch, PROTOCOL)


def _app(path):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    at.switch_page(path).run()
    assert not at.exception
    return at


def _texts(at):
    return " ".join(str(getattr(e, "value", "")) for e in at.main)


def test_reader_enters_code_reads_and_sees_only_their_worklist(study):
    store, sid = study
    code = rs.invite(store, sid, "Dr Page")
    at = _app("pages/reading_room.py")
    at.text_input(key="code").set_value("ABCDEF-wrong")
    at.button(key="enter").click().run()
    assert [e.value for e in at.error] == ["This access code is not valid."]
    at.text_input(key="code").set_value(code)
    at.button(key="enter").click().run()
    assert not at.exception and "Case 1 of 8" in [h.value for h in at.subheader]
    refs = store.cases(store.study(sid)["cohort_id"]).reference_bone_age_months
    assert "reference" not in _texts(at).lower() and not at.info  # unassisted: no model either
    at.button(key="submit").click().run()
    assert "Enter the bone age" in at.error[0].value
    at.number_input(key="years_0").set_value(9)
    at.number_input(key="months_0").set_value(6)
    at.button(key="submit").click().run()
    assert not at.exception and "Case 2 of 8" in [h.value for h in at.subheader]
    read = store.reads(study_id=sid)
    assert read.estimate_months.tolist() == [114.0] and read.seconds.iloc[0] > 0
    for _ in range(3):
        pos = rs.next_task(store, rs.authenticate(store, code)).position
        at.number_input(key=f"years_{pos}").set_value(10)
        at.button(key="submit").click().run()
    assert any("Model's estimate" in i.value for i in at.info)  # the assisted arm shows the model
    assert len(at.get("image")) == 1  # and its saliency
    # the same browser session cannot open the PI dashboard without the PI password
    at.switch_page("pages/study_admin.py").run()
    assert not at.get("dataframe") and at.title[0].value == "Reader studies (PI)"
    assert any("No PI password is set yet" in i.value for i in at.info)
    assert all(f"{v:.1f}" not in _texts(at) for v in refs)


def test_pi_first_run_sign_in_invite_and_analysis(study):
    store, sid = study
    at = _app("pages/study_admin.py")
    # issue 14.10: the first visitor cannot set the PI password; the one-time token from the server can
    assert any("one-time setup token" in i.value for i in at.info)
    token_file = access.home() / "pi_setup_token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    for token in ("", "a guess"):
        at.text_input(key="pi_token").set_value(token)
        at.text_input(key="pi_new").set_value("a long pi password")
        at.text_input(key="pi_again").set_value("a long pi password")
        at.button(key="pi_set").click().run()
        assert any("setup token is wrong" in e.value for e in at.error) and not access.pi_configured()
    at.text_input(key="pi_token").set_value(token_file.read_text())
    at.button(key="pi_set").click().run()
    assert not at.exception and access.pi_configured() and not token_file.exists()
    at.text_input(key="invite_name").set_value("Dr New")
    at.button(key="invite").click().run()
    code = at.code[0].value
    assert rs.authenticate(store, code)["name"] == "Dr New"
    reader = rs.authenticate(store, code)
    while not isinstance(t := rs.next_task(store, reader), str):
        rs.submit(store, reader, t, 100.0, 5.0)
    at.run()
    assert not at.exception
    table = at.dataframe[1].value  # after the progress table
    assert set(table.Arm) == {"unassisted", "assisted"} and set(table.Reader) == {"Dr New"}
    assert "MAE 95% CI" in table.columns and not table.astype(str).apply(lambda c: c.str.contains("None")).any().any()
    # with one reader, inter-reader agreement cannot be computed: the dashboard says why
    assert any(i.value.startswith("Inter-reader ICC: needs at least two readers") for i in at.info)
    assert [b.proto.label for b in at.get("download_button")] == [
        "Download reads.csv", "Download analysis.json", "Download analysis.html", "Download audit.csv"]
    at.text_input(key="pw_current").set_value("a long pi password")
    at.text_input(key="pw_new").set_value("a new long pi password")
    at.button(key="pw_change").click().run()
    assert any("was changed" in x.value for x in at.success)
    access.check_pi_password(store, "a new long pi password")
    # a new session must sign in; a wrong password is refused
    other = _app("pages/study_admin.py")
    assert not other.get("dataframe")
    other.text_input(key="pi_password").set_value("not it")
    other.button(key="pi_login").click().run()
    assert [e.value for e in other.error] == ["Wrong PI password."] and not other.get("dataframe")


@pytest.mark.parametrize("page", ["pages/validation.py", "pages/pooling.py", "pages/study_admin.py"])
def test_a_reader_session_reaches_no_pi_page(study, page):
    store, sid = study
    access.set_pi_password("the pi's own password")
    code = rs.invite(store, sid, "Dr Curious")
    at = _app("pages/reading_room.py")
    at.text_input(key="code").set_value(code)
    at.button(key="enter").click().run()
    assert at.subheader and "Case 1" in at.subheader[0].value
    assert not any("Model:" in c.value for c in at.sidebar.caption)  # a reader's sidebar names no model (and, in a
    # browser, lists no PI page: tests/e2e); AppTest opens the page file itself, which still asks for the PI password
    at.switch_page(page).run()
    assert not at.exception
    assert [t.value for t in at.text_input] == [""] and at.text_input[0].label == "PI password"
    assert not at.get("file_uploader") and not at.get("dataframe") and not at.metric and not at.get("plotly_chart")
    at.text_input(key="pi_password").set_value(code)  # the reader's code is not a PI password
    at.button(key="pi_login").click().run()
    assert [e.value for e in at.error] == ["Wrong PI password."] and not at.get("dataframe")


def test_reader_changes_an_earlier_answer_when_the_protocol_allows(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEEAGE_HOME", str(tmp_path))
    store = Store()
    sid = rs.setup_study(store, rs.Protocol.from_dict(PROTOCOL | {"arms": {"assisted": False},
                                                                  "display": {"allow_changes": True}}))
    code = rs.invite(store, sid, "Dr Change")
    at = _app("pages/reading_room.py")
    at.text_input(key="code").set_value(code)
    at.button(key="enter").click().run()
    at.number_input(key="years_0").set_value(5)
    at.button(key="submit").click().run()
    at.selectbox(key="revisit_pick").set_value(0)
    at.button(key="revisit").click().run()
    assert at.subheader[0].value == "Changing your answer to case 1"
    at.number_input(key="years_0").set_value(7)
    at.button(key="submit").click().run()
    assert not at.exception
    row = store.reads(study_id=sid).set_index("position").loc[0]
    assert row.estimate_months == 84.0 and row.revision == 1
