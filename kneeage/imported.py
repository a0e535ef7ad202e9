"""Models trained elsewhere: an ONNX or TorchScript file plus a declarative card (TOML) → a model directory.

The card says what the file expects and what it returns (docs/models.md): input size or physical spacing
and window, channels, layout, intensity normalisation, crop policy, the inputs (image; sex and its
encoding; chronological age), the output's unit, the trained age range, the intended body part and an
optional interval rule. :func:`import_model` checks the file against its card by running it on phantom
knees of known bone age (and on a real test image when given) and refuses, in one sentence naming the
file, when shapes, inputs or outputs do not match. The result is a model directory like one that
``kneeage train`` writes: ``model_card.json`` (with the card under ``imported``), ``card.toml`` and
``model.onnx`` or ``model.pt``; :class:`kneeage.predict.Predictor` loads it through a :class:`Runner`.

ONNX files run in ``onnxruntime`` (no gradients, so no saliency); TorchScript files in ``torch.jit``
(gradient and SmoothGrad saliency; Grad-CAM needs the network's layers and is not offered).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tomllib
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import __version__
from .conventions import SEXES, TRAINED_MAX_MONTHS, require_sex
from .errors import InputError, ModelError
from .files import atomic_write
from .imaging import load_radiograph
from .model import CARD, ModelCard, ModelConfig, save_card
from .phantom import render_knee
from .preprocess import crop, equalise, to_input
from .stats import json_ready

FORMATS = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript"}
FILE_NAME = {"onnx": "model.onnx", "torchscript": "model.pt"}
CARD_TOML = "card.toml"
PHANTOM_AGES = (24.0, 72.0, 120.0, 168.0)  # months: the trial run spans childhood
RANGE_MARGIN_MONTHS = 36.0  # outputs further than this outside the trained range are refused

_SECTIONS = {
    "": {"name", "body_part", "synthetic_demo", "label_source", "training_data", "notes", "input", "inputs",
         "output", "interval"},
    "input": {"size", "spacing_mm", "window_mm", "channels", "layout", "crop", "intensity", "percentiles", "scale",
              "mean", "std"},
    "inputs": {"image", "sex", "sex_encoding", "chronological_age", "chronological_age_unit"},
    "output": {"unit", "name", "trained_age_range_months", "trained_age_range_years"},
    "interval": {"rule", "level", "half_width_months", "bands"},
}


@dataclass(frozen=True)
class ImportCard:
    """A parsed, checked card. Ages in months; ``sex_encoding`` maps "F"/"M" to the number the model expects."""

    name: str
    body_part: str
    size: int
    channels: int = 1
    layout: str = "NCHW"
    crop: str = "auto"
    percentiles: tuple[float, float] = (1.0, 99.0)
    equalise: bool = False  # intensity = "equalise": after the percentile window, each pixel's rank (kneeage.preprocess.equalise)
    scale: float = 1.0
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    spacing_mm: float | None = None
    window_mm: float | None = None
    image_input: str = "image"
    sex_input: str | None = None
    sex_encoding: dict = field(default_factory=dict)
    age_input: str | None = None
    age_unit: str = "months"
    output_unit: str = "months"
    output_name: str | None = None
    range_months: tuple[float, float] = (0.0, TRAINED_MAX_MONTHS)
    interval: dict = field(default_factory=dict)  # kneeage's interval format (kneeage.train.half_width)
    synthetic_demo: bool = False
    label_source: str = ""
    training_data: str = ""
    notes: str = ""

    @property
    def inputs(self) -> list[str]:
        """The model's inputs in the order a TorchScript model takes them: image, then sex, then age."""
        return [self.image_input] + [n for n in (self.sex_input, self.age_input) if n]

    def describe_inputs(self) -> str:
        shape = ("N × C × H × W" if self.layout == "NCHW" else "N × H × W × C").replace("C", str(self.channels))
        shape = shape.replace("H", str(self.size)).replace("W", str(self.size))
        parts = [f"{self.image_input} ({shape})"]
        if self.sex_input:
            parts.append(f"{self.sex_input} (sex: F = {self.sex_encoding['F']:g}, M = {self.sex_encoding['M']:g})")
        if self.age_input:
            parts.append(f"{self.age_input} (chronological age in {self.age_unit})")
        return ", ".join(parts)

    def normalisation_text(self) -> str:
        lo, hi = self.percentiles
        geo = (f"{self.window_mm:g} mm window at {self.spacing_mm:g} mm per pixel" if self.spacing_mm else
               f"aspect-preserving resize to {self.size} px with zero padding")
        eq = ", histogram-equalised" if self.equalise else ""
        return (f"crop ({self.crop}), {geo}, clip to the {lo:g}-{hi:g} percentiles and scale to [0,1]{eq}, × {self.scale:g}, "
                f"then (x − {list(self.mean)}) / {list(self.std)}, {self.channels} channel(s), {self.layout}")

    def as_dict(self) -> dict:
        return json_ready(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "ImportCard":
        d = dict(d)
        for k in ("percentiles", "mean", "std", "range_months"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# ------------------------------------------------------------------------------------- the card


def read_card(path: str | Path) -> ImportCard:
    """Parse and check a card (TOML); refuses with one sentence naming the file and the problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelError(f"{path.name}: the card cannot be read ({e.strerror or e}).") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path.name}: the card is not valid TOML ({e}).") from None
    return parse_card(raw, path.name)


def parse_card(raw: dict, name: str = "card.toml") -> ImportCard:
    def bad(reason: str):
        return ModelError(f"{name}: {reason}.")

    for section, known in _SECTIONS.items():
        table = raw if not section else raw.get(section, {})
        if not isinstance(table, dict):
            raise bad(f"[{section}] must be a table")
        unknown = sorted(set(table) - known)
        if unknown:
            where = f"in [{section}]" if section else "at the top level"
            raise bad(f"unknown key {unknown[0]!r} {where} (known: {', '.join(sorted(known))})")
    inp, ins, out, itv = (raw.get(s, {}) for s in ("input", "inputs", "output", "interval"))

    def text(table, key, where, required=False, default=None):
        v = table.get(key, default)
        if v is None or v == "":
            if required:
                raise bad(f"{where}{key} is missing")
            return default if v is None else None
        if not isinstance(v, str):
            raise bad(f"{where}{key} must be text, not {v!r}")
        return v

    def number(table, key, where, default=None, positive=False):
        v = table.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
            raise bad(f"{where}{key} must be a {'positive ' if positive else ''}number, not {v!r}")
        return float(v)

    def choice(table, key, where, options, default):
        v = text(table, key, where, default=default)
        if v not in options:
            raise bad(f"{where}{key} must be one of {', '.join(options)}, not {v!r}")
        return v

    card_name = text(raw, "name", "", required=True)
    body_part = text(raw, "body_part", "", required=True).lower()
    # geometry
    size, spacing, window = inp.get("size"), number(inp, "spacing_mm", "input.", positive=True), number(inp, "window_mm", "input.", positive=True)
    if (spacing is None) != (window is None):
        raise bad("input.spacing_mm and input.window_mm go together; give both, or input.size alone")
    if spacing is not None:
        derived = round(window / spacing)
        if size is not None and size != derived:
            raise bad(f"input.size {size} differs from window_mm / spacing_mm = {derived}")
        size = derived
    if size is None:
        raise bad("input.size (pixels) or input.spacing_mm with input.window_mm is missing")
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 4096:
        raise bad(f"input.size must be a whole number of pixels between 16 and 4096, not {size!r}")
    channels = inp.get("channels", 1)
    if channels not in (1, 3) or isinstance(channels, bool):
        raise bad(f"input.channels must be 1 or 3, not {channels!r}")
    layout = choice(inp, "layout", "input.", ("NCHW", "NHWC"), "NCHW")
    crop = choice(inp, "crop", "input.", ("auto", "full"), "auto")
    intensity = choice(inp, "intensity", "input.", ("percentile", "minmax", "equalise"), "percentile")
    pct = inp.get("percentiles", [1, 99]) if intensity != "minmax" else [0, 100]
    if (not isinstance(pct, list) or len(pct) != 2 or not all(isinstance(v, (int, float)) for v in pct)
            or not 0 <= pct[0] < pct[1] <= 100):
        raise bad(f"input.percentiles must be two numbers 0 ≤ low < high ≤ 100, not {pct!r}")
    scale = number(inp, "scale", "input.", 1.0, positive=True)

    def per_channel(key, default, positive):
        v = inp.get(key, default)
        vals = v if isinstance(v, list) else [v]
        if len(vals) not in (1, channels) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                     and math.isfinite(x) and (x > 0 or not positive) for x in vals):
            raise bad(f"input.{key} must be one {'positive ' if positive else ''}number or one per channel, not {v!r}")
        return tuple(float(x) for x in vals)

    mean, std = per_channel("mean", 0.5, False), per_channel("std", 0.25, True)
    # inputs
    image = text(ins, "image", "inputs.", required=True)
    sex = text(ins, "sex", "inputs.")
    enc = {}
    if sex:
        raw_enc = ins.get("sex_encoding")
        if not isinstance(raw_enc, dict) or set(raw_enc) != {"F", "M"}:
            raise bad("inputs.sex_encoding must give the number for F and for M, e.g. { F = 0, M = 1 }")
        enc = {k: number(raw_enc, k, "inputs.sex_encoding.") for k in ("F", "M")}
        if enc["F"] == enc["M"]:
            raise bad("inputs.sex_encoding gives F and M the same number")
    elif "sex_encoding" in ins:
        raise bad("inputs.sex_encoding is given but inputs.sex (the model's sex input) is not")
    age = text(ins, "chronological_age", "inputs.")
    age_unit = choice(ins, "chronological_age_unit", "inputs.", ("months", "years"), "months")
    names = [n for n in (image, sex, age) if n]
    if len(set(names)) < len(names):
        raise bad("two inputs under [inputs] have the same name")
    # output
    unit = choice(out, "unit", "output.", ("months", "years"), None) if out.get("unit") else None
    if unit is None:
        raise bad("output.unit (months or years) is missing")
    rng_m, rng_y = out.get("trained_age_range_months"), out.get("trained_age_range_years")
    if (rng_m is None) == (rng_y is None):
        raise bad("give the trained age range once, as output.trained_age_range_months or output.trained_age_range_years")
    rng = rng_m if rng_m is not None else rng_y
    if not isinstance(rng, list) or len(rng) != 2 or not all(isinstance(v, (int, float)) for v in rng) or not 0 <= rng[0] < rng[1]:
        raise bad(f"the trained age range must be two ages, low < high, not {rng!r}")
    lo, hi = (float(v) * (12 if rng_y is not None else 1) for v in rng)
    if hi > 300:
        raise bad(f"the trained age range ends at {hi:g} months, beyond the 0-300 months of childhood and adolescence")
    interval = _interval(itv, bad, number, choice) if itv else {}
    demo = raw.get("synthetic_demo", False)
    if not isinstance(demo, bool):
        raise bad(f"synthetic_demo must be true or false, not {demo!r}")
    return ImportCard(
        name=card_name, body_part=body_part, size=size, channels=channels, layout=layout, crop=crop,
        percentiles=(float(pct[0]), float(pct[1])), equalise=intensity == "equalise", scale=scale, mean=mean, std=std, spacing_mm=spacing,
        window_mm=window, image_input=image, sex_input=sex, sex_encoding=enc, age_input=age, age_unit=age_unit,
        output_unit=unit, output_name=text(out, "name", "output."), range_months=(lo, hi), interval=interval,
        synthetic_demo=demo, label_source=text(raw, "label_source", "", default=""),
        training_data=text(raw, "training_data", "", default=""), notes=text(raw, "notes", "", default=""))


def _interval(itv: dict, bad, number, choice) -> dict:
    rule = choice(itv, "rule", "interval.", ("constant", "bands"), "constant")
    level = number(itv, "level", "interval.", 0.95)
    if not 0 < level < 1:
        raise bad(f"interval.level must lie between 0 and 1, not {level:g}")
    out = {"level": level, "method": f"declared by the model's card ({rule})", "rule": rule}
    if rule == "constant":
        hw = number(itv, "half_width_months", "interval.", positive=True)
        if hw is None:
            raise bad("interval.half_width_months is missing for the constant rule")
        return out | {"overall_half_width_months": hw, "bands": []}
    bands = itv.get("bands")
    if not isinstance(bands, list) or not bands:
        raise bad("interval.bands must list { from_months, to_months, half_width_months } tables for the bands rule")
    clean = []
    for b in bands:
        if not isinstance(b, dict) or set(b) != {"from_months", "to_months", "half_width_months"}:
            raise bad("each of interval.bands needs from_months, to_months and half_width_months, and nothing else")
        f, t, h = (number(b, k, "interval.bands.") for k in ("from_months", "to_months", "half_width_months"))
        if not (f < t and h > 0):
            raise bad(f"interval band {f:g}-{t:g} months must run forward with a positive half-width")
        clean.append({"from_months": f, "to_months": t, "half_width_months": h})
    hw = number(itv, "half_width_months", "interval.", positive=True)
    return out | {"bands": clean, "overall_half_width_months": hw if hw else max(b["half_width_months"] for b in clean)}


def card_toml(card: ImportCard) -> str:
    """The card as TOML text (what ``export-model`` writes beside the file)."""
    q = json.dumps
    lines = [f"name = {q(card.name)}", f"body_part = {q(card.body_part)}",
             f"synthetic_demo = {str(card.synthetic_demo).lower()}"]
    for k in ("label_source", "training_data", "notes"):
        if getattr(card, k):
            lines.append(f"{k} = {q(getattr(card, k))}")
    lines += ["", "[input]"]
    if card.spacing_mm:
        lines += [f"spacing_mm = {card.spacing_mm!r}", f"window_mm = {card.window_mm!r}"]
    else:
        lines.append(f"size = {card.size}")
    lines += [f"channels = {card.channels}", f"layout = {q(card.layout)}", f"crop = {q(card.crop)}",
              f'intensity = "{"equalise" if card.equalise else "percentile"}"', f"percentiles = {list(card.percentiles)}", f"scale = {card.scale!r}",
              f"mean = {list(card.mean)}", f"std = {list(card.std)}", "", "[inputs]", f"image = {q(card.image_input)}"]
    if card.sex_input:
        lines += [f"sex = {q(card.sex_input)}",
                  f"sex_encoding = {{ F = {card.sex_encoding['F']!r}, M = {card.sex_encoding['M']!r} }}"]
    if card.age_input:
        lines += [f"chronological_age = {q(card.age_input)}", f"chronological_age_unit = {q(card.age_unit)}"]
    lines += ["", "[output]", f"unit = {q(card.output_unit)}"]
    if card.output_name:
        lines.append(f"name = {q(card.output_name)}")
    lines.append(f"trained_age_range_months = {[round(v, 3) for v in card.range_months]}")
    itv = card.interval
    if itv:
        lines += ["", "[interval]", f"rule = {q(itv.get('rule', 'bands' if itv.get('bands') else 'constant'))}",
                  f"level = {float(itv.get('level', 0.95))!r}",
                  f"half_width_months = {round(float(itv['overall_half_width_months']), 4)!r}"]
        if itv.get("bands"):
            bands = ", ".join(f"{{ from_months = {float(b['from_months'])!r}, to_months = {float(b['to_months'])!r}, "
                              f"half_width_months = {round(float(b['half_width_months']), 4)!r} }}" for b in itv["bands"])
            lines.append(f"bands = [{bands}]")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ runners


def _ort_errors() -> tuple[type[BaseException], ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as s  # imported where used: ONNX Runtime is slow to load

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoModel", "NoSuchFile", "NotFound",
             "NotImplemented", "RuntimeException", "EPFail")
    return tuple(getattr(s, n) for n in names if hasattr(s, n)) + (RuntimeError, ValueError)


def _short(e: BaseException) -> str:
    """A runtime's error message as one clause: lines joined, boilerplate advice and trailing full stops dropped."""
    lines = [ln.strip().rstrip(".") for ln in str(e).strip().splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Please fix either")]
    text = "; ".join(lines).replace(". ", "; ") or type(e).__name__
    return text if len(text) <= 240 else text[:237] + "…"


class Runner:
    """Runs an imported model file as its card describes: prepare images, encode the side inputs, call the
    runtime, return bone ages in months."""

    kind = ""
    saliency_methods: tuple[str, ...] = ()

    def __init__(self, path: Path, card: ImportCard, device=None):
        self.path = Path(path)
        self.card = card
        self.label = self.path.name

    @property
    def input_size(self) -> int:
        return self.card.size

    def prepare(self, pixels: np.ndarray, box="full", spacing_mm=None) -> np.ndarray:
        """(S, S) float32 in [0, 1]: the region (the card's crop policy; an explicit box wins), windowed by
        the card's percentiles, resized (aspect kept, zero padded) or, with a physical spacing and a known
        pixel spacing, resampled to it and cut to the window."""
        c = self.card
        if c.crop == "full" and (box is None or box == "auto" or box == ""):
            box = "full"
        if not (c.spacing_mm and spacing_mm):
            out = to_input(pixels, c.size, box, c.percentiles)
            return equalise(out, np.ones(out.shape, bool)) if c.equalise else out
        region = crop(pixels, box)
        lo, hi = np.percentile(region, list(c.percentiles))
        region = np.clip((region - lo) / (hi - lo + 1e-6), 0, 1).astype(np.float32)
        sy, sx = (float(v) for v in spacing_mm)
        h, w = region.shape
        nh, nw = max(1, round(h * sy / c.spacing_mm)), max(1, round(w * sx / c.spacing_mm))
        region = np.asarray(Image.fromarray(region, mode="F").resize((nw, nh), Image.BILINEAR), np.float32)
        out = np.zeros((c.size, c.size), np.float32)
        cy, cx = nh // 2, nw // 2
        y0, x0 = max(0, cy - c.size // 2), max(0, cx - c.size // 2)
        part = region[y0 : y0 + c.size, x0 : x0 + c.size]
        oy, ox = (c.size - part.shape[0]) // 2, (c.size - part.shape[1]) // 2
        out[oy : oy + part.shape[0], ox : ox + part.shape[1]] = np.clip(part, 0, 1)
        if c.equalise:
            placed = np.zeros(out.shape, bool)
            placed[oy : oy + part.shape[0], ox : ox + part.shape[1]] = True
            out = equalise(out, placed)
        return out

    def network_input(self, inputs: np.ndarray) -> np.ndarray:
        """Prepared images (N, S, S) → the model's image tensor: × scale, − mean, / std, channels, layout."""
        c = self.card
        x = np.asarray(inputs, np.float32)[:, None] * c.scale
        x = np.repeat(x, c.channels, axis=1)
        mean = np.asarray(c.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(c.std, np.float32).reshape(1, -1, 1, 1)
        x = (x - mean) / std
        return np.ascontiguousarray(x if c.layout == "NCHW" else x.transpose(0, 2, 3, 1), np.float32)

    def side_inputs(self, sexes, chron) -> dict[str, np.ndarray]:
        c, out = self.card, {}
        if c.sex_input:
            out[c.sex_input] = np.array([c.sex_encoding[require_sex(s)] for s in sexes], np.float32)
        if c.age_input:
            if chron is None or any(v is None or not np.isfinite(v) for v in chron):
                raise InputError("This model needs the chronological age of every case.")
            out[c.age_input] = np.array(chron, np.float32) / (12 if c.age_unit == "years" else 1)
        return out

    def raw(self, image: np.ndarray, side: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def predict(self, inputs: np.ndarray, sexes, chron=None) -> np.ndarray:
        """Bone age in months, shape (N,), from prepared images (N, S, S)."""
        x = self.network_input(inputs)
        y = self.raw(x, self.side_inputs(sexes, chron))
        n = len(x)
        if y.shape not in ((n,), (n, 1)):
            raise ModelError(f"{self.label} returned an output of shape {tuple(y.shape)} for {n} case(s); the card "
                             f"expects one bone age per case ({n} or {n} × 1).")
        y = y.reshape(n).astype(np.float64)
        return y * 12 if self.card.output_unit == "years" else y

    def attribution(self, model_input: np.ndarray, sex: str, method: str, chron_months=None, samples: int = 12):
        raise ModelError(f"{self.label} is an ONNX model: ONNX Runtime gives no gradients, so this model has no "
                         "saliency map (import a TorchScript file for saliency).")


class OnnxRunner(Runner):
    kind = "onnx"

    def __init__(self, path: Path, card: ImportCard, device=None):
        super().__init__(path, card, device)
        import onnxruntime as ort  # imported where used: ONNX Runtime is slow to load and only ONNX models need it

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except _ort_errors() as e:
            raise ModelError(f"{self.label}: not a readable ONNX model ({_short(e)}).") from None
        self.model_inputs = {i.name: i for i in self.session.get_inputs()}
        declared = card.inputs
        missing = [n for n in declared if n not in self.model_inputs]
        if missing:
            what = {card.image_input: "image", card.sex_input: "sex", card.age_input: "chronological age"}[missing[0]]
            raise ModelError(f"{self.label} has no input {missing[0]!r}, which the card declares as the {what} input "
                             f"(the model's inputs: {', '.join(self.model_inputs) or 'none'}).")
        extra = [n for n in self.model_inputs if n not in declared]
        if extra:
            raise ModelError(f"{self.label} takes an input {extra[0]!r} that the card does not declare (the card declares "
                             f"{', '.join(declared)}); name it under [inputs] as sex or chronological_age.")
        img = self.model_inputs[card.image_input]
        shape = list(img.shape)
        if len(shape) != 4:
            raise ModelError(f"{self.label}: input {card.image_input!r} has rank {len(shape)} (shape {shape}), but the card "
                             f"describes a rank-4 image {card.describe_inputs().split(', ')[0]}.")
        want = [None, card.channels, card.size, card.size] if card.layout == "NCHW" else [None, card.size, card.size, card.channels]
        for axis, (have, need) in enumerate(zip(shape, want)):
            if need is not None and isinstance(have, int) and have != need:
                raise ModelError(f"{self.label}: input {card.image_input!r} has shape {shape}, but the card gives "
                                 f"{card.describe_inputs().split(', ')[0]} (axis {axis} is {have}, not {need}).")
        for n in declared[1:]:
            r = len(self.model_inputs[n].shape)
            if r not in (1, 2):
                raise ModelError(f"{self.label}: input {n!r} has rank {r}; a side input must be one value per case (N or N × 1).")
        outs = self.session.get_outputs()
        names = [o.name for o in outs]
        if card.output_name and card.output_name not in names:
            raise ModelError(f"{self.label} has no output {card.output_name!r} (its outputs: {', '.join(names)}).")
        self.output = card.output_name or names[0]
        self.batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None  # a fixed batch size, if any

    _DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}

    def _feed(self, name: str, v: np.ndarray) -> np.ndarray:
        info = self.model_inputs[name]
        dtype = self._DTYPES.get(info.type)
        if dtype is None:
            raise ModelError(f"{self.label}: input {name!r} is of type {info.type}; kneeage feeds floating-point tensors.")
        if v.ndim == 1 and len(info.shape) == 2:
            v = v[:, None]
        return v.astype(dtype)

    def raw(self, image, side):
        n = len(image)
        step = self.batch or max(1, n)
        outs = []
        for i in range(0, n, step):
            take = np.arange(i, min(i + step, n))
            if self.batch:  # a model exported with a fixed batch size: pad the last chunk with copies
                take = np.concatenate([take, np.full(step - len(take), take[-1])])
            feeds = {self.card.image_input: self._feed(self.card.image_input, image[take])}
            feeds |= {k: self._feed(k, v[take]) for k, v in side.items()}
            try:
                y = np.asarray(self.session.run([self.output], feeds)[0], np.float64)
            except _ort_errors() as e:
                raise ModelError(f"{self.label} failed on the inputs the card describes "
                                 f"({self.card.describe_inputs()}): {_short(e)}.") from None
            if self.batch and y.ndim and len(y) == step:
                y = y[: min(step, n - i)]
            outs.append(y)
        return np.concatenate(outs) if len(outs) > 1 else outs[0]


class TorchScriptRunner(Runner):
    kind = "torchscript"
    saliency_methods = ("gradient", "smoothgrad")

    def __init__(self, path: Path, card: ImportCard, device=None):
        super().__init__(path, card, device)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # torch.jit is deprecated upstream, still the format sites share. Not warnings.catch_warnings(), which is not
        # thread-safe (every Streamlit session is a thread): a narrow process-wide filter, set again on every load.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.(load|save)` is", category=FutureWarning)
        try:
            self.module = torch.jit.load(str(self.path), map_location=self.device).eval()
        except (RuntimeError, ValueError, OSError) as e:
            raise ModelError(f"{self.label}: not a readable TorchScript model ({_short(e)}).") from None
        try:
            args = [a.name for a in self.module.forward.schema.arguments][1:]
        except (AttributeError, RuntimeError):
            args = None
        if args is not None and len(args) != len(card.inputs):
            raise ModelError(f"{self.label} takes {len(args)} input(s) ({', '.join(args)}), but the card declares "
                             f"{len(card.inputs)} ({card.describe_inputs()}).")

    def _call(self, x, side):
        cols = [torch.as_tensor(side[n], device=self.device) for n in self.card.inputs[1:]]
        return self.module(x, *cols)

    def raw(self, image, side):
        try:
            with torch.no_grad():
                y = self._call(torch.from_numpy(image).to(self.device), side)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            raise ModelError(f"{self.label} failed on the inputs the card describes "
                             f"({self.card.describe_inputs()}): {_short(e)}.") from None
        if not hasattr(y, "detach"):
            raise ModelError(f"{self.label} returned {type(y).__name__}, not a tensor of bone ages.")
        return y.detach().float().cpu().numpy()

    def attribution(self, model_input, sex, method, chron_months=None, samples: int = 12):
        """|d output / d pixel| over the prepared image (S, S), summed over channels (``gradient``), or the
        same averaged over noisy copies (``smoothgrad``)."""
        from captum.attr import NoiseTunnel, Saliency  # imported where used: captum is slow to import

        if method not in self.saliency_methods:
            if method == "gradcam":
                raise ModelError(f"{self.label}: Grad-CAM needs the network's layers, which a TorchScript file does not "
                                 "expose; use gradient or SmoothGrad.")
            raise InputError(f"Saliency method {method!r} is not one of {', '.join(self.saliency_methods)}.")
        side = self.side_inputs([sex], [chron_months] if self.card.age_input else None)
        x = torch.from_numpy(self.network_input(np.asarray(model_input, np.float32)[None])).to(self.device).requires_grad_()

        def fwd(inp):
            n = inp.shape[0]
            s = {k: np.repeat(v, n) for k, v in side.items()}
            y = self._call(inp, s)
            return y.reshape(n, 1)

        with torch.enable_grad():
            if method == "gradient":
                a = Saliency(fwd).attribute(x, target=0, abs=True)
            else:
                a = NoiseTunnel(Saliency(fwd)).attribute(x, nt_type="smoothgrad", nt_samples=samples,
                                                         nt_samples_batch_size=samples, stdevs=0.6, target=0, abs=True)
        a = a.detach().abs()
        a = a.sum(1) if self.card.layout == "NCHW" else a.sum(3)
        return a.squeeze(0).cpu().numpy().astype(np.float32)


RUNNERS = {"onnx": OnnxRunner, "torchscript": TorchScriptRunner}


def load_runner(model_dir: str | Path, imported: dict, device=None) -> Runner:
    """The runner of an imported model directory (``imported`` is the model card's ``imported`` entry)."""
    fmt = imported.get("format")
    if fmt not in RUNNERS:
        raise ModelError(f"{model_dir}: the model card's imported format {fmt!r} is not onnx or torchscript.")
    path = Path(model_dir) / FILE_NAME[fmt]
    if not path.is_file():
        raise ModelError(f"{model_dir}: {FILE_NAME[fmt]} is missing; an imported model directory holds the model file.")
    return RUNNERS[fmt](path, ImportCard.from_dict(imported["card"]), device)


# -------------------------------------------------------------------------------------- import


def check_model(runner: Runner, test_image: str | Path | None = None) -> dict:
    """Run the model on phantom knees of known bone age (both sexes) and on ``test_image``; refuse when its
    output does not fit the card: wrong shape, not finite, far outside the trained age range, or years
    declared as months (or months as years). Returns what was run and what came out."""
    c = runner.card
    ages = list(PHANTOM_AGES)
    sexes = ["F", "M"] * (len(ages) // 2)
    chron = list(ages)
    imgs = [runner.prepare(render_knee(a, s, rng=k, size=max(128, min(c.size * 2, 512))).pixels, "auto")
            for k, (a, s) in enumerate(zip(ages, sexes))]
    out = runner.predict(np.stack(imgs), sexes, chron)
    report = {"phantom_bone_ages_months": ages, "phantom_outputs_months": [round(float(v), 3) for v in out]}
    lo, hi = c.range_months
    unit = c.output_unit
    raw = out / (12 if unit == "years" else 1)
    if not np.all(np.isfinite(out)):
        raise ModelError(f"{runner.label} returned a non-finite bone age for a phantom knee.")
    if unit == "months" and raw.max() <= 21 and hi >= 120:
        raise ModelError(f"{runner.label}: on phantom knees of bone age {ages[0]:g}-{ages[-1]:g} months it returns "
                         f"{raw.min():.1f}-{raw.max():.1f}, which look like years, but the card declares the output in months.")
    if unit == "years" and raw.min() > 25:
        raise ModelError(f"{runner.label}: on phantom knees of bone age {ages[0] / 12:g}-{ages[-1] / 12:g} years it returns "
                         f"{raw.min():.1f}-{raw.max():.1f}, which look like months, but the card declares the output in years.")
    far = [v for v in out if not lo - RANGE_MARGIN_MONTHS <= v <= hi + RANGE_MARGIN_MONTHS]
    if far:
        raise ModelError(f"{runner.label}: on a phantom knee it returns {far[0]:.1f} months, far outside the card's trained "
                         f"range {lo:g}-{hi:g} months; the output or its unit does not match the card.")
    if test_image:
        rad = load_radiograph(test_image)
        x = runner.prepare(rad.pixels, "auto", rad.pixel_spacing_mm)
        sex = rad.sex if rad.sex in SEXES else "F"
        age = rad.chronological_age_months if rad.chronological_age_months is not None else (lo + hi) / 2
        v = float(runner.predict(x[None], [sex], [age])[0])
        if not np.isfinite(v) or not lo - RANGE_MARGIN_MONTHS <= v <= hi + RANGE_MARGIN_MONTHS:
            raise ModelError(f"{runner.label}: on the test image {rad.name} it returns {v:.1f} months, outside the card's "
                             f"trained range {lo:g}-{hi:g} months; the output or its unit does not match the card.")
        report["test_image"] = {"file": rad.name, "output_months": round(v, 3)}
    return report


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def import_model(model_file: str | Path, card_file: str | Path, out: str | Path, test_image: str | Path | None = None,
                 device=None):
    """Check ``model_file`` (.onnx or .pt TorchScript) against ``card_file`` and write the model directory ``out``.
    Returns its :class:`kneeage.model.ModelCard`."""
    model_file, out = Path(model_file), Path(out)
    fmt = FORMATS.get(model_file.suffix.lower())
    if fmt is None:
        raise ModelError(f"{model_file.name}: not an .onnx or TorchScript (.pt) file; kneeage imports those two formats.")
    if not model_file.is_file():
        raise ModelError(f"{model_file}: the model file does not exist.")
    if (out / CARD).exists():
        raise ModelError(f"{out}: a model directory is already there; choose another --out or remove it first.")
    card = read_card(card_file)
    runner = RUNNERS[fmt](model_file, card, device)
    report = check_model(runner, test_image)
    out.mkdir(parents=True, exist_ok=True)
    target = out / FILE_NAME[fmt]
    atomic_write(target, lambda tmp: shutil.copyfile(model_file, tmp))
    shutil.copyfile(card_file, out / CARD_TOML)
    cfg = ModelConfig(arch=f"imported {fmt}", input_size=card.size, use_sex=bool(card.sex_input),
                      use_chron_age=bool(card.age_input), label_mean=0.0, label_std=1.0, body_part=card.body_part)
    mc = ModelCard(
        name=card.name, config=cfg, folds=1, label_source=card.label_source, training_data=card.training_data,
        synthetic_demo=card.synthetic_demo, normalisation=card.normalisation_text(), code_version=f"kneeage {__version__}",
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"), interval=card.interval,
        label_range_months=card.range_months, notes=card.notes,
        imported={"format": fmt, "file": target.name, "original_file": model_file.name, "sha256": sha256(target),
                  "card_file": Path(card_file).name, "card": card.as_dict(), "check": report})
    save_card(mc, out)
    return mc
