"""Which category a free-text question belongs to (for imported conversations and corrections)."""

from __future__ import annotations

import re

from knowledge.lexicon import TOPIC_TERMS

_PATTERNS: dict[str, re.Pattern[str]] = {
    category: re.compile(
        r"(?<![\w-])(?:" + "|".join(re.escape(term) for term in terms) + r")(?![\w-])", re.IGNORECASE
    )
    for category, terms in TOPIC_TERMS.items()
}


def classify(text: str) -> str | None:
    """The category whose terms `text` uses most (distinct terms); a tie at the top is multi_domain.

    None when no category's term appears at all.
    """
    scores = {
        category: len({match.lower() for match in pattern.findall(text)})
        for category, pattern in _PATTERNS.items()
    }
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    if ranked[0][1] == 0:
        return None
    return ranked[0][0] if ranked[0][1] > ranked[1][1] else "multi_domain"
