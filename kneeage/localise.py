"""Where the model looks: a learned localiser for the region of interest and the physical framing.

**Localiser.** A small CNN that finds the knee (or, for a hand model, the hand and wrist) on the whole
film. It sees the image pixel-relative (aspect kept, zero padded to ``SIZE`` × ``SIZE``, 1st-99th
percentile scaled), so it needs no pixel spacing, and returns the region's box in the image's pixels.
It is trained on phantoms, whose truth knows the region (``PhantomTruth.region_px``, written to a
cohort's ``truth.csv`` as ``image_box`` / ``hand_image_box``), on crops that mimic tight collimation and
with exposure, gamma and noise augmentation. It is saved as ``localiser.safetensors`` in the model
directory; the card's ``localiser`` entry describes it.

**Framing** (:class:`Framer`). A model whose config gives ``spacing_mm`` sees a fixed physical window:
``input_size`` × ``input_size`` pixels at ``spacing_mm`` mm per pixel, centred on the region's centre. The
region comes from the user's box when there is one, else from the localiser. The image's spacing comes
from the DICOM header (PixelSpacing, or ImagerPixelSpacing corrected for magnification), else from what
the user gives (a manifest's ``pixel_spacing_mm`` column, ``--spacing`` on the CLI, the single-case
page), else it is *estimated from the anatomy*: the localiser's box is taken to be as wide as the median
region of the training films (less accurate; the result says so).
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file
from torch import nn

from .cohort import spacing_column
from .errors import InputError, ModelError
from .files import atomic_write
from .imaging import load_radiograph, to_uint8
from .model import load_card
from .preprocess import parse_box, resolve_box, to_input, window_input
from .viewer import shuttered

SIZE = 96
FILE = "localiser.safetensors"


class LocaliserNet(nn.Module):
    """Four conv-BN-ReLU stages (each halving the image), then a small fully connected head that keeps
    where things are: (N, 1, 96, 96) → (N, 4) box as fractions of the padded square."""

    def __init__(self, width: int = 16):
        super().__init__()
        layers, c_in = [], 1
        for c in (width, width * 2, width * 3, width * 4):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers, nn.Conv2d(c_in, 16, 1))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * (SIZE // 16) ** 2, 128), nn.ReLU(inplace=True), nn.Linear(128, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.features(x)))


def overview(pixels: np.ndarray) -> tuple[np.ndarray, float, int, int]:
    """The localiser's view of a whole image and the map back: (SIZE × SIZE in [0, 1], scale, oy, ox), where
    padded-square pixel (u, v) is image pixel ((u - ox) / scale, (v - oy) / scale) (as :func:`to_input` pads)."""
    h, w = pixels.shape
    scale = SIZE / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    return to_input(pixels, SIZE, "full"), scale, (SIZE - nh) // 2, (SIZE - nw) // 2


def _to_fractions(box, scale, oy, ox) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([x0 * scale + ox, y0 * scale + oy, x1 * scale + ox, y1 * scale + oy], np.float32) / SIZE


def _from_fractions(f, scale, oy, ox) -> tuple[float, float, float, float]:
    f = np.asarray(f, float) * SIZE
    x0, x1 = sorted(((f[0] - ox) / scale, (f[2] - ox) / scale))
    y0, y1 = sorted(((f[1] - oy) / scale, (f[3] - oy) / scale))
    return float(x0), float(y0), float(x1), float(y1)


class Localiser:
    """A trained localiser (its weights and the median region width, mm, of its training films)."""

    def __init__(self, net: LocaliserNet, info: dict):
        self.net = net.eval()
        self.info = info

    @torch.no_grad()
    def find_many(self, images: list[np.ndarray]) -> list[tuple[float, float, float, float]]:
        views = [overview(p) for p in images]
        x = torch.from_numpy(np.stack([v[0] for v in views]))[:, None]
        f = self.net((x - 0.5) / 0.25).numpy()
        return [_from_fractions(fi, *v[1:]) for fi, v in zip(f, views)]

    def find(self, pixels: np.ndarray) -> tuple[float, float, float, float]:
        """The region's box (x0, y0, x1, y1) in the image's pixels."""
        return self.find_many([pixels])[0]

    def save(self, model_dir: Path) -> None:
        atomic_write(Path(model_dir) / FILE, lambda tmp: save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(tmp)))

    @classmethod
    def load(cls, model_dir: Path, info: dict) -> Localiser:
        path = Path(model_dir) / FILE
        if not path.is_file():
            raise ModelError(f"{model_dir}: the card names a localiser but {FILE} is missing.")
        net = LocaliserNet(info.get("width", 16))
        net.load_state_dict(load_file(str(path)))
        return cls(net, info)


# ------------------------------------------------------------------------------------ framing


@dataclass(frozen=True)
class Framing:
    """How one image was framed for the model: the region (user's or localiser's box, image pixels), the
    window cut around its centre (image pixels), the spacing used and where it came from."""

    region_px: tuple[float, float, float, float]
    region_source: str  # "user box", "localiser", "whole image"
    window_px: tuple[float, float, float, float] | None
    spacing_mm: tuple[float, float] | None
    spacing_source: str  # "header", "given", "estimated from the anatomy", "not used"

    def misses(self, found_px) -> bool:
        """A user's box and the region the localiser finds (``found_px``) share nothing: neither holds the
        other's centre (a box drawn around the laterality marker, or on the wrong part of the film)."""

        def holds(b, other):
            cx, cy = (other[0] + other[2]) / 2, (other[1] + other[3]) / 2
            return b[0] <= cx <= b[2] and b[1] <= cy <= b[3]

        return not (holds(self.region_px, found_px) or holds(found_px, self.region_px))

    def as_dict(self) -> dict:
        return {"region_px": [round(v, 1) for v in self.region_px], "region_source": self.region_source,
                "window_px": None if self.window_px is None else [round(v, 1) for v in self.window_px],
                "spacing_mm": None if self.spacing_mm is None else [round(v, 5) for v in self.spacing_mm],
                "spacing_source": self.spacing_source}


