"""Training: patient-level k-fold cross-validation; the folds form the inference ensemble.

``python -m kneeage train --manifest M --out DIR`` (also under ``torchrun --nproc_per_node N``: DDP,
gloo on CPU, NCCL on GPU). Early stopping on validation MAE; resumable per epoch; the model
directory gets ``fold_<k>.safetensors`` and ``model_card.json`` (config, label source, per-fold
validation metrics, out-of-fold calibrated intervals, QC thresholds, code version, date).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from . import __version__
from .calibration import (FEATURE_QC_FILE, SEX_CODES, calibrate_coded, calibrate_interval, cross_fitted_output, fit_feature_qc,
                          fit_output_calibration)
from .cohort import check_sexes, frame_images
from .errors import InputError
from .files import atomic_write
from .localise import Framer, load_trained
from .model import BoneAgeNet, ModelCard, ModelConfig, fold_paths, load_card, load_fold, save_card, save_fold
from .preprocess import augment, normalisation_text, normalise

REFERENCE = "reference_bone_age_months"  # the reads a site compares a model with


@dataclass
class TrainSettings:
    label_column: str = "reference_bone_age_months"
    image_column: str = "image"
    folds: int = 5
    epochs: int = 30
    patience: int = 6
    min_epochs: int = 0  # early stopping only from this epoch on
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0
    crop: str = "auto"
    init_from: str | None = None
    localiser: str | None = None  # directory of a trained localiser (needed with a physical spacing)
    augment: str = "auto"  # light | strong | auto (strong when framed in millimetres): kneeage.preprocess.augment
    training_data: str = ""
    synthetic_demo: bool = False  # trained on phantoms: say so wherever its numbers appear


@dataclass
class TrainingSet:
    images: torch.Tensor  # (N, 1, S, S) uint8
    sex: torch.Tensor  # (N,) 1 = M
    chron: torch.Tensor  # (N,) months (nan where unknown)
    labels: torch.Tensor  # (N,) months
    groups: np.ndarray  # patient ids
    case_ids: list
    reference: np.ndarray | None = None  # reference reads (months; nan where missing): what the interval is calibrated on


def to_uint8_input(x: np.ndarray) -> np.ndarray:
    """A model input in [0, 1] as the training set stores it (uint8; the network sees it / 255)."""
    return (x * 255 + 0.5).astype(np.uint8)


def load_training_set(manifest: str | Path, label_column: str, size: int, image_column: str = "image",
                      crop: str = "auto", workers: int | None = None, framer=None) -> TrainingSet:
    """Decode every labelled image of a manifest to the network's input (:func:`kneeage.cohort.frame_images`).
    ``framer`` (kneeage.localise.Framer) frames each image; without one, the legacy pixel-relative crop at
    ``size``."""
    manifest = Path(manifest)
    df = pd.read_csv(manifest)
    for col in ("case_id", image_column, "sex", label_column):
        if col not in df.columns:
            raise InputError(f"{manifest.name}: column {col!r} is missing (columns: {', '.join(df.columns)}).")
    df = df[df[label_column].notna()].reset_index(drop=True)
    if len(df) < 2:
        raise InputError(f"{manifest.name}: fewer than two rows have a {label_column!r} value.")
    check_sexes(df, manifest.name)
    framer = framer or Framer(size)
    arrays = frame_images(df, manifest.parent, lambda p, box, spacing: to_uint8_input(framer(p, box, spacing)),
                          image_column, crop, workers)
    chron = df["chronological_age_months"] if "chronological_age_months" in df.columns else pd.Series(np.nan, index=df.index)
    groups = df["patient_id"].astype(str).to_numpy() if "patient_id" in df.columns else df["case_id"].astype(str).to_numpy()
    return TrainingSet(
        images=torch.from_numpy(np.stack(arrays))[:, None],
        sex=torch.tensor((df.sex == "M").to_numpy(), dtype=torch.float32),
        chron=torch.tensor(chron.to_numpy(dtype=float), dtype=torch.float32),
        labels=torch.tensor(df[label_column].to_numpy(dtype=float), dtype=torch.float32),
        groups=groups,
        case_ids=df.case_id.astype(str).tolist(),
        reference=pd.to_numeric(df[REFERENCE], errors="coerce").to_numpy(float) if REFERENCE in df.columns else None,
    )


def assign_folds(groups: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Patient-level folds: every image of one patient lands in the same fold."""
    uniq = np.unique(groups)
    if len(uniq) < k:
        raise InputError(f"{k}-fold cross-validation needs at least {k} patients; the manifest has {len(uniq)}.")
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = {uniq[i]: j % k for j, i in enumerate(order)}
    return np.array([fold_of[g] for g in groups])


