"""The cluster simulator: invariants with every switch on, regression to the core, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.errors import LifecostError
from simulator.cluster import MAX_CLUSTER_GPUS, pool_sizes, simulate_cluster
from simulator.engine import simulate
from simulator.scenario import Scenario, parse_scenario
from simulator.workload import Requests
from tests.test_sim_invariants import check_invariants, setups


@st.composite
def cluster_setups(draw):
    scenario, reqs, kv_blocks = draw(setups())
    # some requests reason: thinking tokens are part of output_tok (already drawn lengths)
    on = np.array(draw(st.lists(st.booleans(), min_size=len(reqs), max_size=len(reqs))))
    thinking = np.where(on, reqs.output_tok // 2, 0)
    reqs = Requests(**{k: getattr(reqs, k) for k in ("arrival_s", "prompt_tok", "output_tok", "class_id", "priority", "prefix_id", "prefix_tok")},
                    class_names=reqs.class_names, thinking_tok=thinking, reasoning_on=on)
    cluster = {
        "replicas": draw(st.integers(1, 3)),
        "router": draw(st.sampled_from(["round_robin", "random", "least_outstanding_tokens", "prefix_affinity"])),
        "autoscale": {
            "enabled": draw(st.booleans()),
            "min_replicas": 1,
            "max_replicas": draw(st.integers(1, 3)),
            "interval_s": draw(st.sampled_from([0.01, 0.05, 0.3])),
            "cold_start_s": draw(st.sampled_from([0.0, 0.02, 0.2])),
            "target_outstanding_tok": draw(st.sampled_from([50, 300, 5000])),
        },
        "disaggregated": {
            "enabled": draw(st.booleans()),
            "prefill_replicas": draw(st.integers(1, 2)),
            "decode_replicas": draw(st.integers(1, 2)),
            "link_gb_s": draw(st.sampled_from([None, 0.01, 1.0])),  # 10 MB/s: transfers queue on the link
        },
    }
    tp = draw(st.sampled_from([1, 2]))  # Llama-3.2-1B: 32 heads, 8 KV heads
    # the replica-level switches too: tiered KV offload and speculative decoding
    offload = {"enabled": scenario.engine.enable_prefix_caching and draw(st.booleans()), "tiers": [{"name": "host", "capacity_gib": 0.01}]}
    speculative = {"method": draw(st.sampled_from(["none", "ngram"])), "num_draft_tok": 3, "acceptance_rate": 0.6}
    return scenario.with_changes(cluster=cluster, offload=offload, speculative=speculative, **{"gpu.tensor_parallel": tp}), reqs, kv_blocks


def check_cluster_invariants(scenario, reqs, kv_blocks, res) -> None:
    check_invariants(scenario, reqs, kv_blocks, res)
    r, info = res.requests, res.meta["cluster"]
    n = len(reqs)
    served = r["replica"].to_numpy()
    d = scenario.cluster.disaggregated
    if d.enabled:
        prefill_slots, _ = pool_sizes(scenario.cluster.autoscale, d.prefill_replicas)
        assert (served >= prefill_slots).all()  # every request finished on a decode replica
        assert (r["prefill_replica"].to_numpy() >= 0).all()
        assert (r["kv_transfer_s"].to_numpy() >= 0).all()
        # TTFT covers the prefill, the transfer and a decode step
        assert (r["ttft_s"].to_numpy() + r["arrival_s"].to_numpy() >= r["prefill_end_s"].to_numpy() + r["kv_transfer_s"].to_numpy() - 1e-9).all()
        pools = [info["prefill"], info["decode"]]
        assert sum(info["decode"]["requests_per_replica"]) == n
        assert sum(info["prefill"]["requests_per_replica"]) == n
    else:
        pools = [info]
        assert (served >= 0).all() and (served < res.meta["num_replicas"]).all()
        counts = np.bincount(served, minlength=res.meta["num_replicas"])
        assert sorted(c for c in counts if c) == sorted(c for c in info["requests_per_replica"] if c)
    # exactly once: the per-replica counts add up to the requests (a second finish raises in the pool)
    assert r["finish_s"].notna().sum() == n
    # GPU time: provisioned is never below the busy time of the steps, and utilisation is a fraction
    busy = float(res.steps["duration_s"].sum())
    tp = scenario.gpu.tensor_parallel
    assert info["gpu_seconds_provisioned"] >= busy * tp - 1e-6
    for pool in pools:
        assert all(0.0 <= u <= 1.0 + 1e-9 for u in pool["replica_utilisation"])
    s = res.summary()
    assert s["gpu_seconds"] == info["gpu_seconds_provisioned"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_setups())
def test_every_switch_on_conserves_requests_kv_and_causality(setup):
    scenario, reqs, kv_blocks = setup
    res = simulate_cluster(scenario, reqs, kv_blocks=kv_blocks)
    check_cluster_invariants(scenario, reqs, kv_blocks, res)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_setups())
def test_same_seed_gives_the_same_cluster_result(setup):
    scenario, reqs, kv_blocks = setup
    a = simulate_cluster(scenario, reqs, kv_blocks=kv_blocks)
    b = simulate_cluster(scenario, reqs, kv_blocks=kv_blocks)
    assert a.same_as(b)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setups())
def test_one_replica_through_the_cluster_router_matches_the_core_simulator(setup):
    scenario, reqs, kv_blocks = setup
    core = simulate(scenario, reqs, kv_blocks=kv_blocks)
    routed = simulate_cluster(scenario, reqs, kv_blocks=kv_blocks)
    assert routed.steps.equals(core.steps)
    assert routed.requests.drop(columns=["replica"]).equals(core.requests)


def test_a_single_replica_scenario_runs_the_core_path_unchanged():
    s = Scenario.model_validate({"model": {"name": "Llama-3.2-1B"}, "engine": {"profile": "roofline"}})
    res = simulate(s, num_requests=200, seed=3)
    assert "cluster" not in res.meta and "replica" not in res.requests
    assert res.same_as(simulate(s, num_requests=200, seed=3))


def test_fast_forward_matches_step_by_step_in_a_disaggregated_autoscaled_cluster():
    s = Scenario.model_validate({
        "model": {"name": "Llama-3.2-1B"}, "engine": {"profile": "roofline", "max_num_seqs": 8},
        "workload": {"arrival": {"rate_qps": 30}},
        "cluster": {"router": "least_outstanding_tokens", "autoscale": {"enabled": True, "max_replicas": 3, "interval_s": 0.5, "cold_start_s": 1.0, "target_outstanding_tok": 3000},
                    "disaggregated": {"enabled": True, "prefill_replicas": 1, "decode_replicas": 2}},
    })
    fast = simulate(s, num_requests=150, seed=2)
    slow = simulate(s, num_requests=150, seed=2, fast_forward=False)
    assert fast.steps["num_steps"].sum() == slow.steps["num_steps"].sum()
    assert np.allclose(fast.requests["finish_s"], slow.requests["finish_s"], rtol=1e-9)
    assert (fast.requests["replica"] == slow.requests["replica"]).all()


def test_more_replicas_cut_queueing_and_count_their_gpus():
    base = {"model": {"name": "Llama-3.1-8B"}, "gpu": {"tensor_parallel": 2}, "engine": {"profile": "roofline", "max_num_seqs": 16},
            "workload": {"arrival": {"rate_qps": 80}}}
    one = simulate(Scenario.model_validate(base), num_requests=400, seed=1).summary()
    four = simulate(Scenario.model_validate(base | {"cluster": {"replicas": 4, "router": "least_outstanding_tokens"}}), num_requests=400, seed=1).summary()
    assert four["ttft_s"]["p50"] < 0.5 * one["ttft_s"]["p50"]
    assert four["throughput_req_s"] > 1.5 * one["throughput_req_s"]
    # 4 replicas × TP 2 GPUs, provisioned from the first arrival to the last completion
    assert four["gpu_seconds"] == pytest.approx(4 * 2 * four["makespan_s"], rel=1e-9)
    assert four["cluster"]["replicas_provisioned"] == 4


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model": {"name": "Llama-3.1-8B"}, "gpu": {"tensor_parallel": 3}}, "gpu.tensor_parallel"),  # 32 heads
        ({"model": {"name": "Qwen2.5-7B"}, "gpu": {"tensor_parallel": 7}}, "gpu.tensor_parallel"),  # 28 heads, 4 KV heads
        ({"cluster": {"autoscale": {"enabled": True, "min_replicas": 5, "max_replicas": 2}}}, "cluster.autoscale.min_replicas"),
        ({"cluster": {"replicas": 2000}, "gpu": {"tensor_parallel": 4}}, "cluster.replicas"),
        ({"cluster": {"autoscale": {"enabled": True, "max_replicas": 5000}}}, "cluster.autoscale.max_replicas"),
    ],
)
def test_nonsense_clusters_are_refused_naming_the_field(changes, field):
    s = Scenario.model_validate({"engine": {"profile": "roofline"}} | changes)
    with pytest.raises(LifecostError) as err:
        simulate(s, num_requests=10)
    assert field in str(err.value)


def test_tp_that_does_not_divide_the_heads_is_refused_even_for_one_replica():
    s = Scenario.model_validate({"model": {"name": "Llama-3.1-8B"}, "gpu": {"tensor_parallel": 6}, "engine": {"profile": "roofline"}})
    with pytest.raises(LifecostError, match="tensor_parallel=6 does not divide"):
        simulate(s, num_requests=10)


def test_a_pool_with_no_replicas_is_refused_with_its_line():
    text = "cluster:\n  disaggregated:\n    enabled: true\n    prefill_replicas: 0\n"
    with pytest.raises(LifecostError) as err:
        parse_scenario(text, source="s.yaml")
    assert "cluster.disaggregated.prefill_replicas" in str(err.value) and "s.yaml:4" in str(err.value)


def test_the_gpu_bound_is_a_real_bound():
    ok = Scenario.model_validate({"cluster": {"replicas": MAX_CLUSTER_GPUS // 8}, "gpu": {"tensor_parallel": 8}})
    from models.catalog import load_model
    from simulator.cluster import check_cluster, cluster_gpus

    assert cluster_gpus(ok) == MAX_CLUSTER_GPUS
    check_cluster(ok, load_model(ok.model.name))


def test_the_simulate_command_shows_the_cluster_and_refuses_bad_tp_with_exit_2(tmp_path):
    """Exit code 2 and a one-line message come from the real `lifecost` entry point."""
    import typer
    from typer.testing import CliRunner

    from planner_ui import cli_sim

    app = typer.Typer()
    cli_sim.register(app)

    @app.callback()
    def _root() -> None:
        pass

    good = tmp_path / "c.yaml"
    good.write_text("model: {name: Llama-3.2-1B}\nengine: {profile: roofline}\nworkload: {num_requests: 100}\n"
                    "cluster: {replicas: 1, disaggregated: {enabled: true, prefill_replicas: 1, decode_replicas: 2}}\n")
    out = CliRunner().invoke(app, ["simulate", str(good)])
    assert out.exit_code == 0, out.output
    assert "decode: provisioned" in out.output and "KV transfer ms" in out.output and "GPU-hours provisioned" in out.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpu: {tensor_parallel: 5}\nworkload: {num_requests: 10}\n")
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([str(Path(sys.executable).parent / "lifecost"), "simulate", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "gpu.tensor_parallel" in proc.stderr and "Traceback" not in proc.stderr


def test_capacity_can_verify_replicas_with_the_routed_cluster():
    from simulator.capacity import fleet_check, replicas_needed

    s = Scenario.model_validate({"model": {"name": "Llama-3.1-8B"}, "engine": {"profile": "roofline", "max_num_seqs": 32},
                                 "slo": {"ttft_p99_s": 0.5, "tpot_p99_s": 0.05}, "cluster": {"replicas": 7}})
    split = replicas_needed(s, 30.0, num_requests=300)
    routed = replicas_needed(s, 30.0, num_requests=300, router="least_outstanding_tokens")
    assert routed.verified and routed.replicas >= 2
    assert routed.replicas <= split.replicas  # a load-aware router never needs more than random splitting here
    below = fleet_check(s, 30.0, routed.replicas - 1, num_requests=300, router="least_outstanding_tokens")
    assert not below.meets


def test_capacity_search_prunes_a_tp_that_cannot_shard_the_kv_heads():
    from simulator.capacity import memory_verdict

    fits, why = memory_verdict(Scenario.model_validate({"model": {"name": "Qwen2.5-7B"}, "gpu": {"tensor_parallel": 7}}))
    assert not fits and "KV heads" in why


@pytest.mark.parametrize("name", ["llama8b_cluster_reasoning_h100.yaml", "llama8b_disagg_h100.yaml"])
def test_the_cluster_examples_simulate(name):
    from pathlib import Path

    from simulator.scenario import load_scenario

    s = load_scenario(Path(__file__).resolve().parents[1] / "examples" / name)
    summary = simulate(s, num_requests=300).summary()
    assert summary["finished"] == 300 and summary["gpu_seconds"] > 0
    assert ("prefill" in summary["cluster"]) == s.cluster.disaggregated.enabled
