"""Router policies: what each picks, consistent hashing with bounded loads, and prefix hits."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.engine import simulate
from simulator.router import LOAD_CAP, ROUTERS, RouterView
from simulator.scenario import Scenario


def view(active, load, prefix_ids, work=None, seed=0):
    n = len(prefix_ids)
    return RouterView(list(active), np.asarray(load, np.int64), np.asarray(work if work is not None else [100] * n, np.int64),
                      np.asarray(prefix_ids, np.int64), np.random.default_rng(seed))


def test_round_robin_takes_the_active_replicas_in_turn():
    v = view([0, 2, 3], [0, 0, 0, 0], [-1] * 7)
    assert [ROUTERS["round_robin"](v, i) for i in range(7)] == [0, 2, 3, 0, 2, 3, 0]


def test_least_outstanding_tokens_picks_the_emptiest_active_replica_lowest_id_on_ties():
    v = view([0, 1, 2], [500, 20, 20, 0], [-1])
    assert ROUTERS["least_outstanding_tokens"](v, 0) == 1  # replica 3 is not active


def test_random_is_seeded_and_uses_only_active_replicas():
    a = [ROUTERS["random"](v, 0) for v in [view([1, 3], [0] * 4, [-1], seed=5)] for _ in range(50)]
    b = [ROUTERS["random"](v, 0) for v in [view([1, 3], [0] * 4, [-1], seed=5)] for _ in range(50)]
    assert a == b and set(a) == {1, 3}


def test_prefix_affinity_sends_a_prefix_to_one_replica_while_loads_are_even():
    v = view(range(4), [0] * 4, list(range(40)) * 3)
    picks = [ROUTERS["prefix_affinity"](v, i) for i in range(120)]
    for pid in range(40):
        assert len({picks[i] for i in range(120) if i % 40 == pid}) == 1
    assert len(set(picks)) == 4  # the ring spreads 40 prefixes over every replica


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=2, max_size=8), st.integers(0, 50), st.integers(1, 5000))
def test_prefix_affinity_never_exceeds_the_load_cap(load, pid, work):
    v = view(range(len(load)), load, [pid], work=[work])
    r = ROUTERS["prefix_affinity"](v, 0)
    assert load[r] <= LOAD_CAP * (sum(load) + work) / len(load)


def test_adding_a_replica_moves_only_the_prefixes_it_takes_over():
    """Consistent hashing: going from 4 to 5 replicas moves about 1/5 of the prefixes, all to the new one."""
    pids = list(range(2000))
    before = [ROUTERS["prefix_affinity"](view(range(4), [0] * 5, pids), i) for i in range(2000)]
    after = [ROUTERS["prefix_affinity"](view(range(5), [0] * 5, pids), i) for i in range(2000)]
    moved = [i for i in range(2000) if before[i] != after[i]]
    assert all(after[i] == 4 for i in moved)
    assert 0.1 < len(moved) / 2000 < 0.3


def prefix_heavy(router: str) -> dict:
    s = Scenario.model_validate({
        "model": {"name": "Llama-3.2-1B"}, "engine": {"profile": "roofline", "gpu_memory_utilization": 0.12},
        "workload": {"arrival": {"rate_qps": 60},
                     "classes": [{"prompt_tok": {"kind": "fixed", "value": 2500}, "output_tok": {"kind": "fixed", "value": 50},
                                  "prefix": {"num_prefixes": 64, "prefix_tok": 2000, "share_prob": 1.0, "zipf_s": 0.0}}]},
        "cluster": {"replicas": 4, "router": router},
    })
    return simulate(s, num_requests=600, seed=4).summary()


def test_prefix_affinity_raises_the_prefix_hit_rate_over_round_robin():
    rr, pa = prefix_heavy("round_robin"), prefix_heavy("prefix_affinity")
    assert pa["prefix_hit_frac"] > rr["prefix_hit_frac"] + 0.05
    assert pa["ttft_s"]["p50"] <= rr["ttft_s"]["p50"]
