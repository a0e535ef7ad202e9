"""Export a kneeage model directory as one portable file plus its card (``python -m kneeage export-model``).

The file holds the whole ensemble as the app runs it: every fold, the horizontal-flip average, and the
side inputs (sex as F = 0, M = 1; chronological age in months when the model uses it). Its input is the
prepared image after kneeage's normalisation, ``(x − 0.5) / 0.25`` of the [0, 1] image, shape N × 1 × S × S;
its output is the bone age in months, shape N. The card (TOML, :mod:`kneeage.imported`) beside it says so,
so ``import-model`` of the pair gives back the same predictions.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import ModelError
from .files import atomic_write
from .imported import ImportCard, card_toml
from .model import fold_paths, load_card, load_fold

SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


class Ensemble(nn.Module):
    """The folds of a kneeage model with flip test-time augmentation, as one module."""

    def __init__(self, folds: list[nn.Module], use_sex: bool, use_chron: bool):
        super().__init__()
        self.folds = nn.ModuleList(folds)
        self.use_sex, self.use_chron = use_sex, use_chron

    def _one(self, m, x, sex, chron):
        return (m(x, sex, chron) + m(torch.flip(x, dims=[3]), sex, chron)) / 2

    def forward(self, *args):
        x = args[0]
        rest = list(args[1:])
        sex = rest.pop(0) if self.use_sex else torch.zeros(x.shape[0], device=x.device)
        chron = rest.pop(0) if self.use_chron else None
        return torch.stack([self._one(m, x, sex, chron) for m in self.folds], 0).mean(0)


def export_card(model_dir: str | Path) -> ImportCard:
    """The declarative card that describes the exported file of a kneeage model directory."""
    card = load_card(Path(model_dir))
    cfg = card.config
    interval = dict(card.interval)
    if interval:
        interval = {"level": interval.get("level", 0.95), "rule": "bands" if interval.get("bands") else "constant",
                    "bands": interval.get("bands", []),
                    "overall_half_width_months": interval.get("overall_half_width_months", float("nan"))}
    return ImportCard(
        name=f"{card.name} (exported)", body_part=cfg.body_part, size=cfg.input_size, channels=1, layout="NCHW",
        crop="auto", percentiles=(1.0, 99.0), equalise=cfg.intensity == "equalise", scale=1.0, mean=(0.5,), std=(0.25,),
        spacing_mm=cfg.spacing_mm, window_mm=cfg.input_size * cfg.spacing_mm if cfg.spacing_mm else None, image_input="image",
        sex_input="sex" if cfg.use_sex else None, sex_encoding={"F": 0.0, "M": 1.0} if cfg.use_sex else {},
        age_input="chronological_age" if cfg.use_chron_age else None, age_unit="months", output_unit="months",
        output_name="bone_age_months", range_months=tuple(float(v) for v in card.label_range_months), interval=interval,
        synthetic_demo=bool(card.synthetic_demo), label_source=card.label_source, training_data=card.training_data,
        notes=(f"Exported by kneeage from {Path(model_dir).name} ({card.folds} folds, flip-averaged). " + card.notes).strip())


def export_model(model_dir: str | Path, fmt: str, out: str | Path | None = None) -> tuple[Path, Path]:
    """Write the ensemble of ``model_dir`` as ``out`` (.onnx or .pt) and its card beside it (.toml);
    returns (file, card)."""
    model_dir = Path(model_dir)
    if fmt not in SUFFIX:
        raise ModelError(f"export format {fmt!r} is not onnx or torchscript.")
    card = load_card(model_dir)
    if card.imported:
        raise ModelError(f"{model_dir}: it is an imported {card.imported['format']} model; its file "
                         f"{card.imported['file']} and card.toml are already portable.")
    paths = fold_paths(model_dir)
    if not paths:
        raise ModelError(f"{model_dir}: no fold_<k>.safetensors weights found.")
    cfg = card.config
    ens = Ensemble([load_fold(cfg, p) for p in paths], cfg.use_sex, cfg.use_chron_age).eval()
    out = Path(out) if out else Path.cwd() / f"{model_dir.name}{SUFFIX[fmt]}"
    if out.suffix.lower() != SUFFIX[fmt]:
        out = out.with_suffix(SUFFIX[fmt])
    out.parent.mkdir(parents=True, exist_ok=True)
    n, s = 2, cfg.input_size
    args = (torch.zeros(n, 1, s, s),)
    names = ["image"]
    if cfg.use_sex:
        args += (torch.tensor([0.0, 1.0]),)
        names.append("sex")
    if cfg.use_chron_age:
        args += (torch.tensor([60.0, 120.0]),)
        names.append("chronological_age")
    def write(tmp):
        # warnings.catch_warnings() is not thread-safe, but an export runs alone (the CLI, never a page's thread)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow that is fixed per model
            if fmt == "torchscript":
                torch.jit.trace(ens, args).save(str(tmp))
            else:
                axes = {k: {0: "n"} for k in names + ["bone_age_months"]}
                torch.onnx.export(ens, args, str(tmp), input_names=names, output_names=["bone_age_months"],
                                  dynamic_axes=axes, opset_version=17, dynamo=False)

    atomic_write(out, write)
    card_path = out.with_suffix(".toml")
    card_path.write_text(card_toml(export_card(model_dir)))
    return out, card_path
