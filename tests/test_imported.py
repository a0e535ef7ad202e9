"""Imported models (issue #19): a tiny kneeage network exported to ONNX and TorchScript, imported back with its
card, and run through predict, validate and a reader study's assisted arm; malformed models and cards refused
with one sentence each."""

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from kneeage import case, compare, readerstudy as rs, validation
from kneeage.cli import main
from kneeage.cohort import FolderSource, check_cohort, read_manifest
from kneeage.errors import ModelError
from kneeage.export import export_model
from kneeage.imaging import load_radiograph
from kneeage.imported import card_toml, import_model, read_card
from kneeage.model import BoneAgeNet, ModelCard, ModelConfig, model_hash, save_card, save_fold
from kneeage.phantom import render_knee, write_cohort
from kneeage.predict import Predictor, list_models
from kneeage.store import Store

TINY = ModelConfig(arch="kneeage_convnext_nano_test", input_size=48, label_std=10.0)
BANDS = {"level": 0.9, "overall_half_width_months": 12.0, "bands": [
    {"from_months": 0, "to_months": 120, "half_width_months": 10.0},
    {"from_months": 120, "to_months": 1000, "half_width_months": 14.0}]}
FORMATS = ("onnx", "torchscript")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny 2-fold kneeage model, exported to both formats and imported back."""
    d = tmp_path_factory.mktemp("imported")
    torch.manual_seed(0)
    for k in range(2):
        save_fold(BoneAgeNet(TINY), d / "models" / "tiny", k)
    save_card(ModelCard(name="tiny", config=TINY, folds=2, interval=BANDS, label_range_months=(0.0, 216.0)),
              d / "models" / "tiny")
    out = {"dir": d, "kneeage": d / "models" / "tiny"}
    for fmt in FORMATS:
        f, c = export_model(d / "models" / "tiny", fmt, d / "exports" / f"tiny.{'onnx' if fmt == 'onnx' else 'pt'}")
        out[f"{fmt}_file"], out[f"{fmt}_card"] = f, c
        import_model(f, c, d / "models" / f"tiny_{fmt}")
        out[fmt] = d / "models" / f"tiny_{fmt}"
    return out


@pytest.fixture(scope="module")
def knees():
    return [(render_knee(a, s, rng=i, size=96).pixels, s) for i, (a, s) in enumerate([(30, "F"), (100, "M"), (180, "F")])]


def _tiny_module(forward):
    """A TorchScript/ONNX-exportable module whose forward is ``forward(net, *inputs)`` around one tiny fold."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.net = BoneAgeNet(TINY).eval()

        def forward(self, *args):
            return forward(self.net, *args)
    return M().eval()


def _onnx(module, args, names, path):
    torch.onnx.export(module, args, str(path), input_names=names, output_names=["bone_age_months"], dynamo=False, opset_version=17)
    return path


def test_export_then_import_gives_the_same_predictions(work, knees):
    ref = Predictor(work["kneeage"], device="cpu")
    for fmt in FORMATS:
        imp = Predictor(work[fmt], device="cpu")
        for pixels, sex in knees:
            a, b = ref.predict(pixels, sex, box="auto"), imp.predict(pixels, sex, box="auto")
            assert abs(a.bone_age_months - b.bone_age_months) < 1e-4
            assert b.interval_months == pytest.approx(a.interval_months, abs=1e-4) and b.interval_level == 0.9
        assert imp.card.imported["format"] == fmt and imp.hash == imp.card.imported["sha256"][:16] == model_hash(work[fmt])
        assert imp.hash != ref.hash and fmt in imp.source
    card = read_card(work["onnx_card"])  # the written card reads back to itself
    assert card.sex_encoding == {"F": 0.0, "M": 1.0} and card.range_months == (0.0, 216.0) and card.size == 48
    assert card_toml(card) == work["onnx_card"].read_text()


def test_imported_models_are_model_directories_like_any_other(work, knees):
    assert {"tiny", "tiny_onnx", "tiny_torchscript"} <= set(list_models(work["dir"] / "models"))
    rad = load_radiograph(_png(work["dir"], knees[1][0]))
    for fmt in FORMATS:
        pred = Predictor(work[fmt], device="cpu")
        result, x = case.analyse(pred, rad, "M", 100.0)
        d = result.as_dict()
        assert d["model_hash"] == pred.hash and d["synthetic_demo"] is False and "notice" not in d and x.shape == (48, 48)
        assert result.sds is not None


