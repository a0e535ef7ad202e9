"""Inference: the fold ensemble with flip test-time augmentation, calibrated interval, QC flags and
saliency (captum: vanilla gradient, SmoothGrad, Grad-CAM on the backbone's last stage)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from scipy import ndimage

from . import units
from .calibration import calibrate_output, feature_distance, half_width, load_feature_qc
from .config import BUNDLED_MODELS, default_model_dir, models_root
from .conventions import is_knee_part, require_sex
from .errors import InputError, ModelError
from .imported import load_runner
from .localise import Framer, Framing, Localiser
from .model import ModelCard, fold_paths, last_stage, load_card, load_fold, model_hash
from .preprocess import normalise

DEFAULT_MODEL_DIR = BUNDLED_MODELS / "demo"  # the bundled demo model (the default is config.default_model_dir())


def list_models(root: str | Path | None = None) -> dict[str, Path]:
    """Installed model directories (those holding a model_card.json) by name, the demo model first; ``root``
    defaults to $KNEEAGE_MODELS, else the project's models/."""
    root = Path(root) if root is not None else models_root()
    dirs = sorted((p.parent for p in root.glob("*/model_card.json")), key=lambda p: (p.name != "demo", p.name))
    return {p.name: p for p in dirs}

FLAG_TEXT = {
    "not_a_knee": "The image does not look like a knee radiograph to this model.",
    "unlike_training": "The image is unlike the model's training images; treat the estimate with caution.",
    "outside_age_range": "The estimate lies at or beyond the edge of the ages the model was trained on.",
    "folds_disagree": "The ensemble's folds disagree more than usual on this image.",
    "skeletally_mature": "Skeletally mature at the knee as far as this model can tell.",
    "box_misses_knee": "Your box does not contain the knee this model finds on the film; check the box, or override if you are sure.",
}
# Flags that withhold the number: the model refuses (not a knee, far from its training images) or can only
# say "at least" (a knee at the top of the trained range: censored). Validation and reader-study analyses
# leave withheld cases out of agreement statistics and count them by reason.
REFUSALS = ("not_a_knee", "box_misses_knee", "unlike_training", "skeletally_mature")
# The saliency map shown by default where a model's card records no measurement: on phantom knees the
# gradient maps put more of their mass on the physes than Grad-CAM, which lights up soft tissue and the
# input's corners (bench/saliency_physes.py; docs/saliency.md).
DEFAULT_SALIENCY = "gradient"


@dataclass(frozen=True)
class PreparedCase:
    """One case ready for the model: its input (None when it could not be prepared, ``error`` saying why)."""

    key: object
    input: np.ndarray | None
    sex: str | None = None
    chron: float | None = None
    body_part: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Prediction:
    bone_age_months: float
    interval_months: tuple[float, float]
    interval_level: float
    fold_values_months: tuple[float, ...]
    flags: tuple[str, ...]
    model_name: str
    model_hash: str
    synthetic_demo: bool
    feature_distance: float = field(default=float("nan"))
    censored_from_months: float | None = None  # "skeletally mature": the bone age is at least this
    interval_widened: bool = False  # the folds disagreed beyond the calibrated interval, which now holds them all

    @property
    def flag_messages(self) -> list[str]:
        return [FLAG_TEXT[f] for f in self.flags]

    @property
    def refusal(self) -> str | None:
        """The first flag that withholds the number (see REFUSALS), or None."""
        return next((f for f in self.flags if f in REFUSALS), None)

    @property
    def refusal_text(self) -> str | None:
        """What to show instead of a number."""
        if self.refusal == "skeletally_mature":
            return (f"Skeletally mature at the knee: bone age at least {years_months(self.censored_from_months)} "
                    f"({self.censored_from_months:.0f} months); this model cannot tell older knees apart.")
        if self.refusal == "not_a_knee":
            return "No bone age: this does not look like a knee radiograph to the model."
        if self.refusal == "unlike_training":
            return "No bone age: the image is too unlike the model's training images to be read."
        if self.refusal == "box_misses_knee":
            return "No bone age: your box does not contain the knee this model finds on the film; check the box."
        return None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["interval_months"] = list(self.interval_months)
        d["fold_values_months"] = list(self.fold_values_months)
        d["flags"] = list(self.flags)
        return d