# -------------------------------------------------------------------------------- distributed


def _dist():
    """(rank, world) and whether torch.distributed is initialised by us."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


# ------------------------------------------------------------------------------------ training


@torch.no_grad()
def predict_tensor(model, images, sex, chron, device, batch=256, flip=False, features=False) -> np.ndarray:
    """One network over stored (uint8) images in batches: bone ages (flip-averaged with ``flip``), or with
    ``features`` its pooled backbone features."""
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = normalise(images[i : i + batch].to(device, non_blocking=True).float() / 255)
        if features:
            out.append(model.features(x).float().cpu())
            continue
        s, c = sex[i : i + batch].to(device), chron[i : i + batch].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            y = model(x, s, c).float()
            if flip:
                y = (y + model(torch.flip(x, dims=[3]), s, c).float()) / 2
        out.append(y.cpu())
    return torch.cat(out).numpy()


def _train_fold(cfg: ModelConfig, st: TrainSettings, data: TrainingSet, train_idx, val_idx, fold: int,
                out: Path, rank: int, world: int, device, log) -> tuple[BoneAgeNet, dict]:
    torch.manual_seed(st.seed * 100 + fold)
    model = BoneAgeNet(cfg).to(device)
    if st.init_from:
        _init_backbone(model, Path(st.init_from))
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=st.lr, weight_decay=st.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / (st.batch_size * world)))
    total = steps_per_epoch * st.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps_per_epoch)) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    resume = out / ".resume" / f"fold_{fold}.pt"
    start, best, best_state, bad = 0, float("inf"), None, 0
    history = []
    if resume.is_file():
        ck = torch.load(resume, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        start, best, best_state, bad, history = ck["epoch"] + 1, ck["best"], ck["best_state"], ck["bad"], ck["history"]
        log(f"fold {fold}: resuming at epoch {start + 1}")
    gen = torch.Generator(device=device).manual_seed(st.seed * 1000 + fold)
    if resume.is_file() and "gen" in ck:  # the augmentations continue where they stopped, as if never cut off
        gen.set_state(ck["gen"])
    strong = st.augment == "strong" or (st.augment == "auto" and cfg.spacing_mm is not None)
    imgs, sex, chron, y = data.images, data.sex, data.chron, data.labels
    ymean, ystd = cfg.label_mean, cfg.label_std
    for epoch in range(start, st.epochs):
        net.train()
        perm = torch.from_numpy(np.random.default_rng(st.seed * 7919 + fold * 131 + epoch).permutation(train_idx))
        perm = perm[: steps_per_epoch * st.batch_size * world] if len(perm) >= st.batch_size * world else perm
        mine = perm[rank::world]
        t0, losses = time.time(), []
        for i in range(0, len(mine), st.batch_size):
            b = mine[i : i + st.batch_size]
            x = imgs[b].to(device, non_blocking=True).float() / 255
            x = normalise(augment(x, gen, strong=strong, grey_scale=cfg.intensity != "equalise"))
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                pred = net(x, sex[b].to(device), chron[b].to(device))
            loss = torch.nn.functional.smooth_l1_loss((pred.float() - ymean) / ystd, (y[b].to(device) - ymean) / ystd, beta=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        vp = predict_tensor(model, imgs[val_idx], sex[val_idx], chron[val_idx], device)
        mae = float(np.abs(vp - y[val_idx].numpy()).mean())
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_mae": mae, "seconds": time.time() - t0})
        log(f"fold {fold} epoch {epoch + 1}/{st.epochs}: loss {np.mean(losses):.4f}  val MAE {mae:.2f} mo  ({time.time() - t0:.1f}s)")
        if mae < best - 1e-3:
            best, bad = mae, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        if rank == 0:  # written whole: a kill mid-save keeps the last one
            ck = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch,
                  "best": best, "best_state": best_state, "bad": bad, "history": history, "gen": gen.get_state()}
            atomic_write(resume, lambda tmp: torch.save(ck, tmp))
        if bad >= st.patience and epoch + 1 >= st.min_epochs:
            log(f"fold {fold}: early stop after epoch {epoch + 1} (best val MAE {best:.2f})")
            break
    model.load_state_dict(best_state)
    return model, {"fold": fold, "n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "val_mae": best,
                   "epochs_run": len(history), "history": history}


def _init_backbone(model: BoneAgeNet, hand_dir: Path) -> None:
    """Start the knee backbone from a hand model's fold-0 backbone (transfer from a hand model)."""
    card = load_card(hand_dir)
    src = load_fold(card.config, fold_paths(hand_dir)[0])
    if card.config.arch != model.cfg.arch:
        raise InputError(f"--init-from {hand_dir}: its architecture {card.config.arch} differs from {model.cfg.arch}.")
    model.backbone.load_state_dict(src.backbone.state_dict())