class Framer:
    """Turns an image into the model's input (see the module docstring). ``spacing_mm`` None: the legacy
    pixel-relative framing (the region resized to ``size``)."""

    def __init__(self, size: int, spacing_mm: float | None = None, localiser: Localiser | None = None,
                 intensity: str = "percentile"):
        self.size, self.spacing_mm, self.localiser, self.intensity = size, spacing_mm, localiser, intensity

    @property
    def window_mm(self) -> float | None:
        return None if self.spacing_mm is None else self.size * self.spacing_mm

    def frame(self, pixels: np.ndarray, box="auto", spacing=None) -> Framing:
        """``box``: "auto"/None/"" (the localiser), "full" or a user box; ``spacing``: (row, col) mm or one number."""
        h, w = pixels.shape
        if isinstance(box, str) and box.strip() in ("", "auto"):
            box = "auto"
        if box is None or box == "auto":
            if self.localiser is not None:
                region, src = self.localiser.find(pixels), "localiser"
            else:
                region, src = tuple(float(v) for v in resolve_box(pixels, "auto")), "automatic crop"
        elif box == "full":
            region, src = (0.0, 0.0, float(w), float(h)), "whole image"
        else:
            region, src = tuple(float(v) for v in resolve_box(pixels, parse_box(box) if isinstance(box, str) else box)), "user box"
        if self.spacing_mm is None:
            return Framing(region, src, None, None, "not used")
        if spacing is not None and not isinstance(spacing, (tuple, list)):
            spacing = (float(spacing), float(spacing))
        if spacing is not None and all(np.isfinite(v) and v > 0 for v in spacing):
            sp, sp_src = (float(spacing[0]), float(spacing[1])), "given"
        else:
            typical = (self.localiser.info.get("median_region_width_mm") if self.localiser else None) or 100.0
            est = typical / max(region[2] - region[0], 1.0)
            sp, sp_src = (est, est), "estimated from the anatomy"
        cx, cy = (region[0] + region[2]) / 2, (region[1] + region[3]) / 2
        hw_x, hw_y = self.window_mm / 2 / sp[1], self.window_mm / 2 / sp[0]
        return Framing(region, src, (cx - hw_x, cy - hw_y, cx + hw_x, cy + hw_y), sp, sp_src)

    def input(self, pixels: np.ndarray, framing: Framing) -> np.ndarray:
        if framing.window_px is None:  # pixel-relative (models made before physical framing)
            return to_input(pixels, self.size, "full" if framing.region_source == "whole image" else framing.region_px)
        x0, y0, x1, y1 = framing.window_px
        return window_input(pixels, ((x0 + x1) / 2, (y0 + y1) / 2), framing.spacing_mm, self.size, self.spacing_mm,
                            intensity=self.intensity)

    def __call__(self, pixels: np.ndarray, box="auto", spacing=None) -> np.ndarray:
        return self.input(pixels, self.frame(pixels, box, spacing))


