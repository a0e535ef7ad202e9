"""Greulich-Pyle reference: bone-age SDS against chronological age.

Source (named to users by :data:`SOURCE`): Greulich WW, Pyle SI. *Radiographic Atlas of Skeletal
Development of the Hand and Wrist*, 2nd ed. Stanford University Press, 1959 — the table of standard
deviations of skeletal age by chronological age and sex from the Brush Foundation Study (Cleveland,
1931-1942). By the atlas's construction the mean skeletal age of that reference population at a given
chronological age equals the chronological age, so

    SDS = (bone age − chronological age) / SD(chronological age, sex),

with the SD interpolated linearly between tabulated ages and held constant beyond the table.
Classification at ±2 SD: delayed (SDS < −2), normal, advanced (SDS > 2). The SD values were
transcribed from the atlas's table; a site that reports SDS clinically should check them against
its own copy of the atlas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .conventions import MAX_AGE_MONTHS, require_sex
from .errors import InputError

SOURCE = ("Greulich & Pyle (1959), Radiographic Atlas of Skeletal Development of the Hand and Wrist, "
          "2nd ed.: standard deviations of skeletal age, Brush Foundation Study")

# Chronological age (months) → SD of skeletal age (months).
_AGES = np.array([3, 6, 9, 12, 18, 24, 30, 36, 42, 48, 54, 60, 72, 84, 96, 108, 120, 132, 144, 156, 168,
                  180, 192, 204], float)
BRUSH_SD_MONTHS = {
    "M": (_AGES, np.array([0.69, 1.13, 1.43, 1.97, 3.52, 3.92, 4.52, 5.08, 5.40, 6.66, 8.36, 8.79, 9.17,
                           8.91, 9.10, 9.00, 9.79, 10.09, 10.38, 10.44, 10.72, 11.32, 12.86, 13.05])),
    "F": (_AGES[:-1], np.array([0.72, 1.16, 1.36, 1.77, 3.49, 4.64, 5.37, 5.97, 7.48, 8.98, 10.73, 11.65,
                                10.23, 10.64, 10.23, 10.74, 11.73, 11.94, 10.24, 10.67, 11.30, 9.23, 7.31])),
}

CATEGORIES = ("delayed", "normal", "advanced")


@dataclass(frozen=True)
class SDSResult:
    sds: float
    sd_months: float
    category: str
    difference_months: float
    source: str = SOURCE

    def sentence(self) -> str:
        d = self.difference_months
        way = "ahead of" if d > 0 else "behind"
        n = round(abs(d))
        return (f"Bone age is {n} month{'' if n == 1 else 's'} {way} chronological age, SDS {self.sds:+.2f} "
                f"({self.category}; ±2 SD, {self.source}).")


def sd_months(chronological_age_months, sex: str) -> np.ndarray | float:
    """Brush Foundation SD of skeletal age at the given chronological age(s)."""
    ages, sds = BRUSH_SD_MONTHS[require_sex(sex)]
    out = np.interp(np.asarray(chronological_age_months, float), ages, sds)
    return float(out) if out.ndim == 0 else out


def classify(sds: float) -> str:
    return "delayed" if sds < -2 else "advanced" if sds > 2 else "normal"


def bone_age_sds(bone_age_months: float, chronological_age_months: float, sex: str) -> SDSResult:
    """SDS of a bone age against chronological age; refuses ages outside 0-20 years."""
    for name, v in (("bone age", bone_age_months), ("chronological age", chronological_age_months)):
        if not (np.isfinite(v) and 0 <= v <= MAX_AGE_MONTHS):
            raise InputError(f"{name} must lie between 0 and {MAX_AGE_MONTHS:.0f} months, got {v}.")
    sd = sd_months(chronological_age_months, sex)
    diff = float(bone_age_months - chronological_age_months)
    z = diff / sd
    return SDSResult(float(z), float(sd), classify(z), diff)
