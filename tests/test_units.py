"""Ages on screen: one convention (years and months, months in brackets), typed ages read back (issue #18)."""

import math

import pytest

from kneeage import units
from kneeage.errors import InputError


@pytest.mark.parametrize("months, text", [(167.6, "14 y 0 mo (168 mo)"), (167.5, "14 y 0 mo (168 mo)"),
                                          (167.4, "13 y 11 mo (167 mo)"), (89.0, "7 y 5 mo (89 mo)"),
                                          (0.2, "0 y 0 mo (0 mo)"), (11.5, "1 y 0 mo (12 mo)")])
def test_age_text_rounds_once_so_the_two_halves_agree(months, text):
    assert units.age_text(months) == text
    y, m = text.split(" mo")[0].split(" y ")
    assert int(y) * 12 + int(m) == int(text.split("(")[1].split(" ")[0])  # never "13 y 12 mo (168 mo)"
    assert int(m) < 12


def test_every_month_is_consistent():
    for tenths in range(0, 2400):
        m = tenths / 10
        y, mo = units.years_months(m).removesuffix(" mo").split(" y ")
        assert 0 <= int(mo) <= 11 and int(y) * 12 + int(mo) == units.whole_months(m)


def test_range_and_unknown():
    assert units.range_text(60.2, 103.4) == "5 y 0 mo – 8 y 7 mo (60–103 mo)"
    assert units.age_text(None) == "—" and units.age_text(math.nan, none="not given") == "not given"
    assert units.range_text(math.nan, 3) == "—"
    assert units.months_text(-4.26, signed=True) == "-4.3 mo" and units.months_text(4.26, signed=True) == "+4.3 mo"


@pytest.mark.parametrize("text, months", [
    ("12y 3m", 147), ("12 y 3 mo", 147), ("12 years 3 months", 147), ("12 years and 3 months", 147), ("12y", 144),
    ("147", 147), ("147 mo", 147), ("147 months", 147), ("12.25 y", 147), ("12,5 y", 150), ("12;3", 147),
    ("  11 Y 2 MO ", 134), ("0y 6m", 6), (146.0, 146), ("", None), (None, None)])
def test_parse_age(text, months):
    assert units.parse_age(text) == months


@pytest.mark.parametrize("text, says", [("12y 14m", "month part must be 0-11"), ("twelve", "not an age"),
                                        ("300", "outside 0-240 months"), ("-3", "not an age"), ("12y3m4d", "not an age")])
def test_parse_age_refuses_with_the_accepted_forms(text, says):
    with pytest.raises(InputError, match=says):
        units.parse_age(text)


def test_parse_reads_what_years_months_writes():
    for m in (0, 5, 12, 89, 147, 215):
        assert units.parse_age(units.years_months(m)) == m
