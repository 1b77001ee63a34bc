"""Consistency: the variations of one seed question get the same key facts ("same query, same answer").

Only the seed question and its variations count (synthetic spin-offs ask other things). A seed's
key facts are the registry facts its golden answer rests on (`meta.facts`). For each answer,
each key fact with a figure is *stated* (a figure that agrees with it), *contradicted* (the registry
check flags a figure against it) or *absent*. Two variations agree when their answers give every key
fact the same state; a seed's consistency is the share of its pairs of variations that agree, and
the variant's consistency the mean over seeds (with a bootstrap interval over seeds). Answers that
state no key fact at all agree trivially, so `key_facts_stated` (the share of key facts stated)
is reported beside it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import combinations
from typing import Any

from knowledge.facts import Fact
from knowledge.quantities import find_quantities
from training.evaluation.data import EvalItem
from training.evaluation.facts import FactCheck
from training.evaluation.metrics import mean_interval

VARIATION_SOURCES = (None, "seed", "variation")
"""Records that restate the seed question itself (synthetic spin-offs ask something else)."""


def key_fact_states(answer: str, check: FactCheck, facts: Sequence[Fact]) -> tuple[str, ...]:
    """stated / contradicted / absent for each key fact, in order."""
    quantities = find_quantities(answer)
    flagged = {fact.id for finding in check.findings for fact in finding.facts}
    states = []
    for fact in facts:
        if fact.id in flagged:
            states.append("contradicted")
        elif any(q.unit == fact.unit and any(q.matches(v) for v in fact.values) for q in quantities):
            states.append("stated")
        else:
            states.append("absent")
    return tuple(states)


def consistency(
    items: Sequence[EvalItem],
    answers: Sequence[str],
    checks: Sequence[FactCheck],
    facts: dict[str, Fact],
    resamples: int = 1000,
) -> dict[str, Any]:
    """Per-seed agreement of key-fact states across variations, and its mean with an interval."""
    by_seed: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for item, answer, check in zip(items, answers, checks, strict=True):
        keys = [facts[name] for name in item.facts if name in facts]
        if item.seed_id and keys and item.source in VARIATION_SOURCES:
            by_seed[item.seed_id].append(key_fact_states(answer, check, keys))
    per_seed = {}
    for seed, profiles in sorted(by_seed.items()):
        pairs = list(combinations(profiles, 2))
        if pairs:
            per_seed[seed] = sum(first == second for first, second in pairs) / len(pairs)
    result = mean_interval(list(per_seed.values()), resamples)
    result["seeds"] = {seed: round(value, 4) for seed, value in per_seed.items()}
    states = [state for profiles in by_seed.values() for profile in profiles for state in profile]
    result["key_facts_stated"] = round(states.count("stated") / len(states), 4) if states else None
    return result
