"""Tiered KV offload: conservation across tiers, the load-vs-recompute break-even, its effect on
a long multi-turn workload, and refusals of nonsense tiers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.errors import LifecostError
from simulator.engine import Recorder, SortedFeed, make_replica, prepare, simulate
from simulator.offload import KvOffload, TierConfig
from simulator.scenario import Scenario, parse_scenario
from simulator.scheduler import RequestState
from simulator.workload import Requests, multi_turn_sessions


def sessions(n_sessions: int = 40, **kw) -> Requests:
    """Multi-turn chats: each turn re-sends the session's growing history (prefix id = session)."""
    return multi_turn_sessions(n_sessions, **kw)


def _scenario(offload: bool, tiers=None, **engine) -> Scenario:
    d = {"engine": {"profile": "roofline", "max_model_len_tok": 32768, "max_num_seqs": 64} | engine, "offload": {"enabled": offload}}
    if tiers is not None:
        d["offload"]["tiers"] = tiers
    return Scenario.model_validate(d)


def test_offload_raises_the_prefix_hit_rate_and_lowers_ttft_on_a_multi_turn_workload():
    reqs = sessions()
    off = simulate(_scenario(False), reqs).summary()
    on = simulate(_scenario(True), reqs).summary()
    assert on["prefix_hit_frac"] > off["prefix_hit_frac"] + 0.1
    assert on["ttft_s"]["p50"] < off["ttft_s"]["p50"]
    o = on["offload"]
    assert o["host_hit_frac"] > 0 and o["loads"] > 0 and o["bytes_up"] > 0
    assert o["bytes_down"] >= o["bytes_up"]  # nothing comes up that did not go down
    assert math.isclose(on["prefix_hit_frac"], o["hbm_hit_frac"] + o["host_hit_frac"] + o["nvme_hit_frac"])


def test_a_tier_too_slow_to_beat_recompute_is_never_loaded_from():
    reqs = sessions()
    slow = [{"name": "host", "capacity_gib": 256.0, "read_gb_s": 0.001, "write_gb_s": 20.0}]
    on = simulate(_scenario(True, slow), reqs)
    o = on.summary()["offload"]
    assert o["loads"] == 0 and o["recompute_decisions"] > 0 and o["tiers"]["host"]["bytes_down"] > 0
    # the switch then changes nothing about the schedule
    off = simulate(_scenario(False), reqs)
    assert np.allclose(on.requests["ttft_s"], off.requests["ttft_s"])


def test_blocks_spill_down_the_tiers_lru_and_drop_from_the_last():
    bb = 1.0
    o = KvOffload([TierConfig("host", 10, 1.0, 1.0, 1.0, 1.0), TierConfig("nvme", 5, 3.0, 1.0, 1.0, 1.0)], bb, block_size_tok=16)
    o.on_evict(1, 6)
    o.on_evict(2, 6)  # host over by 2: prefix 1's tail (LRU) spills to nvme
    assert o.tiers[0].segments == {1: 4, 2: 6} and o.tiers[1].segments == {1: 2}
    o.on_evict(3, 8)  # host over by 8: the rest of 1 (4) and 4 of 2 go down; nvme over by 5: drops
    o.check()
    assert o.tiers[0].used_blocks == 10 and o.tiers[1].used_blocks == 5
    assert o.tiers[1].dropped_blocks == 5
    assert o.available_blocks(1) + o.available_blocks(2) + o.available_blocks(3) == 15
    # a load takes the chain's front: host first, then nvme, at each tier's rate
    n2 = o.available_blocks(2)
    host2 = o.tiers[0].segments.get(2, 0)
    assert o.load_time_s(2, n2) == host2 * 1.0 + (n2 - host2) * 3.0
    o.take(2, n2)
    assert o.available_blocks(2) == 0
    o.drop_front(3, 3)
    assert o.available_blocks(3) == 5
    o.check()


