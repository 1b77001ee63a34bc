"""Train / validation / test split with no question on both sides.

Records are grouped before splitting: all pairs of one seed question (the question, its variations,
its synthetic spin-offs) form one group, and any two records whose questions are the same or nearly
the same (one's content words almost all inside the other's) are merged into one group too, so a
correction or an imported conversation that restates a seed question follows that seed. Groups are
then split per category (stratified): a held-out test share of the groups, then a validation share of
the rest, every category on every side when it has enough groups.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass

from knowledge.records import Pair
from training.dataset.similarity import content_words, normalize, similar_pairs

SPLITS: tuple[str, ...] = ("train", "validation", "test")
GROUPING_CONTAINMENT = 0.8
NEAR_DUPLICATE = 0.8


@dataclass(frozen=True)
class SplitResult:
    """The three splits and the group each pair was assigned with."""

    splits: dict[str, list[Pair]]
    group_of: dict[str, str]

    def group_counts(self) -> dict[str, int]:
        """How many groups (seed questions and their look-alikes) each split holds."""
        return {name: len({self.group_of[pair.id] for pair in pairs}) for name, pairs in self.splits.items()}


def group_pairs(pairs: list[Pair]) -> dict[str, str]:
    """Map each pair id to its group key.

    Pairs of one seed share a group. Two seeds merge when a question of one nearly duplicates a
    question of the other (Jaccard >= 0.8, or one's four or more content words all but inside the
    other's). A pair without a seed (a correction, a conversation) joins the seed group whose
    questions contain its words most often, and merges every group it nearly duplicates. Synthetic
    pairs follow their seed only: their persona framing would make unrelated questions look alike.
    """
    parent = list(range(len(pairs)))

    def find(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    def union(first: int, second: int) -> None:
        parent[find(first)] = find(second)

    anchors: dict[str, int] = {}
    for index, pair in enumerate(pairs):
        for key in (f"seed:{pair.seed_id}" if pair.seed_id else None, f"text:{normalize(pair.question)}"):
            if key is not None:
                union(index, anchors.setdefault(key, index))
    compared = [index for index, pair in enumerate(pairs) if pair.source != "synthetic"]
    sets = [content_words(pairs[index].question) for index in compared]
    attach: dict[int, Counter[int]] = defaultdict(Counter)
    for first, second, _ in similar_pairs(sets, GROUPING_CONTAINMENT, containment=True):
        one, other = compared[first], compared[second]
        strict = len(sets[first] & sets[second]) / len(sets[first] | sets[second]) >= NEAR_DUPLICATE
        seeded = (pairs[one].seed_id is not None, pairs[other].seed_id is not None)
        if strict or (all(seeded) and min(len(sets[first]), len(sets[second])) >= 4) or not any(seeded):
            union(one, other)
        elif seeded[0] != seeded[1]:
            loose, anchored = (other, one) if seeded[0] else (one, other)
            attach[loose][find(anchored)] += 1
    for loose, groups in sorted(attach.items()):
        union(loose, groups.most_common(1)[0][0])
    names: dict[int, str] = {}
    for index, pair in enumerate(pairs):
        root = find(index)
        if pair.seed_id and root not in names:
            names[root] = pair.seed_id
    for index, pair in enumerate(pairs):
        names.setdefault(find(index), pair.id)
    return {pair.id: names[find(index)] for index, pair in enumerate(pairs)}


def split_pairs(pairs: list[Pair], test_share: float, validation_share: float, seed: int) -> SplitResult:
    """Assign whole groups to train, validation and test, stratified by the group's category.

    Seed groups (a seed question with its variations) and loose groups (corrections, conversations
    that match no seed) are allocated separately, so a one-pair group never takes a category's
    place in the test split.
    """
    group_of = group_pairs(pairs)
    members: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        members[group_of[pair.id]].append(pair)
    strata: dict[tuple[str, bool], list[str]] = defaultdict(list)
    for key, group in members.items():
        category = Counter(pair.category for pair in group).most_common(1)[0][0]
        strata[(category, any(pair.seed_id for pair in group))].append(key)
    rng = random.Random(seed)
    side: dict[str, str] = {}
    for seeded in (True, False):
        sizes = {category: len(keys) for (category, kind), keys in strata.items() if kind == seeded}
        tests = allocate(sizes, test_share)
        validations = allocate(
            {category: sizes[category] - tests[category] for category in sizes}, validation_share
        )
        for category in sorted(sizes):
            keys = sorted(strata[(category, seeded)])
            rng.shuffle(keys)
            for position, key in enumerate(keys):
                side[key] = (
                    "test"
                    if position < tests[category]
                    else ("validation" if position < tests[category] + validations[category] else "train")
                )
    splits: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    for pair in pairs:
        splits[side[group_of[pair.id]]].append(pair)
    return SplitResult(splits, group_of)


def leaks(result: SplitResult) -> list[str]:
    """Questions (exact or near-duplicate) and seeds found on two sides; empty when the split is clean."""
    problems: list[str] = []
    owner: dict[str, str] = {}
    for name, pairs in result.splits.items():
        for pair in pairs:
            for key in (
                f"seed {pair.seed_id}" if pair.seed_id else None,
                f"question {normalize(pair.question)!r}",
            ):
                if key is None:
                    continue
                if owner.setdefault(key, name) != name:
                    problems.append(f"{key} is in {owner[key]} and {name}")
    flat = [(name, pair) for name, pairs in result.splits.items() for pair in pairs]
    sets = [content_words(pair.question) for _, pair in flat]
    for first, second, score in similar_pairs(sets, NEAR_DUPLICATE):
        if flat[first][0] != flat[second][0]:
            problems.append(
                f"{flat[first][1].id} ({flat[first][0]}) and {flat[second][1].id} ({flat[second][0]}) "
                f"are near-duplicates ({score:.0%})"
            )
    return problems


def allocate(sizes: dict[str, int], share: float) -> dict[str, int]:
    """How many groups of each category go to a split taking `share` of all groups.

    The total is `share` of all groups, rounded; each category gets its proportional part (largest
    remainders first), and at least one group when it has three or more, so every category appears.
    """
    exact = {category: size * share for category, size in sizes.items()}
    counts = {category: int(value) for category, value in exact.items()}
    target = int(sum(sizes.values()) * share + 0.5)
    for category in sorted(exact, key=lambda name: (exact[name] - counts[name], name), reverse=True):
        if sum(counts.values()) >= target:
            break
        counts[category] += 1
    for category, size in sizes.items():
        if size >= 3 and share > 0 and counts[category] == 0:
            counts[category] = 1
    return counts
