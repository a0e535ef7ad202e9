"""Ages on screen and in reports: one convention, years and months with the months in brackets.

Inside kneeage every age is in months (floats). At the edges an age is shown as "7 y 5 mo (89 mo)":
rounded once to whole months, so the two halves always agree (167.6 months is "14 y 0 mo (168 mo)",
never "13 y 12 mo"). Typed ages are read back by :func:`parse_age`: "12y 3m", "12 y 3 mo", "12 years
3 months", "12.25 y", "147" (plain numbers are months), "147 mo", "12y".
"""

from __future__ import annotations

import math
import re

from .conventions import MAX_AGE_MONTHS
from .errors import InputError


def whole_months(months: float) -> int:
    """Months rounded half up to a whole number (the one rounding every display uses)."""
    return int(math.floor(float(months) + 0.5))


def years_months(months: float) -> str:
    """'7 y 5 mo' (rounded to whole months)."""
    m = whole_months(months)
    sign, m = ("−", -m) if m < 0 else ("", m)
    return f"{sign}{m // 12} y {m % 12} mo"


def age_text(months: float | None, none: str = "—") -> str:
    """'7 y 5 mo (89 mo)'; ``none`` when the age is unknown (None or NaN)."""
    if months is None or not math.isfinite(float(months)):
        return none
    return f"{years_months(months)} ({whole_months(months)} mo)"


def range_text(low: float | None, high: float | None, none: str = "—") -> str:
    """'5 y 0 mo – 8 y 7 mo (60–103 mo)'; ``none`` when either end is unknown."""
    if low is None or high is None or not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return none
    return f"{years_months(low)} – {years_months(high)} ({whole_months(low)}–{whole_months(high)} mo)"


def months_text(months: float | None, digits: int = 1, signed: bool = False, none: str = "—") -> str:
    """A difference or an error in months ('4.2 mo', '+4.2 mo'): quantities that are not ages."""
    if months is None or not math.isfinite(float(months)):
        return none
    return f"{float(months):{'+' if signed else ''}.{digits}f} mo"


_Y = r"(?:y|yr|yrs|year|years|a|j|jahre?)"
_M = r"(?:m|mo|mos|mon|month|months)"
_NUM = r"(\d+(?:[.,]\d+)?)"
_PATTERNS = (
    (re.compile(rf"^{_NUM}\s*{_Y}\.?\s*,?\s*(?:(?:and\s+)?{_NUM}\s*{_M}\.?)?$"), "ym"),
    (re.compile(rf"^{_NUM}\s*{_M}\.?$"), "m"),
    (re.compile(rf"^{_NUM}$"), "m"),
    (re.compile(r"^(\d+)\s*[;:/]\s*(\d+(?:[.,]\d+)?)$"), "ym"),  # 12;3 or 12:3 (years;months, as some PACS write it)
)


def parse_age(text, max_months: float = MAX_AGE_MONTHS) -> float | None:
    """Months from a typed age: "12y 3m", "12 y 3 mo", "12 years 3 months", "12.25 y", "147", "147 mo",
    "12;3". A plain number is months. Empty text is None (unknown). Anything else, a month part of 12 or
    more, or an age outside 0-``max_months`` months raises :class:`InputError` with the accepted forms."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip().lower()
        if not s:
            return None
        value = None
        for pattern, kind in _PATTERNS:
            hit = pattern.match(s)
            if not hit:
                continue
            nums = [float(g.replace(",", ".")) if g else 0.0 for g in hit.groups()]
            if kind == "ym":
                years, months = nums[0], (nums[1] if len(nums) > 1 else 0.0)
                if months >= 12:
                    raise InputError(f"Age {text!r}: the month part must be 0-11 (write {int(years + months // 12)} y "
                                     f"{months % 12:g} m, or the age in months alone).")
                value = years * 12 + months
            else:
                value = nums[0]
            break
        if value is None:
            raise InputError(f"Age {text!r} is not an age kneeage reads; type years and months like \"12y 3m\" "
                             "or months alone like \"147\".")
    if not (math.isfinite(value) and 0 <= value <= max_months):
        raise InputError(f"Age {text!r} is outside 0-{max_months:.0f} months (0-{max_months / 12:.0f} years).")
    return round(value, 2)
