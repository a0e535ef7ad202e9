"""Predictions made elsewhere: a validation cohort that carries bone ages from other software and no images.

A site that already runs a hand model (BoneXpert, Deeplasia, …) has its numbers in a CSV, not weights. Such a
manifest has the usual columns (``case_id``, ``sex``, ages, ``reference_bone_age_months``) and one or more
prediction columns: ``predicted_bone_age_months`` or named methods such as ``bonexpert_bone_age_months``
(``_years`` accepted). No ``image`` column is needed. Each prediction column becomes a run of the cohort,
stored like a model's run, so every analysis (summary, Bland-Altman, strata, comparators, exports, site
bundle, pooling, model comparison) takes it as it is; its other prediction columns stay comparators. A run's
``model_dir`` records its column (``predictions:<column>``) and exports say where each prediction came from
(:func:`source_of`).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .cohort import CohortCheck, ImageSource, SourceRef, check_cohort, read_manifest
from .errors import InputError, KneeageError
from .model import load_card
from .store import Store

PREFIX = SourceRef("predictions").text()  # "predictions:": a run's model_dir and a cohort's source say so
PLACEHOLDER = "(no image)"
_COLUMN = re.compile(r"(?!reference_|chronological_)(\w+)_bone_age_(months|years)")


class NoImages(ImageSource):
    """The image source of a predictions-only cohort: there are no images, and nothing asks for one."""

    def __init__(self, manifest_name: str = "manifest.csv"):
        self.label = "no images (predictions made elsewhere)"
        self.ref = SourceRef("predictions", manifest_name)

    def problem(self, name: str) -> str | None:
        return None

    def _read(self, name: str, cap: int) -> bytes:
        raise InputError(f"{name}: this cohort carries predictions made elsewhere, not images.")


def prediction_columns(columns) -> dict[str, str]:
    """Method name → manifest column, for every ``<method>_bone_age_months|years`` column (normalised headers)."""
    out = {}
    for c in columns:
        m = _COLUMN.fullmatch(str(c))
        if m:
            out[m.group(1)] = c
    return out


def method_label(method: str, column: str) -> str:
    return f"{'predictions' if method == 'predicted' else method} (column {column})"


def check_predictions(manifest, name: str = "manifest.csv") -> CohortCheck:
    """The dry run of a predictions-only cohort: :func:`kneeage.cohort.check_cohort` without images, plus a
    warning for each missing or unreadable prediction. ``summary["predictions"]`` maps method → column."""
    df = read_manifest(manifest, name, images=False)
    cols = prediction_columns(df.columns)
    if not cols:
        raise InputError(f"{name}: no prediction column; name it predicted_bone_age_months, or <method>_bone_age_months "
                         f"such as bonexpert_bone_age_months (columns: {', '.join(df.columns)}).")
    df = df.copy()
    if "image" not in df:
        df["image"] = PLACEHOLDER
    df["image"] = [v if str(v).strip() else PLACEHOLDER for v in df["image"]]
    check = check_cohort(df, NoImages(name), decode=False)
    extra = []
    for method, col in cols.items():
        for i, raw in enumerate(df[col]):
            text = str(raw).strip()
            if not text:
                extra.append({"row": i + 2, "case_id": str(df.at[i, "case_id"]), "severity": "warning",
                              "problem": f"no prediction in column {col}"})
            elif not np.isfinite(pd.to_numeric(text.replace(",", "."), errors="coerce")):
                extra.append({"row": i + 2, "case_id": str(df.at[i, "case_id"]), "severity": "warning",
                              "problem": f"prediction {text!r} in column {col} is not a number"})
    if extra:
        check.problems = (pd.concat([check.problems, pd.DataFrame(extra)], ignore_index=True)
                          .sort_values(["row", "severity"], kind="stable").reset_index(drop=True))
        check.summary["warnings"] += len(extra)
    check.summary["predictions"] = cols
    check.assumptions.insert(0, f"no images: the predictions come from column(s) {', '.join(cols.values())}, made elsewhere.")
    return check


def record(store: Store, cohort_id: str, methods: dict[str, str]) -> list[str]:
    """One stored run per prediction column (``methods``: method → manifest column); returns the run ids.
    Idempotent: recording the same cohort again rewrites the same runs."""
    cases = store.cases(cohort_id)
    run_ids = []
    for method, col in methods.items():
        key = f"comparator_{method}"
        if key not in cases:
            raise InputError(f"column {col} is not part of stored cohort {cohort_id}.")
        model_hash = hashlib.sha256(f"{PREFIX}{method}".encode()).hexdigest()[:16]
        rid = store.run_for(cohort_id, method_label(method, col), model_hash, f"{PREFIX}{col}", False)
        rows = []
        for cid, v in zip(cases.case_id, pd.to_numeric(cases[key], errors="coerce")):
            if np.isfinite(v):
                rows.append({"case_id": cid, "status": "done", "predicted_bone_age_months": float(v), "interval_lower": None,
                             "interval_upper": None, "fold_values": None, "flags": "", "error": None})
            else:
                rows.append({"case_id": cid, "status": "failed", "error": f"no prediction in column {col}"})
        store.save_results(rid, rows)
        store.finish(rid)
        run_ids.append(rid)
    return run_ids


def ingest(store: Store, check: CohortCheck, name: str, site: str, manifest_name: str = "manifest.csv") -> tuple[str, list[str]]:
    """Store a checked predictions-only cohort and one run per prediction column: (cohort id, run ids)."""
    cid = store.add_cohort(check.cases, name, site, NoImages(manifest_name).ref.text(), check.assumptions, False,
                           check.fingerprint(name, site))
    return cid, record(store, cid, check.summary["predictions"])


def own_column(run: dict) -> str | None:
    """The comparator column a predictions run was made from (left out of its own comparisons), else None."""
    spec = run.get("model_dir") or ""
    if not spec.startswith(PREFIX):
        return None
    m = _COLUMN.fullmatch(spec.removeprefix(PREFIX))
    return f"comparator_{m.group(1)}" if m else None


def source_of(run: dict) -> str:
    """Where a run's predictions came from, in words: a column of the manifest, an imported file, or a kneeage
    model directory (named by its weights hash)."""
    spec = run.get("model_dir") or ""
    if spec.startswith(PREFIX):
        return f"made elsewhere: column {spec.removeprefix(PREFIX)} of the site's manifest, as given by the site"
    try:
        card = load_card(Path(spec))
    except KneeageError:
        return f"model directory {Path(spec).name} (hash {run.get('model_hash')}; not on this machine now)"
    imp = card.imported
    if imp:
        return (f"imported {imp['format']} file {imp.get('original_file', imp['file'])} (sha256 {imp['sha256'][:16]}), "
                f"card {imp.get('card_file', 'card.toml')}, model directory {Path(spec).name}")
    return f"kneeage model directory {Path(spec).name} ({card.folds} folds, weights hash {run.get('model_hash')})"
