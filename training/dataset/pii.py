"""Personal data in text: finding it (for the checklist) and replacing it (for imported chats).

Kinds: e-mail, phone number, passport number, NIK (16-digit national ID), NPWP (tax number), street
address, and names where they can be told (after "nama saya", an honorific such as Pak/Bu/Mr, or a
sign-off). Each kind is replaced by a placeholder in brackets, e.g. `[EMAIL]`, `[NIK]`, `[NAMA]`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

PLACEHOLDERS: dict[str, str] = {
    "email": "[EMAIL]",
    "npwp": "[NPWP]",
    "nik": "[NIK]",
    "passport": "[PASPOR]",
    "phone": "[TELEPON]",
    "address": "[ALAMAT]",
    "name": "[NAMA]",
}
ID_KINDS: frozenset[str] = frozenset({"nik", "npwp", "passport"})
_NAME = r"[A-Z][a-z'’]+(?:[ \t]+[A-Z][a-z'’]+){0,3}"
_NOT_NAMES = frozenset(
    [
        "RT",
        "RW",
        "Kota",
        "Menteri",
        "Presiden",
        "Direktur",
        "Notaris",
        "Camat",
        "Lurah",
        "Anda",
        "Kamu",
        "Kakak",
        "Admin",
        "Saya",
        "Kami",
        "Pajak",
        "Imigrasi",
        "Investor",
        "Agen",
        "Konsultan",
        "Tim",
        "Dokter",
        "Indonesia",
        "Jakarta",
        "Bali",
        "Surabaya",
        "Bandung",
        "Medan",
    ]
)
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("email", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    (
        "npwp",
        re.compile(
            r"(?<!\d)\d{2}\.\d{3}\.\d{3}\.\d[-.]\d{3}\.\d{3}(?!\d)"
            r"|(?i:npwp)\s*(?:no\.?|nomor|:)?\s*:?\s*(?P<v>\d[\d.\- ]{13,20}\d)"
        ),
    ),
    ("nik", re.compile(r"(?<![\d+])\d{16}(?!\d)|(?<!\d)\d{4}[ .-]\d{4}[ .-]\d{4}[ .-]\d{4}(?!\d)")),
    (
        "passport",
        re.compile(
            r"(?i:paspor|passport)\s*(?i:no\.?|nomor|number|nr\.?)?\s*:?\s*(?P<v>[A-Z0-9]{6,9})\b"
            r"|\b[A-Z]{1,2}\d{7}\b"
        ),
    ),
    (
        "phone",
        re.compile(
            r"(?<![\w+.,])(?:\+62|62|0)[ .-]?8\d{1,2}(?:[ .-]?\d{3,4}){2}\d{0,2}(?![\d.,]\d)"
            r"|(?<![\w+.,])(?:\(0\d{2,3}\)|0\d{2,3}|\+62[ -]?\d{2,3})[ .-]?\d{3,4}[ .-]?\d{3,5}(?![\d.,]\d)"
            r"|\+\d{1,3}[ -]?\(?\d{2,4}\)?(?:[ .-]?\d{3,4}){2}(?!\d)"
        ),
    ),
    (
        "address",
        re.compile(
            r"\b(?:Jl\.?|Jln\.?|Jalan|Gg\.?|Gang|Komplek|Perumahan|Perum)[ \t]+[A-Z0-9][\w.'’-]*"
            r"(?:[ \t]+[A-Z0-9][\w.'’-]*){0,5}(?:,?[ \t]*(?:No\.?|Nomor|Blok)[ \t]*[\w/-]+)?"
            r"(?:,?[ \t]*(?:RT|RW)[ \t.]*\d+(?:/(?:RW[ \t.]*)?\d+)?)*"
        ),
    ),
)
NAME_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(
        rf"(?i:nama saya|saya bernama|nama lengkap saya|my name is|i'm|i am|name:|nama:)[ \t]*({_NAME})"
    ),
    re.compile(rf"\b(?:[Ss]aya|[Aa]ku)[ \t]+({_NAME})"),
    re.compile(
        rf"\b(?:Pak|Bu|Bapak|Ibu|Mas|Mbak|Mr\.?|Mrs\.?|Ms\.?|Sdr\.?|Sdri\.?|Kak|Bro|Sis)[ \t]+({_NAME})"
    ),
    re.compile(rf"(?:Salam|Regards|Hormat saya|Best|Thanks|Terima kasih),?[ \t]*\n[ \t]*({_NAME})"),
)


@dataclass(frozen=True)
class PiiSpan:
    """One piece of personal data: its kind and where it stands in the text."""

    kind: str
    start: int
    end: int
    text: str


def find_pii(text: str, known_names: Iterable[str] = ()) -> list[PiiSpan]:
    """Every e-mail, ID number, phone number, address and name in `text`, in order.

    Names are those introduced in `text` itself plus `known_names` (found elsewhere in a chat) and
    their parts; longer names are matched first, so "Daniel Hoffmann" is one name, not two.
    """
    spans: list[PiiSpan] = []
    for kind, pattern in PATTERNS:
        for match in pattern.finditer(text):
            group = "v" if match.groupdict().get("v") else 0
            _add(spans, PiiSpan(kind, match.start(group), match.end(group), match.group(group)))
    names = set(find_names(text))
    for name in known_names:
        names |= {name, *(part for part in name.split() if len(part) >= 3)}
    for name in sorted(names, key=len, reverse=True):
        for match in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text):
            _add(spans, PiiSpan("name", match.start(), match.end(), name))
    return sorted(spans, key=lambda span: span.start)


def find_names(text: str) -> list[str]:
    """Names introduced by "nama saya", an honorific or a sign-off (placeholders and titles ignored)."""
    names: list[str] = []
    for pattern in NAME_PATTERNS:
        for match in pattern.finditer(text):
            parts = [part for part in match.group(1).split() if part not in _NOT_NAMES]
            if parts and parts[0] == match.group(1).split()[0]:
                names.append(" ".join(parts))
    return names


def scrub(text: str, known_names: Iterable[str] = ()) -> str:
    """Replace personal data with placeholders; `known_names` (found elsewhere in the chat) go too."""
    pieces: list[str] = []
    position = 0
    for span in find_pii(text, known_names):
        pieces.append(text[position : span.start])
        pieces.append(PLACEHOLDERS[span.kind])
        position = span.end
    pieces.append(text[position:])
    return "".join(pieces)


def _add(spans: list[PiiSpan], candidate: PiiSpan) -> None:
    if not any(candidate.start < span.end and span.start < candidate.end for span in spans):
        spans.append(candidate)