def test_synthetic_demo_statement_keys_off_the_card_not_the_name(work, knees, tmp_path):
    text = work["onnx_card"].read_text().replace("synthetic_demo = false", "synthetic_demo = true")
    (tmp_path / "card.toml").write_text(text)
    import_model(work["onnx_file"], tmp_path / "card.toml", tmp_path / "vendor model")
    p = Predictor(tmp_path / "vendor model", device="cpu").predict(knees[0][0], "F")
    assert p.synthetic_demo and case.DEMO_STATEMENT in json.dumps(
        case.CaseResult("x", "F", None, (0, 0, 1, 1), p, None).as_dict())


def test_saliency_where_gradients_exist_and_a_sentence_where_not(work, knees):
    ts, ox = Predictor(work["torchscript"], device="cpu"), Predictor(work["onnx"], device="cpu")
    x = ts.prepare(knees[0][0], "auto")
    for method in ("gradient", "smoothgrad"):
        m = ts.saliency(x, "F", method, samples=2)
        assert m.shape == (48, 48) and 0 <= m.min() and m.max() == pytest.approx(1.0) and m.std() > 0
    assert ts.saliency_methods == ("gradient", "smoothgrad") and ox.saliency_methods == ()
    with pytest.raises(ModelError, match="Grad-CAM needs the network's layers"):
        ts.saliency(x, "F", "gradcam")
    with pytest.raises(ModelError, match="ONNX Runtime gives no gradients") as e:
        ox.saliency(x, "F", "gradient")
    assert str(e.value).count(". ") == 0 and str(e.value).endswith(".")


def test_validate_compare_and_the_reader_study_assisted_arm(work, tmp_path):
    write_cohort(tmp_path / "c", 8, seed=5, size=96, fmt="png")
    source = FolderSource(tmp_path / "c")
    store = Store(tmp_path / "db.sqlite")
    check = check_cohort(read_manifest(tmp_path / "c" / "manifest.csv"), source, model=Predictor(work["kneeage"], device="cpu"))
    cid = validation.ingest(store, check, "c", "Site", source)
    runs = {name: validation.run_model(store, cid, Predictor(work[name], device="cpu"), source, cache=check.inputs)
            for name in ("kneeage", *FORMATS)}
    tables = {}
    for name, rid in runs.items():
        cases, result, meta = validation.results_for(store, rid, n_boot=200)
        summary = result.as_dict()
        assert summary["n"] == 8 and summary["mae"] > 0
        tables[name] = cases.predicted_bone_age_months.to_numpy()
        if name != "kneeage":
            assert meta["prediction_source"].startswith(f"imported {name} file tiny.")
    for fmt in FORMATS:  # kneeage's own run read the dry run's inputs, kept as float16; the others made their own
        assert np.abs(tables[fmt] - tables["kneeage"]).max() < 1e-2
    cmp = compare.compare_models(store, list(runs.values()), n_boot=200)
    assert len(cmp.table) == 3 and (cmp.table.n == 8).all()
    assert cmp.table.mae_difference.abs().max() < 1e-2 and cmp.table.class_agreement.min() == 1.0
    # the reader study's assisted arm shows the imported model's estimate
    p = rs.Protocol.from_dict({"name": "imported", "arms": {"unassisted": False, "assisted": True}})
    sid = rs.setup_study(store, p, Predictor(work["onnx"], device="cpu"), cid)
    assert store.study(sid)["run_id"] == runs["onnx"]
    reader = rs.authenticate(store, rs.invite(store, sid, "Dr A"))
    task = rs.next_task(store, reader)
    assert task.arm == "assisted"
    assert task.model_estimate_months == pytest.approx(store.predicted(runs["onnx"], task.case_id))


# ---------------------------------------------------------------------------------- refusals


def _card(work, tmp_path, old=None, new=None, name="card.toml"):
    text = work["onnx_card"].read_text()
    if old is not None:
        assert old in text
        text = text.replace(old, new)
    (tmp_path / name).write_text(text)
    return tmp_path / name


def _one_sentence(e):
    msg = str(e.value)
    assert msg.endswith(".") and msg.count(". ") == 0 and "\n" not in msg, msg
    return msg


def test_wrong_input_rank_is_refused(work, tmp_path):
    m = _tiny_module(lambda net, x, sex: net(x[:, None], sex))  # takes N × S × S
    f = _onnx(m, (torch.zeros(2, 48, 48), torch.zeros(2)), ["image", "sex"], tmp_path / "rank3.onnx")
    with pytest.raises(ModelError) as e:
        import_model(f, work["onnx_card"], tmp_path / "out")
    assert _one_sentence(e).startswith("rank3.onnx: input 'image' has rank 3") and not (tmp_path / "out").exists()


