"""The vLLM-v1-style scheduler, step by step, on tiny real instances (no clock, no predictor).

Each test builds a real `Scheduler` over a real `KVCacheManager` with a handful of blocks and
reads the plans it makes like a log: who ran, with how many tokens.
"""

from __future__ import annotations

import numpy as np

from simulator.kv_cache import KVCacheManager
from simulator.scenario import EngineSpec
from simulator.scheduler import DONE, RequestState, Scheduler
from simulator.workload import Requests


def build(prompts, outputs, *, blocks=64, block=4, prefix_id=None, prefix_tok=None, priority=None, **engine):
    n = len(prompts)
    reqs = Requests(
        arrival_s=np.arange(n, dtype=float),
        prompt_tok=np.asarray(prompts),
        output_tok=np.asarray(outputs),
        class_id=np.zeros(n, np.int16),
        priority=np.zeros(n) if priority is None else np.asarray(priority),
        prefix_id=np.full(n, -1) if prefix_id is None else np.asarray(prefix_id),
        prefix_tok=np.zeros(n) if prefix_tok is None else np.asarray(prefix_tok),
        class_names=("t",),
    )
    spec = EngineSpec(**({"block_size_tok": block, "max_model_len_tok": 64, "max_num_batched_tokens": 64, "max_num_seqs": 8} | engine))
    kv = KVCacheManager(blocks, block, spec.enable_prefix_caching)
    state = RequestState(n)
    return Scheduler(reqs, reqs.output_tok, spec, kv, state), kv, state


def step(sched):
    """One step: (decode count, {rid: new tokens} of the others, first tokens, finished, preempted)."""
    plan = sched.schedule()
    first, finished = sched.update(plan)
    return plan.num_decode, {rid: n for rid, _, n in plan.chunks}, first, finished, plan.preempted


def test_a_long_prompt_is_prefilled_in_budget_sized_chunks_and_samples_when_it_catches_up():
    sched, _, _ = build([50], [3], max_num_batched_tokens=20, max_num_seqs=4)
    sched.add_request(0)
    log = [step(sched) for _ in range(5)]
    assert [chunks for _, chunks, *_ in log[:3]] == [{0: 20}, {0: 20}, {0: 10}]
    assert [first for _, _, first, *_ in log] == [[], [], [0], [], []]
    assert [d for d, *_ in log] == [0, 0, 0, 1, 1]  # then one token per step
    assert log[4][3] == [0]  # third token sampled at step 5: finished


def test_decodes_go_first_and_a_new_prompt_takes_what_budget_is_left():
    sched, _, _ = build([8, 8, 40], [10, 10, 2], max_num_batched_tokens=24, max_num_seqs=4)
    sched.add_request(0)
    sched.add_request(1)
    assert step(sched)[1] == {0: 8, 1: 8}
    sched.add_request(2)
    d, chunks, *_ = step(sched)
    assert d == 2 and chunks == {2: 22}  # 24-token budget − 2 decodes
    d, chunks, *_ = step(sched)
    assert d == 2 and chunks == {2: 18}


def test_without_chunked_prefill_a_prompt_waits_for_a_step_with_room_for_all_of_it():
    sched, _, _ = build([30, 30, 30], [5, 5, 5], max_num_batched_tokens=64, enable_chunked_prefill=False)
    for rid in range(3):
        sched.add_request(rid)
    assert step(sched)[1] == {0: 30, 1: 30}  # the third does not fit whole: it waits, head of line
    d, chunks, *_ = step(sched)
    assert d == 2 and chunks == {2: 30}


def test_max_num_seqs_caps_the_batch():
    sched, _, _ = build([4] * 5, [20] * 5, max_num_seqs=3)
    for rid in range(5):
        sched.add_request(rid)
    assert sorted(step(sched)[1]) == [0, 1, 2]
    assert step(sched)[0] == 3 and sched.num_waiting == 2


def test_when_blocks_run_out_the_last_admitted_is_preempted_and_recomputed_from_scratch():
    # 6 blocks of 4 tokens; two 8-token prompts (2 blocks each) growing by a token per step
    sched, kv, state = build([8, 8], [12, 12], blocks=6, block=4)
    sched.add_request(0)
    sched.add_request(1)
    step(sched)  # both prefill: 4 blocks, first tokens sampled
    # decode 1 writes token 9 of each into a third block (6 used); decode 5 needs a fourth each
    log = [step(sched) for _ in range(5)]
    assert [entry[4] for entry in log] == [[], [], [], [], [1]]
    assert state.preemptions.tolist() == [0, 1]
    assert state.computed[1] == 0 and state.gen[1] == 5  # forgot its KV, kept its 5 tokens
    kv.check()
    while state.phase[0] != DONE:
        assert 1 not in step(sched)[1]  # no room to come back while request 0 grows
    d, chunks, first, *_ = step(sched)
    assert chunks == {1: 8 + 5}  # recomputes prompt + generated tokens, then samples token 6
    assert first == [] and sched.generated_tok(1) == 6  # its first token was sent long ago


def test_priority_policy_preempts_the_least_urgent_request():
    sched, _, state = build([8, 8], [12, 12], blocks=6, block=4, priority=[1, 0], scheduling_policy="priority")
    sched.add_request(0)  # low priority, admitted first
    sched.add_request(1)  # urgent
    for _ in range(8):
        step(sched)
    assert state.preemptions.tolist() == [1, 0]


def test_a_second_request_with_a_cached_prefix_skips_its_prefill():
    sched, kv, state = build([24, 26], [2, 2], prefix_id=[5, 5], prefix_tok=[16, 16], block=4)
    sched.add_request(0)
    assert step(sched)[1] == {0: 24}  # nothing cached yet; its prefix blocks are published
    sched.add_request(1)
    d, chunks, *_ = step(sched)
    assert chunks == {1: 26 - 16}
    assert state.prefix_hit_tok.tolist() == [0, 16]
    kv.check()


def test_a_run_of_decode_steps_is_limited_by_the_next_completion_and_by_free_blocks():
    sched, kv, _ = build([4, 4], [30, 9], blocks=64, block=4)
    sched.add_request(0)
    sched.add_request(1)
    step(sched)  # prefill both; each has 1 of its tokens
    assert sched.decode_run_limit() == 8  # request 1 samples its 9th token 8 steps from now
    assert sched.advance_decode_run(8) == [1]
    tight, kv2, _ = build([4], [40], blocks=3, block=4)
    tight.add_request(0)
    step(tight)  # 4 tokens in 1 block; 2 blocks free → 8 more tokens fit
    assert tight.decode_run_limit() == 8
