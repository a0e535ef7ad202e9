"""Limits a site can change, each with a default and an environment variable ``KNEEAGE_<NAME>``.

| name | default | what it bounds |
|---|---|---|
| max_image_megapixels | 100 | pixels of one radiograph, checked from the header before decoding |
| max_upload_mb | 2048 | one uploaded file (cohort zip, manifest, radiograph) |
| max_unpacked_gb | 20 | everything inside a cohort zip, unpacked |
| max_files | 100000 | files in a cohort zip, rows in a manifest |
| max_member_ratio | 200 | how many times one zip member may expand (zip-bomb guard) |
| max_member_mb | 512 | one image file, unpacked (a zip member or a file in a folder) |
| max_field_chars | 10000 | characters in one manifest cell |

The browser's own upload cap is ``server.maxUploadSize`` in ``.streamlit/config.toml`` (MB), kept equal
to ``max_upload_mb``.

Folders: ``$KNEEAGE_HOME`` is the study folder (default ``studies/`` of the project: the database, the PI
password, rendered and uploaded cohorts); ``$KNEEAGE_MODELS`` the installed models (default ``models/``); the
default model is ``demo`` there, else the first installed one.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

PROJECT_DIR = Path(__file__).resolve().parents[1]  # the checkout kneeage is installed from (editable install)
SHIPPED_STUDIES = PROJECT_DIR / "studies"  # protocols shipped with the project
BUNDLED_MODELS = PROJECT_DIR / "models"  # the bundled demo model lives here

DEFAULTS = {"max_image_megapixels": 100, "max_upload_mb": 2048, "max_unpacked_gb": 20, "max_files": 100_000,
            "max_member_ratio": 200, "max_member_mb": 512, "max_field_chars": 10_000}


def limit(name: str) -> float:
    """The limit's value: ``KNEEAGE_<NAME>`` if set (a positive number), else the default."""
    raw = os.environ.get(f"KNEEAGE_{name.upper()}")
    if raw is None or raw.strip() == "":
        return DEFAULTS[name]
    try:
        v = float(raw)
    except ValueError:
        raise InputError(f"KNEEAGE_{name.upper()}={raw!r} is not a number.") from None
    if v <= 0:
        raise InputError(f"KNEEAGE_{name.upper()} must be positive, got {raw}.")
    return v


def check_upload(name: str, size: int) -> None:
    mb = limit("max_upload_mb")
    if size > mb * 2**20:
        raise InputError(f"{name}: {size / 2**20:.0f} MB is over the upload limit of {mb:g} MB (KNEEAGE_MAX_UPLOAD_MB).")


def home() -> Path:
    """The study folder: $KNEEAGE_HOME, else studies/ in the project (the database and uploads live here)."""
    return Path(os.environ.get("KNEEAGE_HOME") or SHIPPED_STUDIES)


def models_root() -> Path:
    """The folder of installed models: $KNEEAGE_MODELS, else models/ in the project."""
    return Path(os.environ.get("KNEEAGE_MODELS") or BUNDLED_MODELS)


def default_model_dir() -> Path:
    """The model used when none is named: ``demo`` among the installed models, else the first installed one."""
    root = models_root()
    dirs = sorted(p.parent for p in root.glob("*/model_card.json"))
    return root / "demo" if (root / "demo" / "model_card.json").is_file() or not dirs else dirs[0]
