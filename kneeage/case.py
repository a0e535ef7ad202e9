"""One case, as a clinician checks it: bone age, interval, per-fold values, SDS, flags and saliency.

The single-case page and ``python -m kneeage predict`` both stop here; :mod:`kneeage.report` turns a
:class:`CaseResult` into the downloadable HTML and JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from . import reference
from .errors import InputError
from .imaging import Radiograph
from .predict import Prediction, Predictor, overlay, years_months
from .localise import Framing
from .preprocess import resolve_box

DEMO_STATEMENT = ("This is the synthetic demo model, trained only on computer-generated phantom radiographs. "
                  "Its numbers show how kneeage works; they are not a clinical bone age.")
SALIENCY_METHODS = {"gradient": "Vanilla gradient", "smoothgrad": "SmoothGrad", "gradcam": "Grad-CAM (last stage)"}


@dataclass(frozen=True)
class CaseResult:
    file: str
    sex: str
    chronological_age_months: float | None
    box: tuple[int, int, int, int]
    prediction: Prediction
    sds: reference.SDSResult | None
    framing: Framing | None = None
    overridden: bool = False  # the model withheld the number and the user asked to see it anyway

    @property
    def withheld(self) -> bool:
        """The model refused or censored this image and the user did not override: show no number."""
        return self.prediction.refusal is not None and not self.overridden

    @property
    def bone_age_text(self) -> str:
        return years_months(self.prediction.bone_age_months)

    def as_dict(self) -> dict:
        p = self.prediction
        out = {
            "file": self.file,
            "sex": self.sex,
            "chronological_age_months": self.chronological_age_months,
            "crop_box": list(self.box),
            "framing": self.framing.as_dict() if self.framing else None,
            "refusal": p.refusal,
            "refusal_text": p.refusal_text,
            "overridden": self.overridden,
            "bone_age_months": round(p.bone_age_months, 2),
            "bone_age_years_months": self.bone_age_text,
            "interval_months": ([round(v, 2) for v in p.interval_months]
                                if all(math.isfinite(v) for v in p.interval_months) else None),
            "interval_level": p.interval_level,
            "interval_widened_for_fold_disagreement": p.interval_widened,
            "fold_values_months": [round(v, 2) for v in p.fold_values_months],
            "flags": list(p.flags),
            "flag_messages": p.flag_messages,
            "model_name": p.model_name,
            "model_hash": p.model_hash,
            "synthetic_demo": p.synthetic_demo,
        }
        if self.sds is not None:
            out.update(bone_age_sds=round(self.sds.sds, 2), sds_category=self.sds.category,
                       sds_reference=self.sds.source)
        if p.synthetic_demo:
            out["notice"] = DEMO_STATEMENT
        if self.withheld:  # no number leaves the program for a refused or censored image
            for k in ("bone_age_months", "bone_age_years_months", "interval_months", "fold_values_months"):
                out[k] = None
        return out


def interval_note(prediction: Prediction) -> str:
    """One sentence on where the interval comes from, and whether fold disagreement widened it."""
    p = prediction
    if not all(math.isfinite(v) for v in p.interval_months):
        return "The model's card gives no interval rule, so there is no interval."
    text = (f"The {p.interval_level:.0%} interval is calibrated on the model's out-of-fold predictions against reference "
            "reads, by band of estimated age.")
    if p.interval_widened:
        text += (" It is widened to hold every fold's estimate, because the folds disagree more than the calibrated "
                 "width allows.")
    return text


def header_age(radiograph: Radiograph) -> tuple[float | None, str | None]:
    """The header's chronological age if it lies in 0-240 months, else ``None`` and a sentence saying why,
    so a page can leave the age field empty for the user to type instead of failing on a wrong birth date."""
    v = radiograph.chronological_age_months
    if v is None:
        return None, None
    if not (np.isfinite(v) and 0 <= v <= reference.MAX_AGE_MONTHS):
        return None, (f"{radiograph.name}: the header gives a chronological age of {v:.1f} months ({v / 12:.1f} years), "
                      f"outside the 0-{reference.MAX_AGE_MONTHS:.0f} months this tool covers; check the birth and "
                      "study dates and type the age, or leave it empty.")
    return round(float(v), 1), None


def check_box(box, radiograph: Radiograph):
    """A crop box: "auto"/empty/None (the model finds the knee), "full", or text "x0,y0,x1,y1" / four numbers
    clipped to the image; refuses boxes under 16 px, naming the file."""
    if box is None or (isinstance(box, str) and box.strip() in ("", "auto")):
        return "auto"
    if isinstance(box, str) and box.strip() == "full":
        return "full"
    try:
        return resolve_box(radiograph.pixels, box)
    except InputError as e:
        raise InputError(f"{radiograph.name}: {str(e)[0].lower()}{str(e)[1:]}") from None


def analyse(predictor: Predictor, radiograph: Radiograph, sex: str, chronological_age_months: float | None,
            box=None, spacing_mm: float | None = None, override: bool = False) -> tuple[CaseResult, np.ndarray]:
    """Predict one radiograph; returns the result and the model input (for display and saliency).
    ``spacing_mm``: the pixel spacing when the file has no header (a PNG); else the header's is used.
    ``override``: the user deliberately asks for the number of an image the model refuses (marked as such)."""
    if sex not in ("F", "M"):
        raise InputError(f"{radiograph.name}: sex must be F or M; the file does not say, so please choose one.")
    chron = chronological_age_months
    if chron is not None and (isinstance(chron, float) and math.isnan(chron)):
        chron = None
    if chron is not None and not 0 <= chron <= reference.MAX_AGE_MONTHS:
        raise InputError(f"{radiograph.name}: chronological age {chron:.0f} months is outside "
                         f"0-{reference.MAX_AGE_MONTHS:.0f} months.")
    framing = predictor.frame(radiograph.pixels, check_box(box, radiograph), radiograph.pixel_spacing_mm or spacing_mm)
    x = predictor.prepare(radiograph.pixels, framing=framing)
    pred = predictor.predict_many([x], [sex], [chron], [radiograph.body_part])[0]
    localiser = predictor.framer.localiser  # a user's box is checked against the knee the localiser finds
    if framing.region_source == "user box" and localiser is not None and framing.misses(localiser.find(radiograph.pixels)):
        pred = replace(pred, flags=("box_misses_knee",) + pred.flags)
    sds = None
    overridden = bool(override and pred.refusal)
    if chron is not None and (pred.refusal is None or overridden):
        sds = reference.bone_age_sds(min(max(pred.bone_age_months, 0), reference.MAX_AGE_MONTHS), chron, sex)
    box_px = tuple(int(round(v)) for v in framing.region_px)
    return CaseResult(radiograph.name, sex, chron, box_px, pred, sds, framing, overridden), x


def saliency_overlay(predictor: Predictor, model_input: np.ndarray, sex: str, method: str = "gradient",
                     opacity: float = 0.5, chronological_age_months: float | None = None) -> np.ndarray:
    """RGB uint8 overlay of the saliency map on the model input."""
    if not 0 <= opacity <= 1:
        raise InputError(f"opacity must lie between 0 and 1, got {opacity}.")
    s = predictor.saliency(model_input, sex, method, chron_months=chronological_age_months)
    return overlay(model_input, s, opacity)

