"""AppTest of the validation page with predictions made elsewhere (issue #19): a CSV of prediction columns and no
images → dry run → one run per column → results, exports, and the pairwise comparison of the two methods."""

import pytest

from tests.pages.test_validation_pages import _page
from tests.test_predictions import _manifest

pytestmark = pytest.mark.usefixtures("tiny_model")  # the workflow, not the model: a tiny one (conftest)

NO_IMAGES = "No images: predictions made elsewhere (CSV with prediction columns)"


def test_predictions_only_cohort_on_the_page(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEEAGE_HOME", str(tmp_path))
    at = _page("pages/validation.py")
    at.radio(key="source_kind").set_value(NO_IMAGES).run()
    at.file_uploader(key="manifest").upload("hand_models.csv", _manifest(), "text/csv").run()
    at.button(key="check").click().run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Usable"] == "30" and metrics["Warnings"] == "1"
    assert at.button(key="run").proto.label == "Record 2 prediction column(s) of 30 cases"
    at.button(key="run").click().run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Cases"] == "30 / 30" and float(metrics["MAE (months)"]) > 0
    assert any("made elsewhere: column predicted_bone_age_months" in c.value for c in at.caption)
    assert not any("Synthetic demo model" in e.value for e in at.error)
    assert any("this cohort has no images" in c.value for c in at.caption)  # no saliency gallery, and why
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download site_bundle.zip" in labels
    from kneeage.store import Store

    shown = at.selectbox(key="run_pick").value
    at.multiselect(key="compare_runs").set_value([r for r in Store().runs().id if r != shown]).run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    table = next(d.value for d in at.dataframe if "model_a" in d.value)
    assert len(table) == 1 and table.n.iloc[0] == 29 and table.model_b.iloc[0].startswith("bonexpert (column")
