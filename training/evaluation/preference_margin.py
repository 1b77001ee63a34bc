"""The margin gate of a preference retrain: on held-out preference pairs, the candidate's log-probability
margin of the chosen answer over the rejected one must grow against the version it is compared with.

Deterministic: every answer is scored teacher-forced (the summed log-probability of its tokens after the
prompt, from the answer source's `golden_nll`), never sampled, so the same weights give the same numbers.

For a pair (DPO rows; KTO rows of one prompt, a desirable one matched with an undesirable one) the
*gain* is (candidate - compared) on the chosen answer minus (candidate - compared) on the rejected one,
i.e. how much the candidate's margin log p(chosen) - log p(rejected) grew: DPO's implicit reward margin
with the compared version as the reference. An unmatched KTO row counts its own change, positive when a
desirable answer became likelier or an undesirable one less likely. The gate reads the mean gain (with a
bootstrap interval over pairs) and the reward accuracy (the share of pairs with a positive gain).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.evaluation.data import EvalInputError, EvalItem
from training.evaluation.sources import TokenNLL

Logps = tuple[float | None, float | None]
"""log p(chosen), log p(rejected) of one pair under one variant (None for a side an unmatched row lacks)."""
SET = "preferences"
GATE = "preference_margin"


@dataclass(frozen=True)
class PreferencePair:
    """A held-out prompt with its chosen and rejected answers; an unmatched KTO row has one of the two."""

    id: str
    prompt: tuple[tuple[str, str], ...]
    chosen: str | None
    rejected: str | None

    def items(self) -> list[EvalItem]:
        """The answers to score, chosen first, as evaluation items (the answer as the golden reference)."""
        answers = [("chosen", self.chosen), ("rejected", self.rejected)]
        return [
            EvalItem(id=f"{self.id}-{side}", set=SET, messages=self.prompt, reference=text)
            for side, text in answers
            if text is not None
        ]


def load_pairs(path: Path) -> list[PreferencePair]:
    """The pairs of a preference dataset's held-out file (`test.jsonl` of either kind): DPO rows as they
    are, KTO rows matched per prompt (desirable with undesirable, in file order), the rest unmatched."""
    if not path.is_file():
        raise EvalInputError(f"preference pairs file {path} does not exist")
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalInputError(f"cannot read preference pairs {path}: {exc}") from None
    pairs: list[PreferencePair] = []
    kto: dict[tuple[tuple[str, str], ...], tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), list):
            raise EvalInputError(f"{path}:{number}: expected a TRL preference row with a `prompt`")
        prompt = tuple((str(m["role"]), str(m["content"])) for m in row["prompt"])
        if "chosen" in row and "rejected" in row:
            chosen, rejected = _text(row["chosen"]), _text(row["rejected"])
            pairs.append(PreferencePair(f"pair-{number}", prompt, chosen, rejected))
        elif "completion" in row and "label" in row:
            kto[prompt][0 if row["label"] else 1].append(_text(row["completion"]))
        else:
            raise EvalInputError(f"{path}:{number}: expected chosen/rejected (DPO) or completion/label (KTO)")
    for index, (prompt, (good, bad)) in enumerate(kto.items()):
        matched = min(len(good), len(bad))
        pairs += [PreferencePair(f"kto-{index}-{n}", prompt, good[n], bad[n]) for n in range(matched)]
        pairs += [PreferencePair(f"kto-{index}-d{n}", prompt, t, None) for n, t in enumerate(good[matched:])]
        pairs += [PreferencePair(f"kto-{index}-u{n}", prompt, None, t) for n, t in enumerate(bad[matched:])]
    if not pairs:
        raise EvalInputError(f"preference pairs file {path} holds no rows")
    return pairs


def _text(answer: Any) -> str:
    """The assistant's text of a TRL answer (a one-message list) or a plain string."""
    if isinstance(answer, list) and answer and isinstance(answer[-1], dict):
        return str(answer[-1]["content"])
    return str(answer)


def pair_items(pairs: list[PreferencePair]) -> list[EvalItem]:
    """Every answer of every pair, in order (what `golden_nll` scores)."""
    return [item for pair in pairs for item in pair.items()]


def pair_logps(pairs: list[PreferencePair], nll: list[TokenNLL]) -> list[tuple[float | None, float | None]]:
    """(log p(chosen), log p(rejected)) per pair from the NLL of `pair_items(pairs)`, in the same order."""
    values = iter(-loss for loss, _ in nll)
    out: list[tuple[float | None, float | None]] = []
    for pair in pairs:
        chosen = next(values) if pair.chosen is not None else None
        out.append((chosen, next(values) if pair.rejected is not None else None))
    return out


