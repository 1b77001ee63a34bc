"""Keys and values of prompt prefixes already computed, reused by later prompts that start the same way.

Every chat request starts with the same system prompt (and a conversation's next turn with the whole
conversation so far), so most of a prompt's prefill was already computed for an earlier request.
Prompts are cut into blocks of `block_size` tokens; a block is stored under the adapter and a digest
of every token up to its end (BLAKE2b over the previous block's digest and its own tokens), so a
lookup walks a prompt's blocks while they are stored. The adapter is part of the key because LoRA
changes the key and value projections. The digest is cryptographic because users share the cache: with
a fast non-cryptographic hash (Python's `hash()` of tuples is the same in every process) a crafted
prompt could collide with another user's prefix and have its keys and values served to them.

Least recently used blocks are dropped past `capacity_tokens`. A lookup touches a prompt's blocks
from its last to its first, so a shared prefix stays more recent than the tails hanging off it and
is dropped last.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence as Seq

import torch

LayerKV = tuple[torch.Tensor, torch.Tensor]
"""One layer's keys and values for a run of tokens: `[kv_heads, tokens, head_dim]` each."""

_BlockKey = tuple[str, bytes]


class PrefixCache:
    """An LRU store of per-layer keys and values for blocks of prompt tokens, per adapter."""

    def __init__(self, capacity_tokens: int, block_size: int = 16) -> None:
        self.block_size = block_size
        self._capacity_blocks = capacity_tokens // block_size
        self._blocks: OrderedDict[_BlockKey, list[LayerKV]] = OrderedDict()
        self.hit_tokens = 0

    @property
    def enabled(self) -> bool:
        """False when the capacity is under one block."""
        return self._capacity_blocks > 0

    @property
    def cached_tokens(self) -> int:
        """Tokens held now (all adapters)."""
        return len(self._blocks) * self.block_size

    def lookup(self, adapter: str, token_ids: Seq[int]) -> list[LayerKV]:
        """The stored keys and values of the longest block-aligned prefix of `token_ids`, leaving at
        least the last token to compute (its logits start the answer); empty when none is stored."""
        found: list[list[LayerKV]] = []
        keys = self._keys(adapter, token_ids[: len(token_ids) - 1])
        for key in keys:
            blocks = self._blocks.get(key)
            if blocks is None:
                break
            found.append(blocks)
        for key in reversed(keys[: len(found)]):
            self._blocks.move_to_end(key)
        self.hit_tokens += len(found) * self.block_size
        if not found:
            return []
        return [
            (torch.cat([b[layer][0] for b in found], dim=1), torch.cat([b[layer][1] for b in found], dim=1))
            for layer in range(len(found[0]))
        ]

    def store(self, adapter: str, token_ids: Seq[int], layers: Seq[LayerKV]) -> None:
        """Keep the full blocks of a prompt whose keys and values (`[kv_heads, len(token_ids),
        head_dim]` per layer) were just computed; blocks already stored are only touched."""
        if not self.enabled:
            return
        for index, key in enumerate(self._keys(adapter, token_ids)):
            if key in self._blocks:
                self._blocks.move_to_end(key)
                continue
            start, stop = index * self.block_size, (index + 1) * self.block_size
            self._blocks[key] = [(k[:, start:stop].clone(), v[:, start:stop].clone()) for k, v in layers]
        while len(self._blocks) > self._capacity_blocks:
            self._blocks.popitem(last=False)

    def drop_adapter(self, adapter: str) -> None:
        """Forget every block computed with `adapter` (it was unloaded)."""
        for key in [key for key in self._blocks if key[0] == adapter]:
            del self._blocks[key]

    def _keys(self, adapter: str, token_ids: Seq[int]) -> list[_BlockKey]:
        """The key of each full block of `token_ids`: the adapter and the digest of all tokens up to
        the block's end, chained through the previous block's digest."""
        keys: list[_BlockKey] = []
        digest = b""
        for start in range(0, len(token_ids) - self.block_size + 1, self.block_size):
            tokens = array("q", token_ids[start : start + self.block_size]).tobytes()
            digest = hashlib.blake2b(digest + tokens, digest_size=32).digest()
            keys.append((adapter, digest))
        return keys
