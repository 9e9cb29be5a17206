"""The paged KV block manager: admission, freeing, prefix reuse and LRU eviction, by counts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import LifecostError
from simulator.kv_cache import KVCacheManager, blocks_for


def test_blocks_for_rounds_up_to_whole_blocks():
    assert [blocks_for(n, 16) for n in (0, 1, 15, 16, 17, 32, 33)] == [0, 1, 1, 1, 2, 2, 3]


def test_a_request_takes_the_blocks_its_tokens_need_and_gives_them_back():
    kv = KVCacheManager(10, 16)
    assert kv.allocate(0, 33) == 3  # 33 tokens → 3 blocks
    assert kv.allocate(33, 1) == 0  # the 34th token fits the third block
    assert kv.allocate(48, 1) == 1  # the 49th token opens a fourth
    assert (kv.used_blocks, kv.free_blocks) == (4, 6)
    kv.free(4)
    assert (kv.used_blocks, kv.free_blocks) == (0, 10)
    kv.check()


def test_allocation_that_does_not_fit_returns_none_and_changes_nothing():
    kv = KVCacheManager(4, 16)
    assert kv.allocate(0, 48) == 3
    assert kv.allocate(0, 32) is None
    assert (kv.used_blocks, kv.free_blocks) == (3, 1)
    assert not kv.allocate_blocks(2)
    assert kv.allocate_blocks(1)
    kv.check()


def test_a_cached_prefix_is_reused_and_outlives_its_first_user():
    kv = KVCacheManager(20, 16)
    # request A: 100-token prompt whose first 64 tokens are prefix 7; nothing cached yet
    assert kv.lookup_prefix(7, 64, 100) == 0
    assert kv.allocate(0, 100) == 7
    assert kv.cache_prefix(7, 64, 0) == 4  # A computed the prefix: its 4 full blocks are now shared
    # request B with the same prefix reuses the 4 blocks and computes only the rest
    hit = kv.lookup_prefix(7, 64, 80)
    assert hit == 4
    assert kv.allocate(hit * 16, 80 - 64, prefix_id=7, hit_blocks=hit) == 1
    assert kv.used_blocks == 7 + 1
    kv.free(7 - 4, 7, 4)  # A finishes: its private blocks go, the prefix stays (B uses it)
    assert kv.used_blocks == 5 and kv.evictable_blocks == 0
    kv.free(1, 7, 4)  # B finishes: the prefix becomes evictable but stays cached
    assert kv.used_blocks == 0 and kv.evictable_blocks == 4
    assert kv.lookup_prefix(7, 64, 80) == 4
    kv.check()


def test_a_hit_never_covers_the_whole_prompt():
    kv = KVCacheManager(20, 16)
    kv.allocate(0, 64)
    kv.cache_prefix(3, 64, 0)
    # a 64-token prompt that is all prefix: the last block is recomputed so a token can be sampled
    assert kv.lookup_prefix(3, 64, 64) == 3
    assert kv.lookup_prefix(3, 64, 65) == 4


def test_prefix_caching_off_never_hits():
    kv = KVCacheManager(20, 16, enable_prefix_caching=False)
    kv.allocate(0, 64)
    assert kv.cache_prefix(3, 64, 0) == 0
    assert kv.lookup_prefix(3, 64, 100) == 0


def test_unreferenced_prefixes_are_evicted_least_recently_used_first():
    kv = KVCacheManager(10, 16)
    for pid in (1, 2):  # two prefixes of 3 blocks, each cached then released; 1 released first
        kv.allocate(0, 48)
        kv.cache_prefix(pid, 48, 0)
        kv.free(0, pid, 3)
    assert (kv.free_blocks, kv.evictable_blocks) == (4, 6)
    assert kv.allocate(0, 80) == 5  # needs one block more than is free: taken from prefix 1's tail
    assert kv.lookup_prefix(1, 48, 100) == 2 and kv.lookup_prefix(2, 48, 100) == 3
    assert kv.allocate(0, 48) == 3  # the remaining 2 of prefix 1, then 1 of prefix 2
    assert kv.lookup_prefix(1, 48, 100) == 0 and kv.lookup_prefix(2, 48, 100) == 2
    assert kv.evicted_blocks == 4
    kv.check()


def test_a_referenced_prefix_is_never_evicted():
    kv = KVCacheManager(6, 16)
    kv.allocate(0, 48)
    kv.cache_prefix(1, 48, 0)  # 3 blocks shared, still referenced by their request
    assert kv.allocate(0, 64) is None  # 3 free blocks only; the referenced prefix cannot be taken
    assert kv.allocate(0, 48) == 3
    kv.check()


def test_zero_block_size_is_refused_naming_the_field():
    with pytest.raises(LifecostError, match="engine.block_size_tok"):
        KVCacheManager(10, 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-1, 2), st.integers(1, 90)), max_size=60), st.sampled_from([1, 4, 16]))
def test_random_admissions_and_frees_conserve_blocks(ops, block):
    """Requests are admitted (with prefix hits), grow, publish prefixes and leave; counts always add up."""
    kv = KVCacheManager(40, block)
    live: list[list[int]] = []  # [computed tokens, prefix id, shared blocks, prefix tokens]
    for op, pid, n in ops:
        if op == 0:  # admit a request of n + 8 tokens with a prefix of n tokens
            total, ptok = n + 8, n
            hit = kv.lookup_prefix(pid, ptok, total)
            if kv.allocate(hit * block, total - hit * block, prefix_id=pid, hit_blocks=hit) is not None:
                live.append([total, pid, hit, ptok])
        elif op == 1 and live:  # the oldest grows by n tokens
            r = live[0]
            if kv.allocate(r[0], n) is not None:
                r[0] += n
        elif op == 2 and live:  # the newest publishes its prefix
            r = live[-1]
            r[2] = kv.cache_prefix(r[1], r[3], r[2])
        elif op == 3 and live:  # the oldest leaves
            computed, p, shared, _ = live.pop(0)
            kv.free(blocks_for(computed, block) - shared, p, shared)
        kv.check()
        private = sum(blocks_for(r[0], block) - r[2] for r in live)
        assert kv.used_blocks == private + _shared_in_use(kv)
    for computed, p, shared, _ in live:
        kv.free(blocks_for(computed, block) - shared, p, shared)
    kv.check()
    assert kv.used_blocks == 0


def _shared_in_use(kv: KVCacheManager) -> int:
    """Prefix blocks some live request references (counted once, however many reference them)."""
    return kv.pinned_prefix_blocks()


def test_a_shorter_hit_pins_only_the_blocks_it_uses_and_the_tail_stays_evictable():
    kv = KVCacheManager(10, 4)
    kv.allocate(0, 24)
    assert kv.cache_prefix(9, 24, 0) == 6  # a 6-block prefix, pinned by its author
    kv.free(0, 9, 6)
    assert kv.evictable_blocks == 6
    hit = kv.lookup_prefix(9, 24, 10)  # a 10-token request can reuse 2 blocks (9 tokens) of it
    assert hit == 2
    assert kv.allocate(8, 2, prefix_id=9, hit_blocks=hit) == 1
    assert (kv.used_blocks, kv.evictable_blocks, kv.free_blocks) == (3, 4, 3)
    assert kv.allocate(0, 28) == 7  # the unused tail of the prefix can still be evicted
    assert kv.lookup_prefix(9, 24, 100) == 2
    kv.check()
