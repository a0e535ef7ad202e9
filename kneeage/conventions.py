"""The conventions every module shares, each stated once.

* Ages are months (floats) everywhere inside kneeage; a month is ``DAYS_PER_MONTH`` days.
* Every age kneeage accepts lies in 0-``MAX_AGE_MONTHS`` (20 years); models are trained on, and imported
  models are assumed to cover, 0-``TRAINED_MAX_MONTHS`` (18 years), the scale of the network's age input.
* Sex is ``"F"`` or ``"M"``: :func:`parse_sex` reads what manifests and headers write, :func:`require_sex`
  refuses anything else.
* A knee film says so in its DICOM body part (:func:`is_knee_part`).
"""

from __future__ import annotations

from .errors import InputError

DAYS_PER_MONTH = 365.25 / 12
MAX_AGE_MONTHS = 240.0  # 20 years: the upper bound of every age kneeage accepts
TRAINED_MAX_MONTHS = 216.0  # 18 years: the default trained range of a model, and the scale of its age input
SEXES = ("F", "M")

_SEX_WORDS = {"f": "F", "female": "F", "girl": "F", "w": "F", "m": "M", "male": "M", "boy": "M"}
# Body parts (DICOM BodyPartExamined) that may hold a knee besides "KNEE" itself.
_KNEE_PARTS = ("LEG", "LOWER LIMB", "LOWERLIMB", "EXTREMITY")


def parse_sex(value) -> str | None:
    """"F"/"M" from what a manifest or a header writes (F/M, female/male, girl/boy, W), else None."""
    return _SEX_WORDS.get(str(value).strip().lower()) if value is not None else None


def require_sex(value) -> str:
    """"F" or "M" from a value whose first letter says so ("F", "m", "Female"); else InputError."""
    s = str(value).strip().upper()[:1] if value is not None else ""
    if s not in SEXES:
        raise InputError(f"sex must be F or M, got {value!r}.")
    return s


def is_knee_part(body_part: str | None, expected: str = "KNEE") -> bool:
    """Whether a header's body part allows ``expected`` (a knee by default): empty (unknown), naming it, or a
    limb that holds it."""
    part = (body_part or "").upper()
    return not part or expected.upper() in part or part in _KNEE_PARTS
