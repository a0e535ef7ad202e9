"""The bone-age network, its checkpoints and the model card.

A timm ConvNeXt backbone (one input channel, never pretrained from a hub, built with
``num_classes=0`` so it returns pooled features) whose features are joined with the patient's sex
(and, optionally, chronological age), then a small regression head. The head predicts a standardised
bone age; ``label_mean`` and ``label_std`` in the config map it back to months.

A model directory (nnU-Net style: self-describing) holds ``model_card.json`` and one
``fold_<k>.safetensors`` per cross-validation fold.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .conventions import TRAINED_MAX_MONTHS
from .errors import ModelError
from .files import atomic_write

CARD = "model_card.json"

# Small variants of our own, built from timm's ConvNeXt and ResNet classes (timm-style registry).
_VARIANTS = {
    "kneeage_convnext_zepto": dict(depths=(2, 2, 4, 2), dims=(32, 64, 128, 256), conv_mlp=True),
    "kneeage_convnext_nano_test": dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), conv_mlp=True),
}
# resnet10t at half width (1.2 M parameters: five folds in half precision fit the 40 MB of models/)
_RESNETS = {
    "kneeage_resnet_slim": dict(layers=[1, 1, 1, 1], channels=(32, 64, 128, 256), stem_width=16, stem_type="deep_tiered",
                                avg_down=True),
}
ARCH_FAMILIES = ("convnext", "resnet")  # timm families whose last stage last_stage() knows


def create_backbone(arch: str) -> nn.Module:
    """A timm ConvNeXt or ResNet with one input channel and no classifier (``num_classes=0``), never
    pretrained. ResNets (batch norm) learn from scratch in far fewer epochs than ConvNeXts (layer norm),
    which matters on a CPU; the paper's ConvNeXt stays the default."""
    import timm  # imported where used: timm takes seconds to import, and the CLI and pages start without it
    from timm.models.convnext import ConvNeXt

    from timm.models.resnet import BasicBlock, ResNet

    if arch in _VARIANTS:
        return ConvNeXt(in_chans=1, num_classes=0, **_VARIANTS[arch])
    if arch in _RESNETS:
        return ResNet(BasicBlock, in_chans=1, num_classes=0, **_RESNETS[arch])
    if not arch.startswith(ARCH_FAMILIES):
        raise ModelError(f"Architecture {arch!r} is neither a ConvNeXt nor a ResNet; use a timm convnext_* or resnet* "
                         f"name or one of {sorted(_VARIANTS | _RESNETS)}.")
    try:
        return timm.create_model(arch, pretrained=False, num_classes=0, in_chans=1)
    except RuntimeError as e:
        raise ModelError(f"timm does not know the architecture {arch!r} ({e}).") from None


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "kneeage_convnext_zepto"
    input_size: int = 256
    use_sex: bool = True
    use_chron_age: bool = False
    label_mean: float = 108.0  # months
    label_std: float = 60.0
    body_part: str = "knee"
    spacing_mm: float | None = None  # physical framing: input_size px at this spacing around the region (kneeage.localise)
    intensity: str = "percentile"  # or "equalise" (physical framing only): kneeage.preprocess.window_input

    @property
    def side_inputs(self) -> list[str]:
        return (["sex"] if self.use_sex else []) + (["chronological_age"] if self.use_chron_age else [])


def last_stage(backbone: nn.Module) -> nn.Module:
    """The backbone's last feature stage (Grad-CAM's layer)."""
    return backbone.stages[-1] if hasattr(backbone, "stages") else backbone.layer4


