"""Paged KV-cache block manager with prefix caching, modelled on vLLM v1.

vLLM v1 (`vllm/v1/core/kv_cache_manager.py`, `block_pool.py`) splits GPU KV memory into blocks
of `block_size_tok` tokens. A request holding `n` computed tokens holds ceil(n / block_size)
blocks. Admission has one primitive, `allocate_slots(...) -> blocks | None`: None means "not
enough free blocks" and the *caller* (the scheduler) decides whom to preempt. Freed blocks that
hold a full block of a cached prefix keep their hash and stay reusable until evicted, LRU first.

We keep the same behaviour with integer counters instead of block objects — the simulator needs
counts and hit lengths, not block ids — so every call is O(1) (eviction is O(number of prefixes
evicted)). Block states:

    free        not held by any request, holding nothing reusable
    evictable   a cached prefix no running request references (LRU order; reusable on a hit,
                taken back block by block from the tail when free blocks run out, as vLLM's
                free queue returns a sequence's tail blocks first)
    in use      private blocks of running requests + cached prefixes with references > 0

`capacity = free + evictable + in_use` always holds (`check()` asserts it).

Prefix caching here is keyed by the workload's shared-prefix id (a system prompt or a
conversation's history) instead of a chained hash of block contents: two requests with the same
`prefix_id` share their first `prefix_tok // block_size` blocks. Only full blocks are shared,
and, as in vLLM, a hit never covers the whole prompt (the last token is always recomputed so the
step has a token to sample from).
"""

from __future__ import annotations

from collections import OrderedDict

from models.errors import LifecostError


