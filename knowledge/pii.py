"""Personal data in text: finding it (for the checklist) and replacing it (for imported chats).

Kinds: e-mail, phone number, passport number, NIK (16-digit national ID), NPWP (tax number), street
address, and names where they can be told. Each kind is replaced by a placeholder in brackets, e.g.
`[EMAIL]`, `[NIK]`, `[NAMA]`.

Names are found after an introduction, in any letter case: strong ones ("nama saya", "namaku", "saya
bernama", "my name is", "nama:") take the words that follow up to a function word; honorifics
("pak", "bu", "bapak", "ibu", "mas", "mbak", "kak", "sdr", "Mr", ...), "atas nama", and the weak "saya",
"aku", "dengan" take only words that are not ordinary Indonesian (`pii_words.ORDINARY_WORDS`), so
"saya mau", "dengan modal" or "Bapak dapat" stay; a sign-off line ("Salam,\nBudi") counts as well.

Why not Microsoft Presidio: its names (PERSON) come from a spaCy NER model, spaCy ships no Indonesian
pipeline, and models cannot be downloaded at run time here. Without a model Presidio's recognisers are
regular expressions with context words, the same rules as these at the price of spaCy as a dependency.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from knowledge.pii_words import FUNCTION_WORDS, ORDINARY_WORDS

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
_WORD = r"[^\W\d_]+(?:['’-][^\W\d_]+)*(?![\w'’-])"
_FIRST_WORD = re.compile(rf"[ \t]*({_WORD})")
_NEXT_WORD = re.compile(rf"[ \t]+({_WORD})")
_STRONG = re.compile(
    r"(?i:\b(?:nama(?:[ \t]+lengkap)?[ \t]+(?:saya|aku|gue|gw)|namaku|(?:saya|aku)[ \t]+bernama"
    r"|perkenalkan,?[ \t]+(?:nama[ \t]+)?(?:saya|aku)|my[ \t]+name[ \t]+is)\b[ \t]*:?|\b(?:nama|name)[ \t]*:)"
)
_HONORIFIC = re.compile(
    r"(?i:\b(?:pak|bu|bapak|ibu|mas|mbak|mba|kak|bang|bro|sis|saudara|saudari|tuan|nyonya|nona)\b"
    r"|\batas[ \t]+nama\b|\b(?:sdr|sdri|mr|mrs|ms|a\.n)\b\.?)"
)
_WEAK = re.compile(r"(?i:\b(?:saya|aku)\b|(?:^|[.,!?;:\n]|\b(?:ini|bicara|berbicara))[ \t]*dengan\b)")
_ENGLISH = re.compile(r"\b(?:I'm|I’m|I am)\b")
_SIGN_OFF = re.compile(
    r"(?:Salam|Regards|Hormat saya|Best|Thanks|Terima kasih),?[ \t]*\n[ \t]*"
    r"(?P<name>[A-Z][a-z'’]+(?:[ \t]+[A-Z][a-z'’]+){0,3})"
)
_FILLERS = frozenset({"adalah", "ialah", "yaitu", "yakni", "itu"})
_MAX_NAME_WORDS = 5


def _looks_like_a_verb(word: str) -> bool:
    """Suffixed verbs and possessives ("daftarkan", "rumahnya"); short names such as "Sonya" pass."""
    return len(word) >= 6 and word.endswith(("kan", "nya"))


def _name_word(word: str, *, strict: bool, capitalised: bool, shouted: bool) -> bool:
    """Whether `word` can be part of a name. `strict` (after an honorific or a weak introducer) also
    refuses ordinary words, whatever their case; `capitalised` (after "I'm") wants a capital first;
    capitals alone ("KBLI") only pass in shouted text."""
    lower = word.lower()
    if word in _NOT_NAMES or lower in FUNCTION_WORDS or (word.isupper() and len(word) > 1 and not shouted):
        return False
    if capitalised and not word[:1].isupper():
        return False
    return not strict or (lower not in ORDINARY_WORDS and not _looks_like_a_verb(lower))


def _name_after(text: str, introducer: re.Match[str], strict: bool, capitalised: bool) -> str | None:
    """The name (one to five words of one letter case) that follows an introducer, or None."""
    shouted = introducer.group().isupper()
    words: list[str] = []
    match = _FIRST_WORD.match(text, introducer.end())
    while match and len(words) < _MAX_NAME_WORDS:
        word = match.group(1)
        if words or word.lower() not in _FILLERS:
            if not _name_word(word, strict=strict, capitalised=capitalised, shouted=shouted):
                break
            if words and words[-1][:1].isupper() != word[:1].isupper():
                break
            words.append(word)
        match = _NEXT_WORD.match(text, match.end())
    return " ".join(words) or None


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
        for match in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE):
            _add(spans, PiiSpan("name", match.start(), match.end(), name))
    return sorted(spans, key=lambda span: span.start)


def find_names(text: str) -> list[str]:
    """Names introduced by "nama saya", an honorific, "saya"/"dengan", or a sign-off, in any case."""
    names: list[str] = []
    tiers = ((_STRONG, False, False), (_HONORIFIC, True, False), (_WEAK, True, False), (_ENGLISH, True, True))
    for pattern, strict, capitalised in tiers:
        for introducer in pattern.finditer(text):
            name = _name_after(text, introducer, strict, capitalised)
            if name:
                names.append(name)
    names += [match.group("name") for match in _SIGN_OFF.finditer(text)]
    return list(dict.fromkeys(names))


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