def framed_thumbnail(pixels: np.ndarray, framing: Framing, side: int = 256) -> np.ndarray:
    """RGB uint8 thumbnail of the whole film (collimation shown black) with the region (orange) and the model's
    window (cyan) drawn."""
    small = to_uint8(shuttered(pixels), side)
    k = small.shape[1] / pixels.shape[1]
    img = Image.fromarray(small).convert("RGB")
    draw = ImageDraw.Draw(img)
    if framing.window_px is not None:
        draw.rectangle([v * k for v in framing.window_px], outline=(0, 200, 255), width=2)
    draw.rectangle([v * k for v in framing.region_px], outline=(255, 140, 0), width=2)
    return np.asarray(img)


# ----------------------------------------------------------------------------------- training


def train_localiser(manifest: str | Path, truth: str | Path, out: str | Path, image_column: str = "image",
                    epochs: int = 10, crops: int = 1, seed: int = 0, max_films: int = 1200, log=print) -> Localiser:
    """Train a localiser on a phantom cohort: images from ``manifest``'s ``image_column`` (the first
    ``max_films``), boxes from the truth file's ``<image_column>_box`` column. Each film is also seen as
    ``crops`` random crops that keep the region (tight collimation); every epoch draws new exposure and noise. Saves it to ``out`` and returns it; reports the held-out (last 10%) error in
    the card entry as the mean centre error in % of the region width."""
    manifest, out = Path(manifest), Path(out)
    df = pd.read_csv(manifest).merge(pd.read_csv(truth), on="case_id")
    col = f"{image_column}_box"
    if col not in df.columns:
        raise InputError(f"{Path(truth).name}: column {col!r} is missing; a localiser learns from the regions phantoms record.")
    df = df[df[image_column].fillna("").astype(str).str.len() > 0].head(max_films).reset_index(drop=True)
    spc = spacing_column(image_column)
    rng = np.random.default_rng(seed)

    def views(i):
        r = load_radiograph(manifest.parent / df.at[i, image_column])
        box = tuple(float(v) for v in df.at[i, col].split(","))
        p = r.pixels
        h, w = p.shape
        sub = np.random.default_rng([seed, i])
        out_ = []
        for k in range(1 + crops):
            if k == 0:
                y0, x0, y1, x1 = 0, 0, h, w
            else:  # a crop that keeps the region, 0-60% of the margin cut on each side
                y0 = int(sub.uniform(0, 0.6) * max(box[1], 0))
                x0 = int(sub.uniform(0, 0.6) * max(box[0], 0))
                y1 = h - int(sub.uniform(0, 0.6) * max(h - box[3], 0))
                x1 = w - int(sub.uniform(0, 0.6) * max(w - box[2], 0))
            v, scale, oy, ox = overview(p[y0:y1, x0:x1])
            out_.append((v, _to_fractions((box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0), scale, oy, ox)))
        width_mm = (box[2] - box[0]) * (r.pixel_spacing_mm[1] if r.pixel_spacing_mm else float(df.at[i, spc]) if spc in df else np.nan)
        return out_, width_mm

    with ThreadPoolExecutor(os.cpu_count() or 1) as ex:
        got = list(ex.map(views, range(len(df))))
    n = len(got)
    held = np.zeros(n, bool)
    held[rng.permutation(n)[: max(1, n // 10)]] = True
    X = torch.from_numpy(np.stack([v for (vs, _), h in zip(got, held) if not h for v, _ in vs]))[:, None]
    Y = torch.from_numpy(np.stack([f for (vs, _), h in zip(got, held) if not h for _, f in vs]))
    Xh = torch.from_numpy(np.stack([vs[0][0] for (vs, _), h in zip(got, held) if h]))[:, None]
    Yh = np.stack([vs[0][1] for (vs, _), h in zip(got, held) if h])
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = LocaliserNet().to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * math.ceil(len(X) / 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(X), generator=gen)
        losses = []
        for i in range(0, len(X), 64):
            b = perm[i : i + 64]
            x, y = (t.to(device) for t in _augment(X[b], Y[b], gen))
            loss = nn.functional.smooth_l1_loss(net((x - 0.5) / 0.25), y, beta=0.02)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        if (epoch + 1) % 5 == 0 or epoch + 1 == epochs:
            log(f"localiser epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}")
    net = net.cpu().eval()
    with torch.no_grad():
        f = net((Xh - 0.5) / 0.25).numpy()
    width = Yh[:, 2] - Yh[:, 0]
    centre_err = np.hypot((f[:, 0] + f[:, 2] - Yh[:, 0] - Yh[:, 2]) / 2, (f[:, 1] + f[:, 3] - Yh[:, 1] - Yh[:, 3]) / 2) / width
    widths = np.array([w for _, w in got], float)
    info = {"file": FILE, "size": SIZE, "width": 16, "image_column": image_column, "trained_on": f"{n} films of {manifest.parent.name}",
            "median_region_width_mm": float(np.nanmedian(widths)) if np.isfinite(widths).any() else None,
            "held_out_centre_error_pct_of_width": {"mean": float(centre_err.mean() * 100), "p95": float(np.percentile(centre_err, 95) * 100)}}
    out.mkdir(parents=True, exist_ok=True)
    loc = Localiser(net, info)
    loc.save(out)
    (out / "localiser.json").write_text(json.dumps(info, indent=2))
    log(f"localiser: held-out centre error {info['held_out_centre_error_pct_of_width']['mean']:.1f}% of the region width "
        f"(p95 {info['held_out_centre_error_pct_of_width']['p95']:.1f}%)")
    return loc


def load_trained(directory: str | Path) -> Localiser:
    """A localiser written by :func:`train_localiser` (``localiser.json`` + weights) or by a model directory."""
    directory = Path(directory)
    meta = directory / "localiser.json"
    if meta.is_file():
        return Localiser.load(directory, json.loads(meta.read_text()))
    info = load_card(directory).localiser
    if not info:
        raise ModelError(f"{directory}: no localiser here (no localiser.json and the model card names none).")
    return Localiser.load(directory, info)


def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-right flip (the box flips with it), exposure (gamma 0.5-2, contrast 0.3-1.2), noise up to SD 0.08."""
    n = len(x)
    flip = torch.rand(n, generator=gen) < 0.5
    x = x.clone()
    y = y.clone()
    x[flip] = torch.flip(x[flip], dims=[3])
    y[flip] = torch.stack([1 - y[flip][:, 2], y[flip][:, 1], 1 - y[flip][:, 0], y[flip][:, 3]], 1)
    gamma = torch.exp(torch.empty(n).uniform_(-0.7, 0.7, generator=gen)).view(n, 1, 1, 1)
    contrast = torch.empty(n).uniform_(0.3, 1.2, generator=gen).view(n, 1, 1, 1)
    x = x.clamp(0, 1) ** gamma * contrast + torch.empty(n).uniform_(-0.1, 0.1, generator=gen).view(n, 1, 1, 1)
    x = x + torch.randn(x.shape, generator=gen) * torch.empty(n).uniform_(0, 0.08, generator=gen).view(n, 1, 1, 1)
    return x.clamp(0, 1), y
