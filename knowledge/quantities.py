"""Figures in Indonesian text: amounts of rupiah and US dollars, percentages and durations.

Understands the ways answers write them: "Rp10.000.000.000", "Rp 10 miliar", "10 miliar rupiah",
"IDR 2,5 billion", "Rp 3-5 juta", "USD 60.000", "11%", "0,5 persen", "30 hari", "1-2 tahun",
"enam bulan", "2 tahun 6 bulan". Durations are reported in days (a month is 30, a year 365).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCALES: dict[str, float] = {
    "ribu": 1e3,
    "rb": 1e3,
    "juta": 1e6,
    "jt": 1e6,
    "miliar": 1e9,
    "milyar": 1e9,
    "triliun": 1e12,
    "thousand": 1e3,
    "million": 1e6,
    "billion": 1e9,
    "trillion": 1e12,
}
DURATION_UNITS: dict[str, tuple[str, float]] = {
    "hari": ("day", 1),
    "day": ("day", 1),
    "days": ("day", 1),
    "minggu": ("day", 7),
    "week": ("day", 7),
    "weeks": ("day", 7),
    "bulan": ("day", 30),
    "month": ("day", 30),
    "months": ("day", 30),
    "tahun": ("day", 365),
    "year": ("day", 365),
    "years": ("day", 365),
}
NUMBER_WORDS: dict[str, float] = {
    "satu": 1,
    "se": 1,
    "dua": 2,
    "tiga": 3,
    "empat": 4,
    "lima": 5,
    "enam": 6,
    "tujuh": 7,
    "delapan": 8,
    "sembilan": 9,
    "sepuluh": 10,
    "sebelas": 11,
    "dua belas": 12,
    "lima belas": 15,
    "dua puluh": 20,
    "tiga puluh": 30,
    "enam puluh": 60,
    "sembilan puluh": 90,
}

_NUM = r"\d+(?:[.,]\d+)*"
_WORD_NUM = "|".join(sorted((re.escape(w) for w in NUMBER_WORDS if w != "se"), key=len, reverse=True))
_SCALE = "|".join(sorted(SCALES, key=len, reverse=True))
_RANGE = r"\s*(?:-|–|—|sampai|hingga|s/d|to)\s*"
MONEY_PREFIXED = re.compile(
    rf"\b(?:rp\.?|idr)\s*(?P<low>{_NUM})(?:{_RANGE}(?P<high>{_NUM}))?(?:\s*(?P<scale>{_SCALE}|m)\b)?",
    re.IGNORECASE,
)
MONEY_SUFFIXED = re.compile(
    rf"(?<![\w.,])(?P<low>{_NUM})(?:{_RANGE}(?P<high>{_NUM}))?\s*(?P<scale>{_SCALE})\b(?:\s*rupiah\b)?"
    rf"|(?<![\w.,])(?P<low2>{_NUM})\s*rupiah\b",
    re.IGNORECASE,
)
USD_PREFIXED = re.compile(
    rf"(?:\bUSD|\bUS\$|\$)\s*(?P<low>{_NUM})(?:{_RANGE}(?P<high>{_NUM}))?(?:\s*(?P<scale>{_SCALE})\b)?",
    re.IGNORECASE,
)
USD_SUFFIXED = re.compile(
    rf"(?<![\w.,])(?P<low>{_NUM})(?:{_RANGE}(?P<high>{_NUM}))?\s*(?:(?P<scale>{_SCALE})\s*)?"
    r"(?:USD|dolar(?: AS)?|dollar)\b",
    re.IGNORECASE,
)
PERCENT = re.compile(
    rf"(?<![\w.,])(?P<low>{_NUM})\s*%?(?:{_RANGE}(?P<high>{_NUM}))?\s*(?:%|persen\b|percent\b)", re.IGNORECASE
)
DURATION = re.compile(
    rf"(?<![\w.,])(?P<low>{_NUM}|{_WORD_NUM})(?:{_RANGE}(?P<high>{_NUM}|{_WORD_NUM}))?\s*"
    rf"(?P<unit>{'|'.join(DURATION_UNITS)})\b(?!\s*\d{{4}})"
    r"(?:\s+(?:dan\s+)?(?P<extra>\d+)\s*(?P<extra_unit>bulan|minggu|hari)\b)?|\b(?P<one>se)(?P<unit1>hari|minggu|bulan|tahun)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Quantity:
    """A figure found in text: a value or a range, its unit (IDR, percent, day) and where it stands."""

    low: float
    high: float
    unit: str
    start: int
    end: int
    text: str

    def matches(self, value: float) -> bool:
        """True when `value` (in this quantity's unit) equals the figure or falls inside its range."""
        tolerance = 0.02 if self.unit == "day" else 1e-6
        return self.low * (1 - tolerance) - 1e-9 <= value <= self.high * (1 + tolerance) + 1e-9


def parse_number(text: str) -> float:
    """Parse "10.000.000", "1,5", "2.5", "10,000" the way Indonesian (and English) writing means them."""
    lowered = text.lower()
    if lowered in NUMBER_WORDS:
        return NUMBER_WORDS[lowered]
    if re.fullmatch(r"\d{1,3}(?:\.\d{3})+(?:,\d+)?", text):
        return float(text.replace(".", "").replace(",", "."))
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        return float(text.replace(",", ""))
    return float(text.replace(",", "."))


def find_quantities(text: str) -> list[Quantity]:
    """Every amount of money, percentage and duration in `text`, in order, without overlaps."""
    found: list[Quantity] = []
    taken: list[tuple[int, int]] = []

    def add(start: int, end: int, low: float, high: float, unit: str) -> None:
        if any(start < other_end and other_start < end for other_start, other_end in taken):
            return
        taken.append((start, end))
        found.append(Quantity(min(low, high), max(low, high), unit, start, end, text[start:end]))

    for pattern, unit in ((MONEY_PREFIXED, "IDR"), (USD_PREFIXED, "USD"), (USD_SUFFIXED, "USD")):
        for match in pattern.finditer(text):
            scale = _scale(match.group("scale"))
            low = parse_number(match.group("low")) * scale
            high = parse_number(match.group("high")) * scale if match.group("high") else low
            add(match.start(), match.end(), low, high, unit)
    for match in MONEY_SUFFIXED.finditer(text):
        if match.group("low2"):
            value = parse_number(match.group("low2"))
            add(match.start(), match.end(), value, value, "IDR")
            continue
        scale = _scale(match.group("scale"))
        low = parse_number(match.group("low")) * scale
        high = parse_number(match.group("high")) * scale if match.group("high") else low
        add(match.start(), match.end(), low, high, "IDR")
    for match in PERCENT.finditer(text):
        low = parse_number(match.group("low"))
        high = parse_number(match.group("high")) if match.group("high") else low
        add(match.start(), match.end(), low, high, "percent")
    for match in DURATION.finditer(text):
        if match.group("one"):
            low = high = DURATION_UNITS[match.group("unit1").lower()][1]
        else:
            days = DURATION_UNITS[match.group("unit").lower()][1]
            extra = (
                int(match.group("extra")) * DURATION_UNITS[match.group("extra_unit").lower()][1]
                if match.group("extra")
                else 0
            )
            low = parse_number(match.group("low")) * days + extra
            high = parse_number(match.group("high")) * days + extra if match.group("high") else low
        add(match.start(), match.end(), low, high, "day")
    return sorted(found, key=lambda quantity: quantity.start)


def _scale(word: str | None) -> float:
    if not word:
        return 1.0
    lowered = word.lower()
    return 1e9 if lowered == "m" else SCALES[lowered]
