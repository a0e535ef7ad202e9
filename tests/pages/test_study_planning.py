"""AppTest of the PI dashboard's ORH analysis and the planning section (issue #21)."""

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from kneeage import access, planning, readerstudy as rs
from tests.conftest import ROOT, new_study

pytestmark = pytest.mark.usefixtures("tiny_model")  # the workflow, not the model: a tiny one (conftest)

PROTOCOL = {"name": "orh page study", "seed": 9, "cases": {"sampling": "random", "n": 4},
            "arms": {"unassisted": True, "assisted": True, "repeats": 0}, "synthetic": {"n": 8, "seed": 4, "size": 160}}


@pytest.fixture
def study(tmp_path, monkeypatch):
    store, sid = new_study(tmp_path, monkeypatch, PROTOCOL)
    refs = store.cases(store.study(sid)["cohort_id"]).set_index("case_id").reference_bone_age_months
    rng = np.random.default_rng(1)
    for name in ("Dr One", "Dr Two"):
        reader = rs.authenticate(store, rs.invite(store, sid, name))
        while not isinstance(t := rs.next_task(store, reader), str):
            rs.submit(store, reader, t, float(np.clip(refs[t.case_id] + rng.normal(0, 10), 0, 240)), 5.0)
    access.set_pi_password("a long pi password")
    return store, sid


def test_dashboard_shows_orh_first_and_the_bootstrap_as_sensitivity_analysis_and_plans(study):
    store, sid = study
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/study_admin.py").run()
    at.text_input(key="pi_password").set_value("a long pi password")
    at.button(key="pi_login").click().run()
    assert not at.exception
    assert set(at.dataframe[1].value.Arm) == {"unassisted", "assisted"}  # the reader table keeps its place
    orh = next(d.value for d in at.dataframe if "comparison" in d.value.columns)
    assert "assisted − unassisted" in set(orh.quantity) and "readers − model" in set(orh.quantity)
    assert any("Primary analysis: ORH MRMC" in m.value for m in at.markdown)
    assert any("Sensitivity analysis (bootstrap)" in m.value for m in at.markdown)
    at.button(key="plan_cohort").click().run()
    cohort = next(d.value for d in at.dataframe if "criterion" in d.value.columns)
    want = planning.plan_cohort(mae=5.0, mae_half_width=0.5, sd_error=6.3, loa_half_width=2.0, sd_reference=50.0)
    assert cohort.n.tolist() == want.n.tolist() and all(cohort.assumption)
    at.selectbox(key="plan_pilot").set_value(sid)
    at.button(key="plan_readers").click().run()
    assert not at.exception and not at.error
    grid = next(d.value for d in at.dataframe if "readers" in d.value.columns and "power" in d.value.columns)
    comps = planning.pilot_from_reads(rs.reads_table(store, sid))
    comps.pop("observed_difference")
    assert grid.cases.tolist() == planning.plan_reader_study(1.0, **comps).cases.tolist()
