"""Replicas fed by a router: pushed arrivals cut runs exactly where known arrivals do."""

from __future__ import annotations

import numpy as np
import simpy
from hypothesis import HealthCheck, given, settings
from pandas.testing import assert_frame_equal

from simulator.engine import QueueFeed, Recorder, collect_result, make_replica, prepare, simulate
from simulator.scheduler import RequestState
from tests.test_sim_invariants import check_invariants, setups


def routed(scenario, requests, kv_blocks: int, num_replicas: int):
    """Round-robin router: a SimPy process pushes each request to a replica at its arrival time."""
    setup = prepare(scenario, requests, kv_blocks=kv_blocks)
    n = len(setup.requests)
    env = simpy.Environment()
    state, rec = RequestState(n), Recorder(n)
    replicas = [make_replica(env, setup, state, rec, i) for i in range(num_replicas)]
    feeds = [QueueFeed(env) for _ in replicas]
    for rep, feed in zip(replicas, feeds):
        rep.start(feed, n)

    def router():
        arrival = setup.requests.arrival_s
        for rid in range(n):
            if arrival[rid] > env.now:
                yield env.timeout(arrival[rid] - env.now)
            feeds[rid % num_replicas].push(rid)
        for feed in feeds:
            feed.close()

    env.process(router())
    env.run()
    return collect_result(setup, state, rec, replicas)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setups())
def test_a_pushed_feed_gives_the_same_result_as_known_arrivals(setup):
    scenario, reqs, kv_blocks = setup
    known = simulate(scenario, reqs, kv_blocks=kv_blocks)
    pushed = routed(scenario, reqs, kv_blocks, 1)
    # Same decisions, same times — up to float rounding: SimPy's clock advances as now + delay, so
    # the router's wait and the replica's own wait for one arrival can land one ulp apart.
    assert_frame_equal(pushed.requests, known.requests, check_exact=False, rtol=1e-12, atol=1e-12)
    assert_frame_equal(pushed.steps, known.steps, check_exact=False, rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setups())
def test_two_routed_replicas_keep_every_invariant(setup):
    scenario, reqs, kv_blocks = setup
    res = routed(scenario, reqs, kv_blocks, 2)
    check_invariants(scenario, reqs, kv_blocks, res)
    assert set(res.steps["replica"]) <= {0, 1}


def test_two_replicas_halve_the_queueing_of_an_overloaded_one():
    from simulator.scenario import Scenario

    s = Scenario.model_validate({"model": {"name": "Llama-3.1-8B"}, "engine": {"max_num_seqs": 16, "profile": "roofline"}})
    reqs = prepare(s, num_requests=800, rate_qps=20, seed=1).requests
    blocks = prepare(s, reqs).kv_blocks
    one = routed(s, reqs, blocks, 1).summary()
    two = routed(s, reqs, blocks, 2).summary()
    assert two["throughput_req_s"] > 1.5 * one["throughput_req_s"]
    assert two["ttft_s"]["p50"] < 0.5 * one["ttft_s"]["p50"]
    assert np.isclose(two["gpu_seconds"] / two["makespan_s"], 2.0)
