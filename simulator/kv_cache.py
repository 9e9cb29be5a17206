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
    evictable   cached prefix blocks no running request references (LRU order; reusable on a
                hit, taken back block by block from the tail when free blocks run out, as vLLM's
                free queue returns a sequence's tail blocks first)
    in use      private blocks of running requests + the referenced part of cached prefixes

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
    """Counts of free / evictable / in-use KV blocks on one replica, plus the prefix cache.

    A cached prefix is an entry of `blocks` full blocks. Each running request that reuses it
    references its first `shared` blocks; the entry's first `pinned` = max(shared) blocks are in
    use, the rest of it (its tail) stays evictable, as vLLM frees and re-caches block by block.
    """

    def __init__(self, num_blocks: int, block_size_tok: int, enable_prefix_caching: bool = True):
        if block_size_tok < 1:
            raise LifecostError(f"block size must be at least 1 token, got {block_size_tok}", field="engine.block_size_tok", fix="use 16 (vLLM's default)")
        if num_blocks < 1:
            raise LifecostError(f"the KV cache has {num_blocks} blocks", field="engine.gpu_memory_utilization", fix="give the KV cache more memory or use a smaller model")
        self.num_blocks = num_blocks
        self.block_size_tok = block_size_tok
        self.enable_prefix_caching = enable_prefix_caching
        self.free_blocks = num_blocks
        self.evictable_blocks = 0  # Σ over prefix entries of (blocks − pinned)
        self._prefix_blocks: dict[int, int] = {}  # prefix id → full blocks cached
        self._prefix_users: dict[int, dict[int, int]] = {}  # prefix id → {shared blocks: running requests}
        self._prefix_pinned: dict[int, int] = {}  # prefix id → max shared blocks of its users (0: none)
        self._lru: OrderedDict[int, None] = OrderedDict()  # prefixes with an evictable tail, least recent first
        # accounting
        self.hit_blocks = 0  # prefix blocks reused by admitted requests
        self.evicted_blocks = 0
        # tiered KV offload (simulator/offload.py): evicted prefix blocks go down a tier; None: they vanish
        self.offload = None
        self.last_load_s = 0.0  # seconds of the lower-tier load the last `allocate` did

    # -- counts ---------------------------------------------------------------------------
    @property
    def available_blocks(self) -> int:
        """Blocks an allocation may take: free ones plus evictable cached ones."""
        return self.free_blocks + self.evictable_blocks

    @property
    def used_blocks(self) -> int:
        """Blocks held by running requests (private blocks and the pinned part of prefixes)."""
        return self.num_blocks - self.free_blocks - self.evictable_blocks

    def pinned_prefix_blocks(self) -> int:
        """Prefix blocks running requests reference (each counted once)."""
        return sum(self._prefix_pinned.values())

    def check(self) -> None:
        """Assert the block-conservation invariants (cheap enough for tests)."""
        assert 0 <= self.free_blocks <= self.num_blocks, self.free_blocks
        assert 0 <= self.evictable_blocks <= self.num_blocks, self.evictable_blocks
        assert 0 <= self.used_blocks <= self.num_blocks, self.used_blocks
        assert self.evictable_blocks == sum(self._prefix_blocks[p] - self._prefix_pinned[p] for p in self._prefix_blocks)
        for p, blocks in self._prefix_blocks.items():
            users = self._prefix_users[p]
            assert all(c > 0 for c in users.values())
            assert self._prefix_pinned[p] == max(users, default=0) <= blocks, p
            assert (p in self._lru) == (blocks > self._prefix_pinned[p]), p
            assert blocks > 0, p

    # -- prefix cache ---------------------------------------------------------------------
    def prefix_cap_blocks(self, prefix_tok: int, num_tokens: int) -> int:
        """Most prefix blocks a request of `num_tokens` tokens may reuse (full blocks, last token computed)."""
        if not self.enable_prefix_caching or prefix_tok < self.block_size_tok:
            return 0
        return min(prefix_tok // self.block_size_tok, (num_tokens - 1) // self.block_size_tok)

    def cached_blocks(self, prefix_id: int) -> int:
        """Leading blocks of `prefix_id` cached in HBM."""
        return self._prefix_blocks.get(prefix_id, 0)

    def lookup_prefix(self, prefix_id: int, prefix_tok: int, num_tokens: int) -> int:
        """Blocks of `prefix_id` already cached that a request of `num_tokens` tokens may reuse.

        No side effect (vLLM: `get_computed_blocks`). Capped at full blocks of the prefix and
        below the whole request, so at least one token is computed (vLLM recomputes the last).
        """
        if not self.enable_prefix_caching or prefix_id < 0 or prefix_tok < self.block_size_tok:
            return 0
        cached = self._prefix_blocks.get(prefix_id, 0)
        return min(cached, prefix_tok // self.block_size_tok, (num_tokens - 1) // self.block_size_tok)

    def cache_prefix(self, prefix_id: int, prefix_tok: int, shared_blocks: int) -> int:
        """A request has computed its prefix: publish its full prefix blocks for others to reuse.

        `shared_blocks` is how many prefix blocks the request already references (its hit).
        Returns the blocks it references afterwards. Its private prefix blocks move into the
        cache entry when the entry is new, or when the request references all of it (it then
        grows to the full prefix); otherwise the request keeps them private (two requests computed
        the same prefix concurrently — vLLM would dedupe by hash at block level; the difference is
        a few blocks for one request's life).
        """
        if not self.enable_prefix_caching or prefix_id < 0:
            return shared_blocks
        full = prefix_tok // self.block_size_tok
        if full <= shared_blocks:
            return shared_blocks
        blocks = self._prefix_blocks.get(prefix_id)
        if blocks is None:  # new entry, referenced by this request
            if self.offload is not None:
                self.offload.drop_front(prefix_id, full)  # recomputed: lower-tier copies are duplicates
            self._prefix_blocks[prefix_id] = full
            self._prefix_users[prefix_id] = {full: 1}
            self._prefix_pinned[prefix_id] = full
            return full
        if shared_blocks > 0 and blocks == shared_blocks:
            # it references all of the entry (so all of it is pinned): its private blocks up to
            # the full prefix join the entry, still in use; nothing becomes evictable
            users = self._prefix_users[prefix_id]
            users[shared_blocks] -= 1
            if not users[shared_blocks]:
                del users[shared_blocks]
            users[full] = users.get(full, 0) + 1
            if self.offload is not None:
                self.offload.drop_front(prefix_id, full - shared_blocks)
            self._prefix_blocks[prefix_id] = self._prefix_pinned[prefix_id] = full
            return full
        return shared_blocks

    def _add_user(self, pid: int, shared: int) -> None:
        users = self._prefix_users[pid]
        users[shared] = users.get(shared, 0) + 1
        old = self._prefix_pinned[pid]
        if shared > old:
            self._prefix_pinned[pid] = shared
            self.evictable_blocks -= shared - old
            if shared == self._prefix_blocks[pid]:
                self._lru.pop(pid, None)
        if pid in self._lru:
            self._lru.move_to_end(pid)  # a hit makes it recently used

    def _drop_user(self, pid: int, shared: int) -> None:
        users = self._prefix_users[pid]
        left = users[shared] - 1
        if left:
            users[shared] = left
        else:
            del users[shared]
        old = self._prefix_pinned[pid]
        new = max(users, default=0)
        if new < old:
            self._prefix_pinned[pid] = new
            self.evictable_blocks += old - new
            self._lru[pid] = None
            self._lru.move_to_end(pid)

    def _evict(self, num_blocks: int) -> None:
        """Turn `num_blocks` evictable blocks into free ones: tails of the least recently used prefixes first."""
        while num_blocks > 0:
            pid = next(iter(self._lru))
            have, pinned = self._prefix_blocks[pid], self._prefix_pinned[pid]
            take = min(have - pinned, num_blocks)
            num_blocks -= take
            self.evictable_blocks -= take
            self.free_blocks += take
            self.evicted_blocks += take
            if self.offload is not None:
                self.offload.on_evict(pid, take)
            if take == have - pinned:
                del self._lru[pid]
                if pinned == 0:
                    del self._prefix_blocks[pid], self._prefix_users[pid], self._prefix_pinned[pid]
                    continue
            self._prefix_blocks[pid] = have - take

    # -- the admission primitive -----------------------------------------------------------
    def allocate(self, num_computed_tok: int, num_new_tok: int, *, prefix_id: int = -1, hit_blocks: int = 0, load_blocks: int = 0) -> int | None:
        """Reserve KV slots so a request holding `num_computed_tok` tokens can compute `num_new_tok` more.

        Returns the number of blocks newly taken from the pool, or None when there are not
        enough (nothing is changed then; the caller preempts someone or waits). On a request's
        admission pass its prefix hit (`prefix_id`, `hit_blocks` from `lookup_prefix`): the hit
        blocks are referenced, not taken, and `num_computed_tok` must equal the hit tokens.
        With tiered offload, `load_blocks` more prefix blocks (right after all of the prefix's HBM
        blocks, which the hit must then cover) come up from the lower tiers into fresh blocks
        that join the prefix entry (`last_load_s` is their load time); `num_computed_tok` then
        counts them too.
        """
        bs = self.block_size_tok
        need = -(-(num_computed_tok + num_new_tok) // bs) - -(-num_computed_tok // bs)
        if load_blocks:
            return self._allocate_with_load(need, prefix_id, hit_blocks, load_blocks)
        if hit_blocks:
            # hit blocks still evictable become pinned: they cannot pay for `need`
            newly_pinned = max(0, hit_blocks - self._prefix_pinned[prefix_id])
            if need > self.free_blocks + self.evictable_blocks - newly_pinned:
                return None
            self._add_user(prefix_id, hit_blocks)
            self.hit_blocks += hit_blocks
        elif need > self.free_blocks + self.evictable_blocks:
            return None
        if need > self.free_blocks:
            self._evict(need - self.free_blocks)
        self.free_blocks -= need
        return need

    def _allocate_with_load(self, need: int, pid: int, hit: int, load: int) -> int | None:
        newly_pinned = max(0, hit - self._prefix_pinned[pid]) if hit else 0
        if need + load > self.free_blocks + self.evictable_blocks - newly_pinned:
            return None
        assert hit == self._prefix_blocks.get(pid, 0), "a load extends a hit that covers all HBM blocks of the prefix"
        self.last_load_s = self.offload.record_load(pid, hit, load)  # before evicting: the chain must not shift
        if hit:
            self._add_user(pid, hit)  # pins all of the entry, so the eviction below cannot touch it
            self.hit_blocks += hit
        total = need + load
        if total > self.free_blocks:
            self._evict(total - self.free_blocks)
        self.free_blocks -= total
        if hit:
            users = self._prefix_users[pid]
            users[hit] -= 1
            if not users[hit]:
                del users[hit]
            users[hit + load] = users.get(hit + load, 0) + 1
        else:
            self._prefix_users[pid] = {load: 1}
        self._prefix_blocks[pid] = self._prefix_pinned[pid] = hit + load
        return total

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
            self._drop_user(prefix_id, shared_blocks)