def test_missing_sex_input_is_refused(work, tmp_path):
    m = _tiny_module(lambda net, x: net(x, torch.zeros(x.shape[0])))  # image only
    f = _onnx(m, (torch.zeros(2, 1, 48, 48),), ["image"], tmp_path / "nosex.onnx")
    with pytest.raises(ModelError) as e:
        import_model(f, work["onnx_card"], tmp_path / "out")
    assert _one_sentence(e).startswith("nosex.onnx has no input 'sex', which the card declares as the sex input")
    torch.jit.trace(m, (torch.zeros(2, 1, 48, 48),)).save(str(tmp_path / "nosex.pt"))
    with pytest.raises(ModelError) as e:
        import_model(tmp_path / "nosex.pt", work["onnx_card"], tmp_path / "out")
    assert _one_sentence(e).startswith("nosex.pt takes 1 input(s)")


def test_output_in_years_declared_as_months_is_refused(work, tmp_path):
    m = _tiny_module(lambda net, x, sex: net(x, sex) / 12)
    f = _onnx(m, (torch.zeros(2, 1, 48, 48), torch.zeros(2)), ["image", "sex"], tmp_path / "years.onnx")
    with pytest.raises(ModelError) as e:
        import_model(f, work["onnx_card"], tmp_path / "out")
    assert "which look like years, but the card declares the output in months" in _one_sentence(e)
    card = _card(work, tmp_path, 'unit = "months"', 'unit = "years"', "years.toml")  # declared right: imported
    mc = import_model(f, card, tmp_path / "ok")
    assert all(90 < v < 130 for v in mc.imported["check"]["phantom_outputs_months"])


@pytest.mark.parametrize("old,new,expected", [
    ('unit = "months"\n', "", "card.toml: output.unit (months or years) is missing."),
    ('[input]', '[inptu]', "card.toml: unknown key 'inptu' at the top level"),
    ("sex_encoding = { F = 0.0, M = 1.0 }", "sex_encoding = { F = 0.0 }", "card.toml: inputs.sex_encoding must give the number"),
    ("size = 48", "size = 48.5", "card.toml: input.size must be a whole number"),
    ("trained_age_range_months = [0.0, 216.0]", "trained_age_range_months = [0.0, 2160.0]", "beyond the 0-300 months"),
    ("size = 48", "size = 47", "tiny.onnx: input 'image' has shape ['n', 1, 48, 48], but the card gives image (N × 1 × 47 × 47)"),
    ('name = "tiny (exported)"', 'name = "tiny', "card.toml: the card is not valid TOML"),
])
def test_malformed_cards_are_refused_with_one_sentence(work, tmp_path, old, new, expected):
    with pytest.raises(ModelError) as e:
        import_model(work["onnx_file"], _card(work, tmp_path, old, new), tmp_path / "out")
    assert expected in str(e.value) and str(e.value).endswith(".") and "\n" not in str(e.value)


def test_unreadable_model_files_are_refused(work, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    (tmp_path / "junk.h5").write_bytes(b"x")
    for f, text in (("junk.onnx", "junk.onnx: not a readable ONNX model"), ("junk.pt", "junk.pt: not a readable TorchScript model"),
                    ("junk.h5", "junk.h5: not an .onnx or TorchScript (.pt) file")):
        with pytest.raises(ModelError, match=re.escape(text)):
            import_model(tmp_path / f, work["onnx_card"], tmp_path / "out")
    with pytest.raises(ModelError, match="already an imported onnx model|it is an imported onnx model"):
        export_model(work["onnx"], "onnx", tmp_path / "again.onnx")


def test_cli_export_and_import(work, tmp_path):
    r = CliRunner().invoke(main, ["export-model", str(work["kneeage"]), "--format", "torchscript", "--out",
                                  str(tmp_path / "x.pt")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["card"].endswith("x.toml")
    png = _png(tmp_path, render_knee(90, "F", rng=3, size=96).pixels)
    r = CliRunner().invoke(main, ["import-model", str(tmp_path / "x.pt"), "--card", str(tmp_path / "x.toml"), "--out",
                                  str(tmp_path / "m"), "--test-image", str(png)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["format"] == "torchscript" and len(out["phantom_outputs_months"]) == 4
    r = CliRunner().invoke(main, ["import-model", str(work["onnx_file"]), "--card", str(work["onnx_file"]), "--out",
                                  str(tmp_path / "n")])
    assert r.exit_code == 2 and "error: tiny.onnx: the card is not valid TOML" in r.output


def _png(folder, pixels):
    from PIL import Image

    path = folder / "knee.png"
    if not path.exists():
        Image.fromarray((np.clip(pixels, 0, 1) * 255).astype("uint8")).save(path)
    return path