class BoneAgeNet(nn.Module):
    """Image features ⊕ side inputs (sex as 1 = male, 0 = female; chronological age / 216, i.e. 18 years) → bone age."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = create_backbone(cfg.arch)
        n_side = len(cfg.side_inputs)
        self.side = nn.Linear(n_side, 16) if n_side else None
        nf = self.backbone.num_features + (16 if n_side else 0)
        self.head = nn.Sequential(nn.Linear(nf, 128), nn.GELU(), nn.Linear(128, 1))

    def side_tensor(self, sex: torch.Tensor, chron: torch.Tensor | None) -> torch.Tensor | None:
        cols = []
        if self.cfg.use_sex:
            cols.append(sex.float())
        if self.cfg.use_chron_age:
            if chron is None:
                raise ModelError("This model needs the chronological age as an input.")
            cols.append(chron.float() / TRAINED_MAX_MONTHS)
        return torch.stack(cols, 1) if cols else None

    def forward(self, x: torch.Tensor, sex: torch.Tensor, chron: torch.Tensor | None = None) -> torch.Tensor:
        """Bone age in months, shape (N,)."""
        return self.from_features(self.backbone(x), sex, chron)

    def from_features(self, f: torch.Tensor, sex: torch.Tensor, chron: torch.Tensor | None = None) -> torch.Tensor:
        """The head on pooled backbone features (lets callers reuse features for QC)."""
        side = self.side_tensor(sex, chron)
        if side is not None:
            f = torch.cat([f, torch.nn.functional.gelu(self.side(side.to(f.dtype)))], 1)
        z = self.head(f).squeeze(1)
        return z * self.cfg.label_std + self.cfg.label_mean

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


# ------------------------------------------------------------------------------- model dir


@dataclass
class ModelCard:
    name: str
    config: ModelConfig
    folds: int
    label_source: str = ""
    training_data: str = ""
    synthetic_demo: bool = False
    normalisation: str = "crop, aspect-preserving resize with zero padding, 1st-99th percentile clip to [0,1], then (x-0.5)/0.25"
    code_version: str = ""
    date: str = ""
    fold_metrics: list = field(default_factory=list)
    output_calibration: dict = field(default_factory=dict)  # raw output → reference scale, per sex (kneeage.calibration)
    interval: dict = field(default_factory=dict)  # calibrated half-widths, coverage
    qc: dict = field(default_factory=dict)  # thresholds for quality flags
    label_range_months: tuple = (0.0, TRAINED_MAX_MONTHS)
    results: dict = field(default_factory=dict)
    notes: str = ""
    imported: dict = field(default_factory=dict)  # an ONNX/TorchScript model's declarative card (kneeage.imported)
    localiser: dict = field(default_factory=dict)  # the region localiser shipped in the directory (kneeage.localise)

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, indent=2, default=float)

    def summary(self) -> dict:
        """The card for display: per-epoch histories and QC feature statistics left out."""
        d = json.loads(self.to_json())
        d["fold_metrics"] = [{k: v for k, v in m.items() if k != "history"} for m in d["fold_metrics"]]
        d["qc"] = {k: v for k, v in d["qc"].items() if not isinstance(v, list)}
        d["output_calibration"] = {k: v for k, v in d["output_calibration"].items() if not isinstance(v, dict)}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelCard:
        d = dict(d)
        d["config"] = ModelConfig(**d["config"])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def save_fold(model: BoneAgeNet, model_dir: Path, fold: int, half: bool = True) -> Path:
    sd = {k: (v.detach().to("cpu").half() if half and v.is_floating_point() else v.detach().to("cpu")).contiguous()
          for k, v in _unwrap(model).state_dict().items()}
    return atomic_write(Path(model_dir) / f"fold_{fold}.safetensors", lambda tmp: save_file(sd, str(tmp)))


def load_fold(cfg: ModelConfig, path: Path) -> BoneAgeNet:
    model = BoneAgeNet(cfg)
    sd = load_file(str(path))
    ref = model.state_dict()
    missing = set(ref) - set(sd)
    if missing:
        raise ModelError(f"{path.name} does not match architecture {cfg.arch} ({len(missing)} weights missing).")
    model.load_state_dict({k: v.to(ref[k].dtype) for k, v in sd.items()})
    return model.eval()


def save_card(card: ModelCard, model_dir: Path) -> None:
    atomic_write(Path(model_dir) / CARD, card.to_json())


def load_card(model_dir: Path) -> ModelCard:
    p = Path(model_dir) / CARD
    if not p.is_file():
        raise ModelError(f"{model_dir}: no {CARD} found; a model directory holds the card and fold_<k>.safetensors files.")
    try:
        return ModelCard.from_dict(json.loads(p.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise ModelError(f"{p}: the model card is not valid ({e}).") from None


def fold_paths(model_dir: Path) -> list[Path]:
    return sorted(Path(model_dir).glob("fold_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))


def model_hash(model_dir: Path) -> str:
    """Identity of a model: sha256 over every fold's weights, or over an imported model's file (first 16 hex)."""
    h = hashlib.sha256()
    imported = [Path(model_dir) / n for n in ("model.onnx", "model.pt") if (Path(model_dir) / n).is_file()]
    for p in fold_paths(model_dir) + imported:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)