def train(manifest: str | Path, out: str | Path, cfg: ModelConfig | None = None, st: TrainSettings | None = None,
          name: str = "kneeage model", log=print, data: TrainingSet | None = None) -> ModelCard:
    """Train a k-fold ensemble from a manifest into model directory ``out``; returns its card."""
    cfg = cfg or ModelConfig()
    st = st or TrainSettings()
    out = Path(out)
    rank, world = _dist()
    device = _device()
    quiet = (lambda *a, **k: None) if rank else log
    localiser = None
    if cfg.spacing_mm is not None:
        if not st.localiser:
            raise InputError("A model framed in millimetres (--spacing) needs a trained localiser (--localiser DIR).")
        localiser = load_trained(st.localiser)
    if data is None:
        data = load_training_set(manifest, st.label_column, cfg.input_size, st.image_column, st.crop,
                                 framer=Framer(cfg.input_size, cfg.spacing_mm, localiser, cfg.intensity))
    if device.type == "cuda":  # keep the (uint8) images on the GPU: no loader in the loop
        data = replace(data, images=data.images.to(device))
    y = data.labels.numpy()
    cfg = replace(cfg, label_mean=float(y.mean()), label_std=float(max(y.std(), 1.0)))
    folds = assign_folds(data.groups, st.folds, st.seed)
    state_path = out / "train_state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"folds": {}}
    oof = np.full(len(y), np.nan)
    for k, v in state["folds"].items():
        oof[np.array(v["val_idx"])] = v["oof"]
    for fold in range(st.folds):
        val_idx = np.flatnonzero(folds == fold)
        train_idx = np.flatnonzero(folds != fold)
        if str(fold) in state["folds"] and (out / f"fold_{fold}.safetensors").is_file():
            quiet(f"fold {fold}: already trained, skipping")
            continue
        model, metrics = _train_fold(cfg, st, data, train_idx, val_idx, fold, out, rank, world, device, quiet)
        vp = predict_tensor(model, data.images[val_idx], data.sex[val_idx], data.chron[val_idx], device, flip=True)
        oof[val_idx] = vp
        metrics["val_mae_flip_tta"] = float(np.abs(vp - y[val_idx]).mean())
        if rank == 0:
            save_fold(model, out, fold)
            state["folds"][str(fold)] = {"metrics": metrics, "val_idx": val_idx.tolist(), "oof": vp.tolist()}
            atomic_write(state_path, json.dumps(state))
        if world > 1:
            torch.distributed.barrier()
    if rank == 0 and localiser is not None:
        localiser.save(out)
    card = _finish(cfg, st, data, oof, folds, state, out, name, device, localiser) if rank == 0 else None
    if world > 1:
        torch.distributed.barrier()
    return card