def margin_summary(logps: Sequence[Logps]) -> dict[str, Any]:
    """One variant's mean margin log p(chosen) - log p(rejected) over the matched pairs (None without)."""
    margins = [c - r for c, r in logps if c is not None and r is not None]
    return {
        "pairs": len(margins),
        "unmatched": len(logps) - len(margins),
        "mean_margin": round(sum(margins) / len(margins), 4) if margins else None,
    }


def gains(compared: Sequence[Logps], candidate: Sequence[Logps]) -> list[float]:
    """Per pair, how much the candidate's margin grew over the compared variant's (see the module doc)."""
    out = []
    for (before_c, before_r), (after_c, after_r) in zip(compared, candidate, strict=True):
        gain = 0.0
        if before_c is not None and after_c is not None:
            gain += after_c - before_c
        if before_r is not None and after_r is not None:
            gain -= after_r - before_r
        out.append(gain)
    return out


def bootstrap_interval(values: list[float], resamples: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of `values`."""
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(resamples))
    return means[int(0.025 * (resamples - 1))], means[int(0.975 * (resamples - 1))]


def margin_gate(
    settings: dict[str, Any],
    compared_label: str,
    compared: Sequence[Logps],
    candidate: Sequence[Logps],
    bootstrap: int,
) -> dict[str, Any]:
    """The gate's outcome: value is the mean margin gain (nats) over the compared variant; it passes when
    that mean is above `min_gain`, the reward accuracy above `min_reward_accuracy`, and (with `interval`)
    the 95% bootstrap interval's lower bound above `min_gain` too."""
    threshold = float(settings["min_gain"])
    values = gains(compared, candidate)
    mean = sum(values) / len(values)
    accuracy = sum(value > 0 for value in values) / len(values)
    low, high = bootstrap_interval(values, bootstrap)
    before, after = margin_summary(compared), margin_summary(candidate)
    need_accuracy = float(settings["min_reward_accuracy"])
    passed = mean > threshold and accuracy > need_accuracy and (not settings["interval"] or low > threshold)
    detail = (
        f"{len(values)} held-out pair(s): margin gain {mean:.3f} nats [95% {low:.3f}, {high:.3f}], "
        f"reward accuracy {accuracy:.2f} (needs > {need_accuracy:g}); mean margin {compared_label} "
        f"{before['mean_margin']}, adapter {after['mean_margin']}"
    )
    return {
        "value": round(mean, 4),
        "threshold": threshold,
        "status": "pass" if passed else "fail",
        "detail": detail,
        "interval": [round(low, 4), round(high, 4)],
        "reward_accuracy": round(accuracy, 4),
        "pairs": len(values),
        "mean_margin": {"compared": before["mean_margin"], "adapter": after["mean_margin"]},
    }


def preference_gates(
    settings: dict[str, Any],
    pairs: list[PreferencePair],
    nll: dict[str, list[TokenNLL]] | None,
    variants: dict[str, dict[str, Any]],
    baseline: str | None,
    bootstrap: int,
) -> list[dict[str, Any]]:
    """The margin gate for every adapter variant against the baseline (else the base); each variant's
    margins are added to its `variants` entry under `preferences`."""
    from training.evaluation.sources import BASE

    compared_key = baseline or BASE
    logps = {key: pair_logps(pairs, values) for key, values in (nll or {}).items()}
    for key, values in logps.items():
        if key in variants:
            variants[key]["preferences"] = margin_summary(values)
    out = []
    for key in variants:
        if key in (BASE, compared_key):
            continue
        threshold = settings.get("min_gain")
        if not settings.get("enabled", True):
            outcome = {
                "value": None,
                "threshold": None,
                "status": "skipped",
                "detail": "disabled in the gates file",
            }
        elif key not in logps or compared_key not in logps:
            outcome = {
                "value": None,
                "threshold": threshold,
                "status": "skipped",
                "detail": "log-probabilities unavailable (the server gives no prompt log-probabilities)",
            }
        else:
            label = f"baseline {compared_key}" if baseline else "base"
            outcome = margin_gate(settings, label, logps[compared_key], logps[key], bootstrap)
        out.append({"name": GATE, "variant": key, **outcome})
    return out