def interval_text(interval, digits: int = 1) -> str:
    """'lo – hi months', or a sentence when the model gives no interval (an imported model without an
    interval rule)."""
    if interval is None or not all(np.isfinite(v) for v in interval):
        return "none (the model's card gives no interval rule)"
    return f"{interval[0]:.{digits}f} – {interval[1]:.{digits}f} months"


def years_months(months: float) -> str:
    """12.5 → '1 y 1 mo' style text for display (rounded half up to whole months; see kneeage.units)."""
    return units.years_months(months)


class Predictor:
    """Loads a model directory once; predicts bone age for images (numpy, [0, 1], bone bright)."""

    def __init__(self, model_dir: str | Path | None = None, device: str | None = None):
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.card: ModelCard = load_card(self.model_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.runner = None  # an imported ONNX/TorchScript model (kneeage.imported) runs through its runner
        if self.card.imported:
            self.runner = load_runner(self.model_dir, self.card.imported, device)
            self.models = []
        else:
            paths = fold_paths(self.model_dir)
            if not paths:
                raise ModelError(f"{self.model_dir}: no fold_<k>.safetensors weights found.")
            self.models = [load_fold(self.card.config, p).to(self.device) for p in paths]
        cfg = self.card.config
        localiser = Localiser.load(self.model_dir, self.card.localiser) if self.card.localiser else None
        self.framer = Framer(cfg.input_size, None if self.runner else cfg.spacing_mm, localiser, cfg.intensity)
        self.hash = model_hash(self.model_dir)
        qc = self.card.qc or {}
        self._feature_qc = load_feature_qc(self.model_dir, qc)

    @property
    def input_size(self) -> int:
        return self.card.config.input_size

    @property
    def default_saliency(self) -> str:
        """The saliency method shown first: the one the model card records as pointing most at the physes
        (``results.saliency_on_physes``, measured by bench/saliency_physes.py), else :data:`DEFAULT_SALIENCY`."""
        methods = self.saliency_methods
        measured = (self.card.results or {}).get("saliency_on_physes", {}).get("default")
        for m in (measured, DEFAULT_SALIENCY, *methods):
            if m in methods:
                return m
        return DEFAULT_SALIENCY

    @property
    def saliency_methods(self) -> tuple[str, ...]:
        """The saliency methods this model supports (none for ONNX: no gradients)."""
        return self.runner.saliency_methods if self.runner is not None else ("gradient", "smoothgrad", "gradcam")

    @property
    def source(self) -> str:
        """Where this model's predictions come from, in words (for exports and site bundles)."""
        imp = self.card.imported
        if imp:
            return (f"imported {imp['format']} file {imp.get('original_file', imp['file'])} (sha256 {imp['sha256'][:16]}) "
                    f"with card {imp.get('card_file', 'card.toml')}, model directory {self.model_dir.name}")
        return f"kneeage model directory {self.model_dir.name} ({self.card.folds} folds, weights hash {self.hash})"

    def frame(self, pixels: np.ndarray, box="auto", spacing_mm=None) -> Framing:
        """Where the model looks on this image (kneeage.localise): the region (user's box, else the
        localiser's) and, for a model framed in millimetres, the window and the spacing used."""
        return self.framer.frame(pixels, box, spacing_mm)

    def prepare(self, pixels: np.ndarray, box="auto", spacing_mm=None, framing: Framing | None = None) -> np.ndarray:
        """The model's input for an image, in [0, 1]. ``spacing_mm``: the image's pixel spacing (header, or
        given by the user); a model framed in millimetres estimates it from the anatomy when it is None."""
        if self.runner is not None:
            return self.runner.prepare(pixels, box, spacing_mm)
        return self.framer.input(pixels, framing or self.frame(pixels, box, spacing_mm))

    @torch.no_grad()
    def predict_inputs(self, inputs: np.ndarray, sexes, chron=None, flip: bool = True):
        """Batch of prepared inputs (N, S, S) → (ensemble mean (N,), per fold (F, N), features (N, C)).
        An imported model is one 'fold' and has no features (None)."""
        if self.runner is not None:
            y = self.runner.predict(np.asarray(inputs, np.float32), list(sexes), None if chron is None else list(chron))
            return y, y[None], None
        x = normalise(torch.from_numpy(np.asarray(inputs, np.float32))[:, None].to(self.device))
        sex = torch.tensor([_sex_code(s) for s in sexes], dtype=torch.float32, device=self.device)
        ch = None
        if self.card.config.use_chron_age:
            if chron is None or any(c is None or not np.isfinite(c) for c in chron):
                raise InputError("This model needs the chronological age of every case.")
            ch = torch.tensor(list(chron), dtype=torch.float32, device=self.device)
        per_fold, feats = [], None
        for m in self.models:
            f = m.features(x)
            feats = f.cpu() if feats is None else feats  # fold 0's features serve the QC distance
            y = m.from_features(f, sex, ch)
            if flip:
                y = (y + m(torch.flip(x, dims=[3]), sex, ch)) / 2
            per_fold.append(y.cpu().numpy())
        return np.mean(per_fold, 0), np.stack(per_fold), feats

    def predict(self, pixels: np.ndarray, sex: str, chron_months: float | None = None, box="auto",
                body_part: str | None = None, spacing_mm=None) -> Prediction:
        """One image → Prediction. ``body_part`` (from DICOM) adds the not-a-knee flag when it says otherwise."""
        return self.predict_many([self.prepare(pixels, box, spacing_mm)], [sex], [chron_months], [body_part])[0]

    def predict_many(self, inputs, sexes, chrons=None, body_parts=None) -> list[Prediction]:
        n = len(inputs)
        chrons = chrons if chrons is not None else [None] * n
        body_parts = body_parts or [None] * n
        mean, per_fold, feats = self.predict_inputs(np.stack(inputs), sexes, chrons)
        out = []
        for i in range(n):
            out.append(self._prediction(float(mean[i]), per_fold[:, i], None if feats is None else feats[i], body_parts[i], sexes[i]))
        return out

    def predict_batches(self, cases: Iterable[PreparedCase], batch: int = 8) -> Iterator[list[tuple[PreparedCase, Prediction | None]]]:
        """The batched inference loop: prepared cases (taken lazily, so decoding can run ahead) predicted
        ``batch`` at a time; yields each batch's cases with their predictions (None for a case that could not
        be prepared: its ``error`` says why)."""
        it = iter(cases)
        while chunk := list(islice(it, batch)):
            ok = [c for c in chunk if c.input is not None]
            preds = iter(self.predict_many([c.input for c in ok], [c.sex for c in ok], [c.chron for c in ok],
                                           [c.body_part for c in ok]) if ok else [])
            yield [(c, next(preds) if c.input is not None else None) for c in chunk]

    def _prediction(self, ba: float, folds: np.ndarray, feat: torch.Tensor, body_part, sex: str | None = None) -> Prediction:
        card, qc = self.card, self.card.qc or {}
        ba, folds = float(calibrate_output(ba, sex, card.output_calibration)), calibrate_output(folds, sex, card.output_calibration)
        flags = []
        dist = float("nan")
        if self._feature_qc is not None and feat is not None:
            dist = float(feature_distance(feat.double().numpy()[None], self._feature_qc)[0])
        if not is_knee_part(body_part, card.config.body_part) or dist > qc.get("not_knee_distance", np.inf):
            flags.append("not_a_knee")
        elif dist > qc.get("unlike_training_distance", np.inf):
            flags.append("unlike_training")
        lo, hi = card.label_range_months
        if ba < lo + 3 or ba > hi - 3:
            flags.append("outside_age_range")
        if self.runner is None:  # our own models are never extrapolated past the trained range
            ba = float(min(max(ba, lo), hi))
        mature = (qc.get("mature_from_months") or {}).get(sex) if sex else None
        censored = None
        if mature is not None and ba >= mature and "not_a_knee" not in flags:
            flags.append("skeletally_mature")
            censored = float(mature)
        thr = qc.get("fold_sd_threshold_months")
        if thr and len(folds) > 1 and float(np.std(folds)) > thr:
            flags.append("folds_disagree")
        hw = half_width(card.interval, ba)  # NaN when the card gives no interval rule: the interval is then unknown
        interval, widened = (float("nan"), float("nan")), False
        if np.isfinite(hw):
            lo, hi = ba - hw, ba + hw
            if len(folds) > 1:  # the calibrated width holds typical fold spread; wider disagreement widens it
                lo, hi = min(lo, float(np.min(folds))), max(hi, float(np.max(folds)))
                widened = (lo, hi) != (ba - hw, ba + hw)
            interval = (max(0.0, lo), hi)
        return Prediction(
            bone_age_months=ba,
            interval_months=interval,
            interval_widened=widened,
            interval_level=float(card.interval.get("level", float("nan"))),
            fold_values_months=tuple(float(v) for v in folds),
            flags=tuple(flags),
            model_name=card.name,
            model_hash=self.hash,
            synthetic_demo=bool(card.synthetic_demo),
            feature_distance=dist,
            censored_from_months=censored,
        )

    def saliency(self, model_input: np.ndarray, sex: str, method: str = "gradient", chron_months=None,
                 samples: int = 12) -> np.ndarray:
        """Saliency map over the model input (S, S), scaled to [0, 1], from fold 0.

        ``gradient``: |d output / d pixel|; ``smoothgrad``: the same averaged over ``samples`` noisy
        copies (noise SD 0.15 of the input range); ``gradcam``: Grad-CAM on the backbone's last stage,
        upsampled to the input.
        """
        from captum.attr import LayerAttribution, LayerGradCam, NoiseTunnel, Saliency  # imported where used: slow to import

        if self.runner is not None:  # TorchScript: gradient, SmoothGrad; ONNX: refused with the reason
            return _scale_saliency(self.runner.attribution(model_input, sex, method, chron_months, samples), method)
        model = self.models[0]
        x = normalise(torch.from_numpy(np.asarray(model_input, np.float32))[None, None].to(self.device)).requires_grad_()
        sex_t = torch.tensor([_sex_code(sex)], dtype=torch.float32, device=self.device)
        ch = torch.tensor([chron_months], dtype=torch.float32, device=self.device) if self.card.config.use_chron_age else None

        def fwd(inp):
            return model(inp, sex_t.expand(inp.shape[0]), None if ch is None else ch.expand(inp.shape[0]))[:, None]

        with torch.enable_grad():
            if method == "gradient":
                a = Saliency(fwd).attribute(x, target=0, abs=True)
            elif method == "smoothgrad":
                a = NoiseTunnel(Saliency(fwd)).attribute(x, nt_type="smoothgrad", nt_samples=samples,
                                                         nt_samples_batch_size=samples, stdevs=0.6, target=0, abs=True)
            elif method == "gradcam":
                layer = last_stage(model.backbone)
                cam = LayerGradCam(fwd, layer).attribute(x, target=0, relu_attributions=True)
                a = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
            else:
                raise InputError(f"Saliency method {method!r} is not one of gradient, smoothgrad, gradcam.")
        return _scale_saliency(a.detach().abs().squeeze().cpu().numpy(), method)


def _scale_saliency(m: np.ndarray, method: str) -> np.ndarray:
    """An attribution map → [0, 1]: smoothed (except Grad-CAM), divided by its 99.5th percentile."""
    m = np.abs(np.asarray(m, np.float32))
    if method != "gradcam":
        m = ndimage.gaussian_filter(m, 2)
    top = np.percentile(m, 99.5)
    return np.clip(m / top, 0, 1) if top > 0 else np.zeros_like(m)


def _sex_code(sex) -> float:
    return 1.0 if require_sex(sex) == "M" else 0.0


def overlay(image01: np.ndarray, saliency01: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """RGB uint8: the grayscale image with the saliency map in a warm colour scale on top."""
    g = np.clip(image01, 0, 1)[..., None].repeat(3, -1)
    s = np.clip(saliency01, 0, 1)
    heat = np.stack([np.clip(2 * s, 0, 1), np.clip(2 * s - 0.6, 0, 1), np.clip(1.5 * s - 1.2, 0, 1) * 0.5], -1)
    a = (opacity * np.clip(s * 1.5, 0, 1))[..., None]
    return ((g * (1 - a) + heat * a) * 255 + 0.5).astype(np.uint8)
