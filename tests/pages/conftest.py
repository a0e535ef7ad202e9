"""A tiny model for the page tests that exercise workflows rather than a model's judgement (validation, pooling,
reader studies, the image checker): the pages and the package find installed models in $KNEEAGE_MODELS, so a
test module that uses ``tiny_model`` sees only this one, and runs it instead of the 5-fold demo. The single-case
tests keep the bundled demo model: they check what it finds (the knee, a hand film)."""

import functools
import shutil

import pytest
import torch
from streamlit.components.v2 import manifest_scanner

from kneeage import phantom, readerstudy

from kneeage.model import BoneAgeNet, ModelCard, ModelConfig, save_card, save_fold
from tests.test_imported import BANDS

TINY = ModelConfig(arch="kneeage_convnext_nano_test", input_size=64, label_std=30.0)


@pytest.fixture(scope="session", autouse=True)
def _scan_installed_packages_once():
    """Every AppTest starts a Streamlit runtime, which reads the metadata of every installed package in
    search of custom components (kneeage has none): about a third of a second each time, and a fifth of the
    page suite. The installed packages do not change while the tests run, so the first scan serves them all."""
    original = manifest_scanner.scan_component_manifests
    manifest_scanner.scan_component_manifests = functools.cache(original)
    yield
    manifest_scanner.scan_component_manifests = original


@pytest.fixture(scope="session", autouse=True)
def _each_synthetic_cohort_rendered_once(tmp_path_factory):
    """The reader-study tests set up the same small synthetic study in a fresh home each time; its cohort
    is rendered once per session and copied after (rendering is seeded, so the files are the same)."""
    made = tmp_path_factory.mktemp("synthetic")

    def write_cohort(out, n, seed=0, size=512, **kw):
        key = made / f"{n}-{seed}-{size}-{sorted(kw.items())}"
        if not key.exists():
            phantom.write_cohort(key, n, seed, size, **kw)
        shutil.copytree(key, out, dirs_exist_ok=True)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(readerstudy, "write_cohort", write_cohort)  # what setup_study renders a [synthetic] cohort with
        yield


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A models folder holding one tiny 1-fold model, marked as a synthetic demo like the bundled one."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_fold(BoneAgeNet(TINY), root / "tiny", 0)
    save_card(ModelCard(name="tiny test model", config=TINY, folds=1, synthetic_demo=True, interval=BANDS,
                        training_data="untrained: for page tests"), root / "tiny")
    return root


@pytest.fixture
def tiny_model(tiny_models, monkeypatch):
    """The installed models are the tiny one only (the default model, in the pages and in ``Predictor()``)."""
    monkeypatch.setenv("KNEEAGE_MODELS", str(tiny_models))
    return tiny_models / "tiny"