def _finish(cfg, st, data, oof, folds, state, out: Path, name, device, localiser=None) -> ModelCard:
    """Calibrate the output and the intervals on the out-of-fold predictions, set QC thresholds, write the card."""
    y = data.labels.numpy()
    sex = data.sex.numpy()
    res = oof - y
    ref = data.reference
    calibration, scale = {}, y
    if ref is not None and np.isfinite(ref).sum() >= 100:  # calibrate on what sites compare with: the reference reads
        calibration, scale = fit_output_calibration(oof, ref, sex), ref
        cal_oof = cross_fitted_output(oof, ref, sex, folds)
        interval = calibrate_interval(cal_oof, ref)
        interval["calibrated_against"] = "reference reads (out-of-fold predictions, output calibrated on the other folds)"
        interval["oof_mae_vs_reference"] = float(np.nanmean(np.abs(cal_oof - ref)))
        interval["oof_mae_vs_reference_uncalibrated"] = float(np.nanmean(np.abs(oof - ref)))
    else:
        interval = calibrate_interval(oof, y)
        interval["calibrated_against"] = f"training labels ({st.label_column}, out-of-fold predictions)"
    # QC: fold disagreement on training images, and feature-space distance (fitted on up to 1024 training
    # images, thresholds from up to 512 others).
    models = [load_fold(cfg, p).to(device) for p in fold_paths(out)]
    order = np.random.default_rng(0).permutation(len(y))
    n_held = min(512, len(y) // 2)
    held_idx, fit_idx = order[:n_held], order[n_held : n_held + 1024]
    per_fold = np.stack([predict_tensor(m, data.images[held_idx], data.sex[held_idx], data.chron[held_idx], device) for m in models])
    per_fold = calibrate_coded(per_fold, sex[held_idx], calibration)  # fold disagreement on the scale the user sees
    feats = {k: predict_tensor(models[0], data.images[i], None, None, device, features=True) for k, i in (("fit", fit_idx), ("held", held_idx))}
    tensors, qc = fit_feature_qc(feats["fit"], feats["held"])
    atomic_write(out / FEATURE_QC_FILE, lambda tmp: save_file({k: torch.from_numpy(v) for k, v in tensors.items()}, str(tmp)))
    qc["fold_sd_threshold_months"] = float(np.percentile(per_fold.std(0), 99)) * 1.5 if len(models) > 1 else None
    if cfg.body_part == "knee":  # the top of the trained range: reported as "at least", never as a number
        qc["mature_from_months"] = {s: float(np.nanquantile(scale[sex == v], 0.95)) for s, v in SEX_CODES if (sex == v).sum() >= 20}
    fold_metrics = [state["folds"][str(k)]["metrics"] for k in range(st.folds)]
    card = ModelCard(
        name=name,
        config=cfg,
        folds=st.folds,
        label_source=st.label_column,
        synthetic_demo=st.synthetic_demo,
        training_data=st.training_data or f"{len(y)} images; labels from column {st.label_column!r}",
        normalisation=normalisation_text(cfg.spacing_mm, cfg.intensity),
        code_version=f"kneeage {__version__}",
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        fold_metrics=fold_metrics,
        output_calibration=calibration,
        interval=interval,
        qc=qc,
        label_range_months=(float(np.nanmin(scale)), float(np.nanmax(scale))),
        localiser=localiser.info if localiser is not None else {},
        results={"oof_mae": float(np.abs(res).mean()), "oof_bias": float(res.mean()), "n": int(len(y)),
                 "settings": asdict(st)},
    )
    save_card(card, out)
    (out / "train_state.json").unlink(missing_ok=True)
    shutil.rmtree(out / ".resume", ignore_errors=True)
    return card
