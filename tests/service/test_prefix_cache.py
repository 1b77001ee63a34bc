"""The prompt-prefix store: block-aligned lookups, per-adapter keys, least-recently-used eviction."""

from __future__ import annotations

import torch

from service.engines.prefix_cache import LayerKV, PrefixCache

LAYERS = 2


def kv_for(token_ids: list[int], adapter_offset: float = 0.0) -> list[LayerKV]:
    """Fake per-layer keys and values whose every position encodes its token (and layer)."""
    column = torch.tensor(token_ids, dtype=torch.float32) + adapter_offset
    return [
        (column.view(1, -1, 1).expand(2, -1, 3) + layer, -column.view(1, -1, 1).expand(2, -1, 3) - layer)
        for layer in range(LAYERS)
    ]


def test_lookup_returns_the_longest_stored_block_prefix_and_leaves_the_last_token() -> None:
    cache = PrefixCache(capacity_tokens=64, block_size=4)
    prompt = list(range(10, 20))  # 10 tokens: two full blocks
    assert cache.lookup("__base__", prompt) == []
    cache.store("__base__", prompt, kv_for(prompt))
    assert cache.cached_tokens == 8

    longer = prompt + [99, 98, 97]
    found = cache.lookup("__base__", longer)
    assert len(found) == LAYERS
    for layer, (keys, values) in enumerate(found):
        assert keys.shape == (2, 8, 3)
        assert torch.equal(keys[0, :, 0], torch.tensor(prompt[:8], dtype=torch.float32) + layer)
        assert torch.equal(values, -keys)

    exactly_eight = prompt[:8]  # the last token must be computed: only the first block comes back
    assert cache.lookup("__base__", exactly_eight)[0][0].shape[1] == 4
    diverging = prompt[:5] + [0] * 6  # the second block differs
    assert cache.lookup("__base__", diverging)[0][0].shape[1] == 4
    assert cache.lookup("__base__", [0] + prompt) == []


def test_blocks_are_kept_per_adapter_and_dropped_with_it() -> None:
    cache = PrefixCache(capacity_tokens=64, block_size=4)
    prompt = list(range(9))
    cache.store("adapter1", prompt, kv_for(prompt, 100.0))
    assert cache.lookup("__base__", prompt) == []
    found = cache.lookup("adapter1", prompt)
    assert found[0][0][0, 0, 0].item() == 100.0
    cache.drop_adapter("adapter1")
    assert cache.lookup("adapter1", prompt) == []
    assert cache.cached_tokens == 0


def test_a_shared_prefix_outlives_the_tail_hanging_off_it() -> None:
    cache = PrefixCache(capacity_tokens=12, block_size=4)  # room for three blocks
    system = [1, 2, 3, 4]
    chat = system + [5, 6, 7, 8, 0]
    cache.store("__base__", chat, kv_for(chat))
    assert cache.lookup("__base__", chat)[0][0].shape[1] == 8  # touches the tail, then the prefix
    other = [50, 51, 52, 53, 54, 55, 56, 57, 0]
    cache.store("__base__", other, kv_for(other))  # four blocks: the least recently used goes
    assert cache.cached_tokens == 12
    assert cache.lookup("__base__", chat)[0][0].shape[1] == 4, "the tail goes before its prefix"
    assert cache.lookup("__base__", other)[0][0].shape[1] == 8


def test_a_cache_without_room_for_a_block_is_off() -> None:
    cache = PrefixCache(capacity_tokens=3, block_size=4)
    prompt = list(range(9))
    cache.store("__base__", prompt, kv_for(prompt))
    assert not cache.enabled
    assert cache.lookup("__base__", prompt) == []