@st.composite
def offload_setups(draw):
    n = draw(st.integers(2, 40))
    gaps = draw(st.lists(st.floats(0.0, 2.0), min_size=n, max_size=n))
    pids = draw(st.lists(st.integers(-1, 5), min_size=n, max_size=n))
    ptok = draw(st.lists(st.integers(0, 1500), min_size=n, max_size=n))
    extra = draw(st.lists(st.integers(1, 400), min_size=n, max_size=n))
    out = draw(st.lists(st.integers(1, 200), min_size=n, max_size=n))
    reqs = Requests(arrival_s=np.cumsum(gaps), prompt_tok=np.array([p + e for p, e in zip(ptok, extra)]), output_tok=np.array(out),
                    class_id=np.zeros(n, np.int16), priority=np.zeros(n, np.int64), prefix_id=np.array(pids),
                    prefix_tok=np.array([p if pid >= 0 else 0 for p, pid in zip(ptok, pids)]), class_names=("chat",))
    host_gib = draw(st.sampled_from([0.005, 0.05, 0.5]))  # ten to a thousand blocks: spills and drops
    tiers = [{"name": "host", "capacity_gib": host_gib}, {"name": "nvme", "capacity_gib": host_gib * 2, "read_gb_s": draw(st.sampled_from([0.01, 7.0]))}]
    bs = draw(st.sampled_from([4, 16]))
    engine = {"profile": "roofline", "max_model_len_tok": 2048, "block_size_tok": bs, "max_num_seqs": draw(st.integers(1, 8)),
              "max_num_batched_tokens": 2048, "preemption_mode": draw(st.sampled_from(["recompute", "swap"]))}
    spec = {"method": draw(st.sampled_from(["none", "ngram", "eagle"])), "num_draft_tok": draw(st.integers(1, 6)), "acceptance_rate": draw(st.floats(0.0, 0.95))}
    s = Scenario.model_validate({"model": {"name": "Llama-3.2-1B"}, "engine": engine, "offload": {"enabled": True, "tiers": tiers}, "speculative": spec})
    return s, reqs, 2048 // bs + draw(st.integers(0, 2048 // bs))  # HBM for one to two full-length sequences


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offload_setups())
def test_kv_is_conserved_across_tiers_at_every_event_with_every_switch_on(setup_args):
    scenario, reqs, kv_blocks = setup_args
    setup = prepare(scenario, reqs, kv_blocks=kv_blocks)
    env, n = simpy.Environment(), len(reqs)
    state, rec = RequestState(n), Recorder(n)
    replica = make_replica(env, setup, state, rec)
    kv, off = replica.scheduler.kv, replica.scheduler.offload
    replica.start(SortedFeed(reqs.arrival_s), n)
    while env.peek() != math.inf:
        env.step()
        kv.check()
        off.check()
    assert rec.finished == n
    assert kv.used_blocks == 0  # every request freed its HBM blocks
    assert np.array_equal(state.gen, setup.output_tok)  # no token lost or duplicated
    for t in off.tiers:  # what is left below HBM is cached data, within capacity
        assert 0 <= t.used_blocks <= t.cfg.capacity_blocks


def test_nonsense_tiers_are_refused_naming_the_field():
    with pytest.raises(LifecostError) as e:
        simulate(_scenario(True, [{"name": "host", "capacity_gib": 1e-6}]), sessions(n_sessions=2, turns=1))
    assert "offload.tiers[0].capacity_gib" in str(e.value)
    with pytest.raises(LifecostError) as e:
        parse_scenario("offload:\n  enabled: true\n  tiers:\n    - name: nvme\n      read_gb_s: 0\n")
    assert "read_gb_s" in str(e.value)
    with pytest.raises(LifecostError) as e:
        simulate(_scenario(True, enable_prefix_caching=False), sessions(n_sessions=2, turns=1))
    assert "offload.enabled" in str(e.value)
    with pytest.raises(LifecostError) as e:
        simulate(_scenario(True, [{"name": "host"}, {"name": "host"}]), sessions(n_sessions=2, turns=1))
    assert "offload.tiers" in str(e.value)


def test_default_bandwidths_come_from_the_host_link_and_nvme_datasheets():
    from models.gpus import load_gpu

    setup = prepare(_scenario(True), sessions(n_sessions=1, turns=1))
    host, nvme = setup.offload_tiers[0]
    gpu = load_gpu("H100-SXM")
    assert host.read_gb_s == host.write_gb_s == gpu.host_link_gb_s
    assert (nvme.read_gb_s, nvme.write_gb_s) == (7.0, 5.0)


def test_simulate_cli_shows_the_offload_and_speculative_rows_and_refuses_a_bad_tier(tmp_path):
    import typer
    from typer.testing import CliRunner

    from planner_ui import cli_sim

    app = typer.Typer()
    cli_sim.register(app)

    @app.callback()
    def _root() -> None:
        pass

    good = tmp_path / "s.yaml"
    good.write_text("engine: {profile: roofline}\noffload: {enabled: true}\nspeculative: {method: ngram}\nworkload: {num_requests: 50}\n")
    r = CliRunner().invoke(app, ["simulate", str(good)])
    assert r.exit_code == 0, r.output
    assert "prefix hit by tier" in r.output and "speculative: method, k" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("offload:\n  enabled: true\n  tiers:\n    - {name: host, capacity_gib: 0.000001}\n")
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([str(Path(sys.executable).parent / "lifecost"), "simulate", str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "offload.tiers[0].capacity_gib" in done.stderr and "Traceback" not in done.stderr


def test_a_profiles_measured_host_link_overrides_the_datasheet_for_the_host_tier():
    from models.profile import load_profile

    s = _scenario(True).with_changes(**{"engine.profile": "H100-SXM/transformers-cb"})
    ceil = load_profile("H100-SXM/transformers-cb").ceilings
    host, nvme = prepare(s, sessions(n_sessions=1, turns=1)).offload_tiers[0]
    assert (host.read_gb_s, host.write_gb_s) == (ceil.h2d_gb_s, ceil.d2h_gb_s)
    assert nvme.read_gb_s == 7.0  # below the measured PCIe rate: the drive is the bottleneck


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offload_setups())
def test_fast_forward_runs_match_step_by_step_with_offload_and_speculation_on(setup_args):
    scenario, reqs, kv_blocks = setup_args
    fast = simulate(scenario, reqs, kv_blocks=kv_blocks)
    slow = simulate(scenario, reqs, kv_blocks=kv_blocks, fast_forward=False)
    for col in ("ttft_s", "finish_s"):
        np.testing.assert_allclose(fast.requests[col], slow.requests[col], rtol=1e-9, atol=1e-12)
    assert fast.meta["offload"]["loads"] == slow.meta["offload"]["loads"]
