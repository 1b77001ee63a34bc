"""Sticky canary split: a stable hash of salt and user key into 10,000 buckets.

The same user always lands in the same bucket, so raising the share only moves users from base to
tuned (never back and forth); requests without a user key are split at random.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from typing import Literal

BUCKETS = 10_000
Variant = Literal["base", "tuned"]


def bucket_of(user_key: str, salt: str) -> int:
    """The user's bucket in [0, 10000): the first 8 bytes of sha256(salt:key), modulo 10,000."""
    digest = hashlib.sha256(f"{salt}:{user_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def threshold(percentage: float) -> int:
    """How many buckets (from 0) go to the tuned variant at `percentage` (0-100, 0.01 resolution)."""
    if not 0 <= percentage <= 100:
        raise ValueError(f"percentage must be within 0-100, got {percentage}")
    return round(percentage * BUCKETS / 100)


def choose_variant(
    user_key: str | None, percentage: float, salt: str, rng: random.Random | None = None
) -> Variant:
    """Route one request: sticky per user key, random per request when there is no key."""
    cut = threshold(percentage)
    if cut <= 0:
        return "base"
    if cut >= BUCKETS:
        return "tuned"
    bucket = bucket_of(user_key, salt) if user_key else (rng or random).randrange(BUCKETS)
    return "tuned" if bucket < cut else "base"


def hash_user(user_key: str, key: str) -> str:
    """The user key as stored: HMAC-SHA256 under a secret key, so logs never hold it in clear and
    predictable user keys (e-mails, phone numbers) cannot be found again by hashing guesses."""
    if not key:
        raise ValueError("hash_user needs a secret key")
    return hmac.new(key.encode(), user_key.encode(), hashlib.sha256).hexdigest()