def blocks_for(num_tok: int, block_size_tok: int) -> int:
    """Blocks that hold `num_tok` tokens: ceil(num_tok / block_size_tok)."""
    return -(-num_tok // block_size_tok)


class KVCacheManager:
    """Counts of free / evictable / in-use KV blocks on one replica, plus the prefix cache."""

    def __init__(self, num_blocks: int, block_size_tok: int, enable_prefix_caching: bool = True):
        if block_size_tok < 1:
            raise LifecostError(f"block size must be at least 1 token, got {block_size_tok}", field="engine.block_size_tok", fix="use 16 (vLLM's default)")
        if num_blocks < 1:
            raise LifecostError(f"the KV cache has {num_blocks} blocks", field="engine.gpu_memory_utilization", fix="give the KV cache more memory or use a smaller model")
        self.num_blocks = num_blocks
        self.block_size_tok = block_size_tok
        self.enable_prefix_caching = enable_prefix_caching
        self.free_blocks = num_blocks
        self.evictable_blocks = 0
        # prefix_id -> blocks cached / running requests referencing it
        self._prefix_blocks: dict[int, int] = {}
        self._prefix_refs: dict[int, int] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()  # unreferenced prefixes, oldest first
        # accounting
        self.hit_blocks = 0  # prefix blocks reused by admitted requests
        self.evicted_blocks = 0

    # -- counts ---------------------------------------------------------------------------
    @property
    def available_blocks(self) -> int:
        """Blocks an allocation may take: free ones plus evictable cached ones."""
        return self.free_blocks + self.evictable_blocks

    @property
    def used_blocks(self) -> int:
        """Blocks held by running requests (private blocks and referenced prefixes)."""
        return self.num_blocks - self.free_blocks - self.evictable_blocks

    def check(self) -> None:
        """Assert the block-conservation invariants (cheap; used by tests)."""
        assert 0 <= self.free_blocks <= self.num_blocks, self.free_blocks
        assert 0 <= self.evictable_blocks <= self.num_blocks, self.evictable_blocks
        assert 0 <= self.used_blocks <= self.num_blocks, self.used_blocks
        assert self.evictable_blocks == sum(self._prefix_blocks[p] for p in self._lru)
        assert all(self._prefix_refs[p] == 0 for p in self._lru)
        assert all(r >= 0 for r in self._prefix_refs.values())

    # -- prefix cache ---------------------------------------------------------------------
    def lookup_prefix(self, prefix_id: int, prefix_tok: int, num_tokens: int) -> int:
        """Blocks of `prefix_id` already cached that a request of `num_tokens` tokens may reuse.

        No side effect (vLLM: `get_computed_blocks`). Capped at full blocks
        of the prefix and below the whole request, so at least one token is computed.
        """
        if not self.enable_prefix_caching or prefix_id < 0 or prefix_tok < self.block_size_tok:
            return 0
        cached = self._prefix_blocks.get(prefix_id, 0)
        return min(cached, prefix_tok // self.block_size_tok, (num_tokens - 1) // self.block_size_tok)

    def cache_prefix(self, prefix_id: int, prefix_tok: int, shared_blocks: int) -> int:
        """A request has computed its prefix: publish its full prefix blocks for others to reuse.

        `shared_blocks` is how many prefix blocks the request already references (its hit).
        Returns the blocks it references afterwards. Its private prefix blocks move into the
        cache entry when it is the entry's only user (or the entry is new); otherwise the request
        keeps them private (two requests computed the same prefix concurrently — vLLM would
        dedupe by hash at block level; the difference is a few blocks for one request's life).
        """
        if not self.enable_prefix_caching or prefix_id < 0:
            return shared_blocks
        full = prefix_tok // self.block_size_tok
        if full <= shared_blocks:
            return shared_blocks
        refs = self._prefix_refs.get(prefix_id)
        if refs is None:  # new entry, referenced by this request
            self._prefix_blocks[prefix_id] = full
            self._prefix_refs[prefix_id] = 1
            return full
        if refs == 1 and shared_blocks > 0 and self._prefix_blocks[prefix_id] == shared_blocks:
            # only this request uses it and holds all of it: extend it to the full prefix
            self._prefix_blocks[prefix_id] = full
            return full
        return shared_blocks

    def _acquire_prefix(self, prefix_id: int) -> None:
        refs = self._prefix_refs[prefix_id]
        if refs == 0:
            del self._lru[prefix_id]
            self.evictable_blocks -= self._prefix_blocks[prefix_id]
        self._prefix_refs[prefix_id] = refs + 1

    def _release_prefix(self, prefix_id: int) -> None:
        refs = self._prefix_refs[prefix_id] - 1
        self._prefix_refs[prefix_id] = refs
        if refs == 0:
            self._lru[prefix_id] = None
            self.evictable_blocks += self._prefix_blocks[prefix_id]

    def _evict(self, num_blocks: int) -> None:
        """Turn `num_blocks` evictable blocks into free ones, least recently used prefix first."""
        while num_blocks > 0:
            pid = next(iter(self._lru))
            have = self._prefix_blocks[pid]
            take = min(have, num_blocks)
            num_blocks -= take
            self.evictable_blocks -= take
            self.free_blocks += take
            self.evicted_blocks += take
            if take == have:
                del self._lru[pid]
                del self._prefix_blocks[pid]
                del self._prefix_refs[pid]
            else:
                self._prefix_blocks[pid] = have - take

    # -- the admission primitive -----------------------------------------------------------
    def allocate(self, num_computed_tok: int, num_new_tok: int, *, prefix_id: int = -1, hit_blocks: int = 0) -> int | None:
        """Reserve KV slots so a request holding `num_computed_tok` tokens can compute `num_new_tok` more.

        Returns the number of blocks newly taken from the pool, or None when there are not
        enough (nothing is changed then; the caller preempts someone or waits). On a request's
        admission pass its prefix hit (`prefix_id`, `hit_blocks` from `lookup_prefix`): the hit
        blocks are referenced, not taken, and `num_computed_tok` must equal the hit tokens.
        """
        bs = self.block_size_tok
        need = -(-(num_computed_tok + num_new_tok) // bs) - -(-num_computed_tok // bs)
        if hit_blocks:
            # A referenced evictable prefix stops being evictable: it cannot pay for `need`.
            cached_free = self._prefix_blocks[prefix_id] if self._prefix_refs[prefix_id] == 0 else 0
            if need > self.free_blocks + self.evictable_blocks - cached_free:
                return None
            self._acquire_prefix(prefix_id)
            self.hit_blocks += hit_blocks
        elif need > self.free_blocks + self.evictable_blocks:
            return None
        if need > self.free_blocks:
            self._evict(need - self.free_blocks)
        self.free_blocks -= need
        return need

    def allocate_blocks(self, num_blocks: int) -> bool:
        """Take `num_blocks` fresh blocks at once (a run of decode steps of many requests)."""
        if num_blocks > self.free_blocks + self.evictable_blocks:
            return False
        if num_blocks > self.free_blocks:
            self._evict(num_blocks - self.free_blocks)
        self.free_blocks -= num_blocks
        return True

    def free(self, num_private_blocks: int, prefix_id: int = -1, shared_blocks: int = 0) -> None:
        """A request finished or was preempted: return its private blocks, drop its prefix reference."""
        self.free_blocks += num_private_blocks
        if shared_blocks:
            self._release_prefix(prefix_id)
