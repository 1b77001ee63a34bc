"""Register fit, looping and declining: does the answer suit the question's tone, does it loop, does it
decline the unknown?

Register fit uses the dataset checklist's rules (`training/dataset/register.py`): a casual question
wants a casual answer with a natural particle (nih, dong, ya, kok, ...), a formal one no casual
words, a business one no heavy slang. On the unknown set (regulations that do not exist, questions
outside the domain or needing the asker's own data) the right answer declines or asks back; the
phrases below are how answers do that in Indonesian.
"""

from __future__ import annotations

import re

from knowledge.register import answer_register_problem, words

LOOP_DISTINCT_BIGRAMS = 0.5
"""An answer whose distinct word bigrams are under this share of its bigrams is stuck in a loop."""

DECLINE = re.compile(
    r"\b(?:tidak|nggak|ngga|gak|enggak|belum)\s+(?:\w+\s+){0,2}?"
    r"(?:yakin|tahu|mengetahui|menemukan|nemu|mengenal|bisa memastikan|dapat memastikan|bisa menyebut"
    r"|dapat menyebutkan|bisa menghitung|bisa jawab|mau nebak|(?:punya|memiliki) (?:data|informasi|akses))\b"
    r"|\bmaaf\b|\bdi luar (?:bidang|cakupan|keahlian)|\bkurang pas\b",
    re.IGNORECASE,
)
ASK = re.compile(
    r"\b(?:boleh (?:saya |aku )?tahu|maksudnya|yang mana"
    r"|bisa (?:dijelaskan|diperjelas)"
    r"|mohon (?:dijelaskan|diperjelas)|apakah yang (?:anda|kamu|bapak/ibu) maksud|kalau boleh tahu)\b",
    re.IGNORECASE,
)


def register_fits(register: str | None, answer: str) -> bool | None:
    """Whether the answer's tone suits the question's register; None when the register is unknown."""
    if register is None:
        return None
    return answer_register_problem(register, answer) is None


def declines(answer: str) -> bool:
    """Whether the answer declines (says it does not know or cannot tell) or asks back what is meant."""
    return bool(DECLINE.search(answer)) or ("?" in answer and bool(ASK.search(answer)))


def repetitive(answer: str) -> bool:
    """Whether the answer loops ("dan, dan, dan, ..."): few distinct word bigrams for its length.

    Greedy decoding of a weak model degenerates so; chrF, which weighs recall, can score such long
    loops above a short honest answer, so the report shows the share of looping answers beside it.
    """
    tokens = words(answer)
    bigrams = list(zip(tokens, tokens[1:], strict=False))
    return len(bigrams) >= 8 and len(set(bigrams)) / len(bigrams) < LOOP_DISTINCT_BIGRAMS
