"""What a knee surgeon decides with a bone age: remaining growth at the knee, limb lengths and a limb-length
discrepancy at maturity, and adult height — each propagated from the bone-age interval, so every answer is
a range. Decision support, not a decision (:data:`DECISION_SUPPORT`).

Tables and where each comes from (named to users through :data:`SOURCES`; details in ``docs/growth.md``):

* **Lower-limb multipliers** (:data:`PALEY_MULTIPLIERS`): Paley D, Bhave A, Herzenberg JE, Bowen JR.
  Multiplier method for predicting limb-length discrepancy. *J Bone Joint Surg Am* 2000;82:1432-1446,
  lower-limb multiplier table (boys and girls, birth to maturity). Transcribed from the table reproduced at
  guided-growth-calculations.com/multipliers.html; only one public transcription was found, so it was
  checked for internal consistency (monotone, 1.000 at maturity) and not against a second copy.
  Length at maturity = L·M; growth remaining = L·(M − 1); a congenital (proportional) discrepancy at
  maturity = Δ·M (all from the paper). The multiplier is read at the **bone age** (the paper allows
  skeletal age in place of chronological age), so the bone-age interval becomes a range.
* **Bayley-Pinneau** (:data:`BAYLEY_PINNEAU`): Bayley N, Pinneau SR. Tables for predicting adult height from
  skeletal age: revised for use with the Greulich-Pyle hand standards. *J Pediatr* 1952;40:423-441, as
  reprinted in Greulich & Pyle (1959), Tables IIA-IIE (boys) and IIIA-IIIF (girls): per cent of mature
  height by skeletal age, one column each for average, accelerated (bone age ≥ 1 year ahead of
  chronological age) and retarded (≥ 1 year behind) maturers. Transcribed from the public transcription
  in github.com/claudemn61/Knochenalter (``web/src/bayley-pinneau.ts``, itself from a scan of the printed
  tables and checked against the book's worked examples) and cross-checked against the independent
  transcription in github.com/eatyourpeas/endocrinologist (``lib/referencedata/bayley_pinneau.dart``:
  its per-cent rows, and the per-cent implied by its printed predicted-height grids): every value agrees
  to 0.15 %. The retarded-boys table in the reprint stops at skeletal age 13-0 (the 1952 continuation
  table was not available); older retarded boys are refused, not extrapolated.
* **Growth remaining at the knee** (:func:`knee_remaining_growth`): arithmetic (White-Menelaus type)
  with the rates measured by Birch JG, Makarov MA, Jackson TJ, Jo CH. Comparison of Anderson-Green
  growth-remaining graphs and White-Menelaus predictions of growth remaining in the distal femoral and
  proximal tibial physes. *J Bone Joint Surg Am* 2019 (PMID 31169579): 9 mm per year of skeletal age at
  the distal femur and 6 mm at the proximal tibia, until maturity, taken here as the skeletal age at which
  Paley's multiplier reaches 1.000 (girls 14 years, boys 17 years). The Anderson, Green & Messner (1963)
  growth-remaining charts themselves were **not** implemented: no faithful numeric transcription of them
  could be found.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from . import stats
from .conventions import MAX_AGE_MONTHS, SEXES, require_sex
from .errors import InputError
from .reference import CATEGORIES, bone_age_sds

DECISION_SUPPORT = ("Decision support, not a decision: these are population averages from historical cohorts, "
                    "propagated from the bone-age interval; an individual child can grow outside every range shown.")

SOURCES = {
    "paley": ("Paley et al. 2000, Multiplier method for predicting limb-length discrepancy, J Bone Joint Surg Am "
              "82:1432-1446 (lower-limb multipliers)"),
    "bayley_pinneau": ("Bayley & Pinneau 1952, J Pediatr 40:423-441, as reprinted in Greulich & Pyle 1959 "
                       "(Tables IIA-IIE boys, IIIA-IIIF girls)"),
    "knee": ("Birch et al. 2019, J Bone Joint Surg Am (PMID 31169579): 9 mm/year distal femur, 6 mm/year proximal "
             "tibia per year of skeletal age, to the skeletal age where Paley's multiplier reaches 1.000"),
}

# Age (years) → lower-limb multiplier (Paley et al. 2000), boys and girls.
_PALEY_AGES = (0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.25, 2.5, 2.75, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5,
               8, 8.5, 9, 9.5, 10, 10.5, 11, 11.5, 12, 12.5, 13, 13.5, 14, 14.5, 15, 15.5, 16, 16.5, 17)
PALEY_MULTIPLIERS = {
    "M": dict(zip(_PALEY_AGES, (5.080, 4.550, 4.050, 3.600, 3.240, 2.975, 2.825, 2.700, 2.590, 2.480, 2.385, 2.300,
                                2.230, 2.110, 2.000, 1.890, 1.820, 1.740, 1.670, 1.620, 1.570, 1.520, 1.470, 1.420,
                                1.380, 1.340, 1.310, 1.280, 1.240, 1.220, 1.180, 1.160, 1.130, 1.100, 1.080, 1.060,
                                1.040, 1.020, 1.010, 1.010, 1.000))),
    "F": dict(zip(_PALEY_AGES, (4.630, 4.355, 3.725, 3.300, 2.970, 2.750, 2.600, 2.490, 2.390, 2.295, 2.200, 2.125,
                                2.050, 1.925, 1.830, 1.740, 1.660, 1.580, 1.510, 1.460, 1.430, 1.370, 1.330, 1.290,
                                1.260, 1.220, 1.190, 1.160, 1.130, 1.100, 1.070, 1.050, 1.030, 1.010, 1.000, 1.000,
                                1.000, 1.000, 1.000, 1.000, 1.000))),
}

# Bayley-Pinneau: skeletal age (months) → per cent of mature height, by sex and maturity category.
BAYLEY_PINNEAU = {
    "M": {
        "average": (  # Tables IIA (7-0 to 12-9) and IIB (13-0 to maturity)
            (84, 69.5), (87, 70.2), (90, 70.9), (93, 71.6), (96, 72.3), (99, 73.1), (102, 73.9), (105, 74.6),
            (108, 75.2), (111, 76.1), (114, 76.9), (117, 77.7), (120, 78.4), (123, 79.1), (126, 79.5), (129, 80.0),
            (132, 80.4), (135, 81.2), (138, 81.8), (141, 82.7), (144, 83.4), (147, 84.3), (150, 85.3), (153, 86.3),
            (156, 87.6), (159, 89.0), (162, 90.2), (165, 91.4), (168, 92.7), (171, 93.8), (174, 94.8), (177, 95.8),
            (180, 96.8), (183, 97.3), (186, 97.6), (189, 98.0), (192, 98.2), (195, 98.5), (198, 98.7), (201, 98.9),
            (204, 99.1), (207, 99.3), (210, 99.4), (213, 99.5), (216, 99.6), (219, 99.8), (222, 100.0)),
        "accelerated": (  # Tables IIC (7-0 to 11-9) and IID (12-0 to 17-0)
            (84, 67.0), (87, 67.6), (90, 68.3), (93, 68.9), (96, 69.6), (99, 70.3), (102, 70.9), (105, 71.5),
            (108, 72.0), (111, 72.8), (114, 73.4), (117, 74.1), (120, 74.7), (123, 75.3), (126, 75.8), (129, 76.3),
            (132, 76.7), (135, 77.6), (138, 78.6), (141, 80.0), (144, 80.9), (147, 81.8), (150, 82.8), (153, 83.9),
            (156, 85.0), (159, 86.3), (162, 87.5), (165, 89.0), (168, 90.5), (171, 91.8), (174, 93.0), (177, 94.3),
            (180, 95.8), (183, 96.7), (186, 97.1), (189, 97.6), (192, 98.0), (195, 98.3), (198, 98.5), (201, 98.8),
            (204, 99.0)),
        "retarded": (  # Table IIE (6-0 to 13-0); the continuation was not available
            (72, 68.0), (75, 69.0), (78, 70.0), (81, 70.9), (84, 71.8), (87, 72.8), (90, 73.8), (93, 74.7),
            (96, 75.6), (99, 76.5), (102, 77.3), (105, 77.9), (108, 78.6), (111, 79.4), (114, 80.0), (117, 80.7),
            (120, 81.2), (123, 81.6), (126, 81.9), (129, 82.1), (132, 82.3), (135, 82.7), (138, 83.2), (141, 83.9),
            (144, 84.5), (147, 85.2), (150, 86.0), (153, 86.9), (156, 88.0)),
    },
    "F": {
        "average": (  # Tables IIIA (6-0 to 11-9) and IIIB (12-0 to 18-0)
            (72, 72.0), (75, 72.9), (78, 73.8), (82, 75.1), (84, 75.7), (87, 76.5), (90, 77.2), (94, 78.2),
            (96, 79.0), (99, 80.1), (102, 81.0), (106, 82.1), (108, 82.7), (111, 83.6), (114, 84.4), (117, 85.3),
            (120, 86.2), (123, 87.4), (126, 88.4), (129, 89.6), (132, 90.6), (135, 91.0), (138, 91.4), (141, 91.8),
            (144, 92.2), (147, 93.2), (150, 94.1), (153, 95.0), (156, 95.8), (159, 96.7), (162, 97.4), (165, 97.8),
            (168, 98.0), (171, 98.3), (174, 98.6), (177, 98.8), (180, 99.0), (183, 99.1), (186, 99.3), (189, 99.4),
            (192, 99.6), (195, 99.6), (198, 99.7), (201, 99.8), (204, 99.9), (210, 99.95), (216, 100.0)),
        "accelerated": (  # Tables IIIC (7-0 to 11-9) and IIID (12-0 to 17-6)
            (84, 71.2), (87, 72.2), (90, 73.2), (94, 74.2), (96, 75.0), (99, 76.0), (102, 77.1), (106, 78.4),
            (108, 79.0), (111, 80.0), (114, 80.9), (117, 81.9), (120, 82.8), (123, 84.1), (126, 85.6), (129, 87.0),
            (132, 88.3), (135, 88.7), (138, 89.1), (141, 89.7), (144, 90.1), (147, 91.3), (150, 92.4), (153, 93.5),
            (156, 94.5), (159, 95.5), (162, 96.3), (165, 96.8), (168, 97.2), (171, 97.7), (174, 98.0), (177, 98.3),
            (180, 98.6), (183, 98.8), (186, 99.0), (189, 99.2), (192, 99.3), (195, 99.4), (198, 99.5), (201, 99.7),
            (204, 99.8), (210, 99.95)),
        "retarded": (  # Tables IIIE (6-0 to 11-9) and IIIF (12-0 to 17-0)
            (72, 73.3), (75, 74.2), (78, 75.1), (82, 76.3), (84, 77.0), (87, 77.9), (90, 78.8), (94, 79.7),
            (96, 80.4), (99, 81.3), (102, 82.3), (106, 83.6), (108, 84.1), (111, 85.1), (114, 85.8), (117, 86.6),
            (120, 87.4), (123, 88.4), (126, 89.6), (129, 90.7), (132, 91.8), (135, 92.2), (138, 92.6), (141, 92.9),
            (144, 93.2), (147, 94.2), (150, 94.9), (153, 95.7), (156, 96.4), (159, 97.1), (162, 97.7), (165, 98.1),
            (168, 98.3), (171, 98.6), (174, 98.9), (177, 99.2), (180, 99.4), (183, 99.5), (186, 99.6), (189, 99.7),
            (192, 99.8), (195, 99.9), (198, 99.9), (201, 99.95), (204, 100.0)),
    },
}

KNEE_RATE_CM_PER_YEAR = {"distal_femur": 0.9, "proximal_tibia": 0.6}  # Birch et al. 2019
KNEE_DISAGREEMENT_CM = 1.0  # the clinically significant difference in remaining growth at the knee (issue #20)


# ------------------------------------------------------------------------------------------- checks


def _age(months, name: str = "bone age") -> float:
    try:
        v = float(months)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number of months, got {months!r}.") from None
    if not (np.isfinite(v) and 0 <= v <= MAX_AGE_MONTHS):
        raise InputError(f"{name} must lie between 0 and {MAX_AGE_MONTHS:.0f} months, got {months}.")
    return v


def _length(cm, name: str, lo: float = 1.0, hi: float = 250.0) -> float:
    try:
        v = float(cm)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number of centimetres, got {cm!r}.") from None
    if not (np.isfinite(v) and lo <= v <= hi):
        raise InputError(f"{name} must lie between {lo:g} and {hi:g} cm, got {cm}.")
    return v


# ------------------------------------------------------------------------------- table look-ups


def paley_multiplier(age_months, sex) -> float:
    """Lower-limb multiplier at an age (months; linear between tabulated ages, 1.000 beyond maturity)."""
    s, a = require_sex(sex), _age(age_months, "age")
    t = PALEY_MULTIPLIERS[s]
    return float(np.interp(a / 12, list(t), list(t.values())))


def maturity_months(sex) -> float:
    """Skeletal age (months) at which the lower-limb multiplier first reaches 1.000."""
    t = PALEY_MULTIPLIERS[require_sex(sex)]
    return 12.0 * min(a for a, m in t.items() if m == 1.0)


def maturity_category(bone_age_months, chronological_age_months) -> str:
    """Bayley-Pinneau table choice: accelerated if bone age − chronological age ≥ 12 months, retarded if
    ≤ −12 months, otherwise average (the tables' own directions: 'one year or more')."""
    d = _age(bone_age_months) - _age(chronological_age_months, "chronological age")
    return "accelerated" if d >= 12 else "retarded" if d <= -12 else "average"


def percent_mature_height(bone_age_months, sex, category: str = "average") -> float:
    """Bayley-Pinneau per cent of mature height at a skeletal age (linear between tabulated ages); refuses
    skeletal ages outside the chosen table."""
    s, a = require_sex(sex), _age(bone_age_months)
    if category not in ("average", "accelerated", "retarded"):
        raise InputError(f"Bayley-Pinneau category must be average, accelerated or retarded, got {category!r}.")
    ages, pct = zip(*BAYLEY_PINNEAU[s][category])
    if not ages[0] <= a <= ages[-1]:
        who = {"M": "boys", "F": "girls"}[s]
        raise InputError(f"bone age {a:.0f} months is outside the Bayley-Pinneau table for {category} {who} "
                         f"({ages[0]}-{ages[-1]} months).")
    return float(np.interp(a, ages, pct))


def adult_height(height_cm, bone_age_months, chronological_age_months, sex) -> tuple[float, str, float]:
    """Bayley-Pinneau predicted adult height = height / (per cent of mature height / 100); returns
    (predicted cm, category, per cent)."""
    h = _length(height_cm, "current height", 30, 230)
    cat = maturity_category(bone_age_months, chronological_age_months)
    pct = percent_mature_height(bone_age_months, sex, cat)
    return h / (pct / 100), cat, pct


def knee_remaining_growth(bone_age_months, sex) -> dict[str, float]:
    """Growth (cm) still to come at the distal femur and the proximal tibia, and their sum ('knee')."""
    years = max(0.0, (maturity_months(sex) - _age(bone_age_months)) / 12)
    out = {k: r * years for k, r in KNEE_RATE_CM_PER_YEAR.items()}
    out["knee"] = out["distal_femur"] + out["proximal_tibia"]
    return out


def limb_at_maturity(length_cm, age_months, sex, name: str = "limb length") -> float:
    """Length at maturity = current length × multiplier."""
    return _length(length_cm, name, 1, 130) * paley_multiplier(age_months, sex)


def discrepancy_at_maturity(discrepancy_cm, age_months, sex) -> float:
    """Congenital (proportional) discrepancy at maturity = current discrepancy × multiplier."""
    return _length(discrepancy_cm, "limb-length discrepancy", 0, 50) * paley_multiplier(age_months, sex)


# ------------------------------------------------------------------------------ single case panel


@dataclass(frozen=True)
class Range:
    """A value at the bone age, and its range over the bone-age interval."""

    label: str
    value: float
    low: float
    high: float
    unit: str
    source: str
    note: str = ""

    def text(self, digits: int = 1) -> str:
        f = f"{{:.{digits}f}}"
        return f"{f.format(self.value)} {self.unit} (range {f.format(self.low)}–{f.format(self.high)})"


@dataclass(frozen=True)
class GrowthResult:
    sex: str
    bone_age_months: float
    interval_months: tuple[float, float]
    chronological_age_months: float | None
    items: tuple[Range, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    statement: str = DECISION_SUPPORT

    def as_dict(self) -> dict:
        d = asdict(self)
        d["items"] = [asdict(r) for r in self.items]
        for r in d["items"]:
            for k in ("value", "low", "high"):
                r[k] = round(r[k], 2)
        d["interval_months"] = list(self.interval_months)
        d["notes"] = list(self.notes)
        return d


def _over_interval(fn, point: float, lo: float, hi: float, n: int = 49) -> tuple[float, float, float]:
    """fn at the point and its min/max over a grid of the interval (fn may be non-monotone where the
    Bayley-Pinneau category changes inside the interval)."""
    grid = np.unique(np.r_[np.linspace(lo, hi, n), point])
    vals = [fn(a) for a in grid]
    return float(fn(point)), float(min(vals)), float(max(vals))


def growth_panel(bone_age_months, interval_months, sex, chronological_age_months=None, height_cm=None,
                 femur_cm=None, tibia_cm=None, discrepancy_cm=None) -> GrowthResult:
    """Everything the growth panel shows, each as a :class:`Range` over the bone-age interval. Optional
    inputs that are missing (None) leave their rows out; a value that is given but unusable is refused."""
    s = require_sex(sex)
    ba = _age(bone_age_months)
    lo, hi = sorted(_age(v, "bone-age interval limit") for v in interval_months)
    lo, hi = min(lo, ba), max(hi, ba)
    chron = None if chronological_age_months is None else _age(chronological_age_months, "chronological age")
    items, notes = [], []

    for part, label in (("distal_femur", "Growth remaining, distal femur"),
                        ("proximal_tibia", "Growth remaining, proximal tibia"),
                        ("knee", "Growth remaining at the knee (femur + tibia)")):
        v = _over_interval(lambda a, p=part: knee_remaining_growth(a, s)[p], ba, lo, hi)
        items.append(Range(label, *v, "cm", SOURCES["knee"]))

    mult = _over_interval(lambda a: paley_multiplier(a, s), ba, lo, hi)
    items.append(Range("Lower-limb multiplier (at bone age)", *mult, "", SOURCES["paley"]))
    for given, name, label in ((femur_cm, "femur length", "Femur length at maturity"),
                               (tibia_cm, "tibia length", "Tibia length at maturity")):
        if given is not None:
            L = _length(given, name, 1, 130)
            items.append(Range(label, *(L * m for m in mult), "cm", SOURCES["paley"]))
            items.append(Range(label.replace("length at maturity", "growth remaining"),
                               *(L * (m - 1) for m in mult), "cm", SOURCES["paley"]))
    if discrepancy_cm is not None:
        d = _length(discrepancy_cm, "limb-length discrepancy", 0, 50)
        items.append(Range("Limb-length discrepancy at maturity (congenital, proportional)",
                           *(d * m for m in mult), "cm", SOURCES["paley"],
                           "Δ × multiplier; a developmental discrepancy needs its growth inhibition instead."))

    if height_cm is not None:
        if chron is None:
            notes.append("Adult height needs the chronological age (it chooses the Bayley-Pinneau table).")
        else:
            h = _length(height_cm, "current height", 30, 230)
            try:
                v = _over_interval(lambda a: adult_height(h, a, chron, s)[0], ba, lo, hi)
                cats = sorted({maturity_category(a, chron) for a in (lo, ba, hi)})
                items.append(Range("Predicted adult height", *v, "cm", SOURCES["bayley_pinneau"],
                                   f"table: {maturity_category(ba, chron)}"
                                   + (f" (the interval spans {', '.join(cats)})" if len(cats) > 1 else "")))
            except InputError as e:
                notes.append(f"No adult height: {e}")
    return GrowthResult(s, ba, (lo, hi), chron, tuple(items), tuple(notes))


# ------------------------------------------------------------------- clinical view of the error


def knee_growth_disagreement(predicted_months, reference_months, sexes, threshold_cm: float = KNEE_DISAGREEMENT_CM):
    """Per case: |remaining growth at the knee from the predicted bone age − from the reference bone age| (cm)
    and whether it exceeds ``threshold_cm``."""
    p, r = np.asarray(predicted_months, float), np.asarray(reference_months, float)
    sx = list(sexes)
    if not (p.shape == r.shape == (len(sx),)):
        raise InputError("predicted, reference and sex must have one value per case.")
    diff = np.array([abs(knee_remaining_growth(min(max(a, 0), MAX_AGE_MONTHS), s)["knee"]
                         - knee_remaining_growth(min(max(b, 0), MAX_AGE_MONTHS), s)["knee"])
                     for a, b, s in zip(p, r, sx)])
    return diff, diff > threshold_cm


def sds_classes(bone_ages, chron_ages, sexes) -> list[str]:
    """Each case's delayed / normal / advanced call (±2 SD, :mod:`kneeage.reference`) of a bone age."""
    return [bone_age_sds(min(max(float(b), 0), MAX_AGE_MONTHS), float(c), s).category
            for b, c, s in zip(bone_ages, chron_ages, sexes)]


def clinical_view(cases, predicted: str = "predicted_bone_age_months", reference: str = "reference_bone_age_months",
                  sex: str = "sex", age: str = "chronological_age_months", level: float = 0.95) -> dict:
    """How often the method's error would change a decision, on the cases of a per-case table that have both
    bone ages (JSON-ready dict):

    * ``over``: share with |error| > 6, 12 and 24 months (Wilson CIs);
    * ``sds_agreement`` (cases with sex and chronological age): delayed / normal / advanced (±2 SD, Greulich &
      Pyle / Brush SDs, :mod:`kneeage.reference`) by method vs by reference — confusion matrix (rows: reference,
      columns: method) and Cohen's kappa with its Fleiss-Cohen-Everitt CI;
    * ``knee_growth`` (cases with sex and chronological age): share whose remaining growth at the knee from the
      method's bone age differs from the reference-based one by more than 1 cm (:func:`knee_remaining_growth`).
    """
    ok = cases[cases[predicted].notna() & cases[reference].notna()]
    out: dict = {"n": int(len(ok)), "level": level}
    if len(ok) < 3:
        out["note"] = "fewer than 3 cases with both bone ages; no clinical view."
        return out
    out["over"] = {str(k): v | {"ci": list(v["ci"])}
                   for k, v in stats.error_exceedance(ok[predicted], ok[reference], level=level).items()}
    known = ok
    if sex in ok and age in ok:
        known = ok[ok[sex].isin(SEXES) & ok[age].notna() & ok[age].between(0, MAX_AGE_MONTHS)]
    else:
        known = ok.iloc[0:0]
    out["n_with_sex_and_age"] = int(len(known))
    if len(known) >= 3:
        ref_cls = sds_classes(known[reference], known[age], known[sex])
        met_cls = sds_classes(known[predicted], known[age], known[sex])
        k = stats.cohen_kappa(ref_cls, met_cls, CATEGORIES, level=level)
        out["sds_agreement"] = {"rows": "reference", "columns": "method", **k.as_dict(),
                                "source": "±2 SD of the Brush Foundation SDs (Greulich & Pyle 1959)"}
        diff, over = knee_growth_disagreement(known[predicted], known[reference], known[sex])
        n_over = int(over.sum())
        out["knee_growth"] = {"threshold_cm": KNEE_DISAGREEMENT_CM, "n": int(len(known)), "n_over": n_over,
                              "share": n_over / len(known), "ci": list(stats.wilson_ci(n_over, len(known), level)),
                              "mean_abs_difference_cm": float(diff.mean()), "source": SOURCES["knee"]}
    else:
        out["note"] = "fewer than 3 cases with sex and chronological age; no SDS agreement or knee growth view."
    return out
