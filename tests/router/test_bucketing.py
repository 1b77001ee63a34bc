"""The canary split as a function: share, stickiness, extremes, monotonic growth."""

import hashlib
import hmac
import random

import pytest

from router.bucketing import BUCKETS, bucket_of, choose_variant, hash_user, threshold

KEYS = [f"user-{i}" for i in range(10_000)]


@pytest.mark.parametrize("percentage", [1, 5, 20, 30, 50, 75, 99])
def test_share_matches_percentage_over_many_keys(percentage: float) -> None:
    tuned = sum(choose_variant(k, percentage, "salt") == "tuned" for k in KEYS)
    # binomial standard deviation at n=10,000 is at most 50 users (0.5%); allow 4 sigma
    assert abs(tuned / len(KEYS) * 100 - percentage) < 2.0


def test_thirty_percent_over_1000_keys() -> None:
    share = sum(choose_variant(f"k{i}", 30, "zantara") == "tuned" for i in range(1000)) / 10
    assert 25 <= share <= 35


def test_sticky_per_user_and_salt_dependent() -> None:
    for key in KEYS[:500]:
        assert len({choose_variant(key, 40, "s") for _ in range(5)}) == 1
    assert [bucket_of(k, "a") for k in KEYS[:200]] != [bucket_of(k, "b") for k in KEYS[:200]]


def test_zero_and_hundred_percent_are_absolute() -> None:
    assert all(choose_variant(k, 0, "s") == "base" for k in KEYS)
    assert all(choose_variant(k, 100, "s") == "tuned" for k in KEYS)
    assert choose_variant(None, 0, "s") == "base"
    assert choose_variant(None, 100, "s") == "tuned"


def test_raising_the_share_only_moves_users_from_base_to_tuned() -> None:
    before = {k for k in KEYS if choose_variant(k, 20, "s") == "tuned"}
    after = {k for k in KEYS if choose_variant(k, 50, "s") == "tuned"}
    assert before < after


def test_requests_without_a_key_are_split_at_random() -> None:
    rng = random.Random(7)
    picks = [choose_variant(None, 30, "s", rng) for _ in range(10_000)]
    assert 0.27 < picks.count("tuned") / len(picks) < 0.33


def test_buckets_and_thresholds() -> None:
    assert all(0 <= bucket_of(k, "s") < BUCKETS for k in KEYS[:1000])
    assert threshold(0) == 0 and threshold(100) == BUCKETS and threshold(12.34) == 1234
    with pytest.raises(ValueError):
        threshold(100.5)


def test_user_hash_hides_the_key() -> None:
    hashed = hash_user("alice@example.com", "s")
    assert "alice" not in hashed and len(hashed) == 64
    assert hashed == hash_user("alice@example.com", "s") != hash_user("alice@example.com", "t")


def test_user_hash_is_an_hmac_under_the_secret_key() -> None:
    secret = "a-secret-key-of-enough-length"
    hashed = hash_user("+6281234567890", secret)
    assert hashed == hmac.new(secret.encode(), b"+6281234567890", hashlib.sha256).hexdigest()
    # the old scheme: sha256 of a public salt and the key, reversible by hashing guessed phone numbers
    assert hashed != hashlib.sha256(f"user:{secret}:+6281234567890".encode()).hexdigest()
    with pytest.raises(ValueError):
        hash_user("+6281234567890", "")


def test_buckets_do_not_move() -> None:
    # pinned: a change of the bucket hash would move users between base and tuned mid-canary
    keys = ["alice@example.com", "budi", "+6281234567890", "user-42"]
    assert [bucket_of(key, "zantara") for key in keys] == [9642, 3795, 3590, 3519]
