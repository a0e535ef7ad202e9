"""AppTest of the single-case page with imported models (issue #19): an ONNX model gives a bone age and says why it
has no saliency map; a TorchScript model shows one; the card's synthetic_demo flag, not the name, drives the
statement."""

import pytest
import torch
from streamlit.testing.v1 import AppTest

from kneeage.export import export_model
from kneeage.imported import import_model
from kneeage.model import BoneAgeNet, ModelCard, save_card, save_fold
from tests.conftest import ROOT
from tests.test_imported import BANDS, TINY


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    d = tmp_path_factory.mktemp("imp")
    torch.manual_seed(0)
    save_fold(BoneAgeNet(TINY), d / "tiny", 0)
    save_card(ModelCard(name="tiny", config=TINY, folds=1, interval=BANDS), d / "tiny")
    out = {}
    for fmt in ("onnx", "torchscript"):
        f, c = export_model(d / "tiny", fmt, d / f"tiny_{fmt}.{'onnx' if fmt == 'onnx' else 'pt'}")
        import_model(f, c, d / f"demo_named_{fmt}")  # named like the demo, but its card says not synthetic
        out[fmt] = d / f"demo_named_{fmt}"
    return out


def _single_case(model_dir):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["model_dir"] = str(model_dir)
    at.run()
    at.button(key="demo").click().run()
    assert not at.exception
    return at


def test_onnx_model_on_the_single_case_page(imported):
    at = _single_case(imported["onnx"])
    m = {x.label: x.value for x in at.metric}
    assert m["Bone age"].endswith(" mo)") and any(md.value.startswith("**90% interval:**") and md.value.endswith(" mo)")
                                                   for md in at.markdown)
    assert any("An imported ONNX file" in md.value for md in at.markdown)  # the readable card
    assert any("ONNX Runtime gives no gradients" in i.value for i in at.info)
    assert not any("synthetic demo model" in e.value for e in at.error)
    assert len(at.get("download_button")) == 2


def test_torchscript_model_shows_gradient_saliency(imported):
    at = _single_case(imported["torchscript"])
    assert at.selectbox(key="saliency").options == ["Vanilla gradient", "SmoothGrad"]
    assert not any("no gradients" in i.value for i in at.info) and len(at.get("image")) >= 2
