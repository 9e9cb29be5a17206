"""SLA capacity search on the real simulator: what "meets" means, monotonicity in traffic and
in the SLO, the fleet-simulation check of the answer, the cheapest configuration, and the
answer when no configuration can meet the SLO.

Scenarios are tiny (Llama-3.2-1B, ~1,000 requests per simulated replica: a few hundredths of a
second per simulation) with a p99 TPOT bound that binds before saturation, so the replica count
is decided by the SLO and not by the throughput ceiling alone.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import LifecostError
from simulator.capacity import (
    candidates_summary,
    capacity_for_cost,
    check_slo,
    fleet_check,
    find_max_rate,
    headroom_curve,
    max_rate_meeting_slo,
    memory_verdict,
    parse_search,
    replicas_needed,
    search,
)
from simulator.scenario import Scenario, SloSpec

N_REQ = 1000


def tiny(**changes) -> Scenario:
    # engine.profile pinned to the roofline: a calibration Profile committed later must not move
    # the latencies these SLO bounds were chosen against.
    base = {"model.name": "Llama-3.2-1B", "workload.num_requests": N_REQ, "slo.ttft_p99_s": 0.25, "slo.tpot_p99_s": 0.002, "slo.attainment": 0.99, "engine.profile": "roofline"}
    return Scenario().with_changes(**{**base, **changes})


# --- what "meets" means -----------------------------------------------------------------------


def frame(ttft, tpot, e2e, arrival=None) -> pd.DataFrame:
    n = len(ttft)
    return pd.DataFrame({"arrival_s": arrival if arrival is not None else np.arange(n, dtype=float), "ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e})


def test_a_request_attains_only_when_every_set_bound_holds_and_warmup_is_not_measured():
    slo = SloSpec(ttft_p99_s=1.0, tpot_p99_s=0.05, e2e_p99_s=None, attainment=0.8)
    # 10 requests: the first (warm-up, 10 %) is terrible and ignored; of the other 9, one misses
    # TTFT, one misses TPOT, one never finished, one has a single output token (no TPOT).
    ttft = [9.0, 0.1, 2.0, 0.1, np.nan, 0.2, 0.3, 0.1, 0.1, 0.1]
    tpot = [9.0, 0.01, 0.01, 0.09, np.nan, np.nan, 0.02, 0.02, 0.02, 0.02]
    e2e = [99.0, 1, 3, 1, np.nan, 0.2, 1, 1, 1, 1]
    c = check_slo(frame(ttft, tpot, e2e), slo)
    assert c.n_measured == 9
    assert c.attainment == pytest.approx(6 / 9)
    assert not c.meets  # 66.7 % < 80 %
    # p80 of the 9 measured TTFTs (the unfinished one counts as ∞) is the 2 s request.
    assert c.quantile_s["ttft_s"] == 2.0 and c.quantile_s["tpot_s"] == 0.09
    assert c.describe().startswith("p80 TTFT 2 s vs 1 s")
    assert c.percentiles_s["ttft_p99_s"] == math.inf  # the unfinished request is the tail


def test_meeting_the_slo_implies_each_quantile_is_within_its_bound():
    rng = np.random.default_rng(3)
    n = 2000
    f = frame(rng.exponential(0.2, n), rng.exponential(0.01, n), rng.exponential(2.0, n))
    for att in (0.5, 0.9, 0.99):
        c = check_slo(f, SloSpec(ttft_p99_s=0.5, tpot_p99_s=0.03, attainment=att))
        if c.meets:
            assert all(c.quantile_s[k] <= c.bounds_s[k] for k in c.bounds_s)
        else:
            assert c.miss_ratio > 1 or c.attainment < att


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.floats(0.05, 2.0),
    st.floats(0.001, 0.05),
    st.floats(1.0, 3.0),
    st.floats(0.5, 0.999),
)
def test_loosening_a_bound_never_lowers_attainment(seed, ttft_s, tpot_s, factor, attainment):
    rng = np.random.default_rng(seed)
    n = 300
    ttft = np.where(rng.random(n) < 0.02, np.nan, rng.exponential(0.3, n))  # 2 % never finish
    f = frame(ttft, rng.exponential(0.01, n), ttft + rng.exponential(2.0, n))
    tight = check_slo(f, SloSpec(ttft_p99_s=ttft_s, tpot_p99_s=tpot_s, attainment=attainment))
    loose = check_slo(f, SloSpec(ttft_p99_s=ttft_s * factor, tpot_p99_s=tpot_s * factor, attainment=attainment))
    no_tpot = check_slo(f, SloSpec(ttft_p99_s=ttft_s, tpot_p99_s=None, attainment=attainment))
    assert tight.attainment <= loose.attainment and tight.attainment <= no_tpot.attainment
    assert tight.meets <= loose.meets  # meeting the tight SLO implies meeting the loose one
    finished = np.isfinite(ttft[int(n * 0.1) :]).mean()  # after the 10 % warm-up
    assert loose.attainment <= finished  # an unfinished request always misses


# --- one replica ------------------------------------------------------------------------------


def test_the_max_rate_is_bracketed_by_a_meeting_and_a_missing_probe():
    s = tiny()
    rs = find_max_rate(s)
    assert 0 < rs.max_rate_qps < rs.saturation_qps
    met = [c.rate_qps for c in rs.checks if c.meets]
    missed = [c.rate_qps for c in rs.checks if not c.meets]
    assert max(met) == pytest.approx(rs.max_rate_qps)
    above = min([r for r in missed if r > rs.max_rate_qps] + [rs.saturation_qps])  # sat counts as a miss
    assert (above - rs.max_rate_qps) <= 0.05 * above + 1e-9  # bisection tolerance


def test_a_diurnal_workload_is_probed_at_a_steady_rate():
    shape = [0.2] * 12 + [3.0] * 12  # the first simulated minutes fall in a quiet hour
    diurnal = tiny(**{"workload.arrival.kind": "diurnal", "workload.arrival.diurnal_shape": shape})
    assert max_rate_meeting_slo(diurnal) == pytest.approx(max_rate_meeting_slo(tiny()))


def test_a_tighter_slo_never_allows_a_higher_rate():
    rates = [max_rate_meeting_slo(tiny(**{"slo.tpot_p99_s": b})) for b in (0.004, 0.0025, 0.002, 0.0017)]
    assert rates == sorted(rates, reverse=True) and rates[-1] < rates[0]


# --- replicas ---------------------------------------------------------------------------------


@settings(max_examples=5, deadline=None)
@given(st.lists(st.floats(20.0, 900.0), min_size=2, max_size=4))
def test_more_traffic_never_needs_fewer_replicas(peaks):
    s = tiny()
    counts = [replicas_needed(s, p, verify=False).replicas for p in sorted(peaks)]
    assert counts == sorted(counts)


def test_a_tighter_slo_never_needs_fewer_replicas():
    counts = [replicas_needed(tiny(**changes), 500.0, verify=False).replicas for changes in (
        {"slo.tpot_p99_s": 0.004},
        {"slo.tpot_p99_s": 0.002},
        {"slo.tpot_p99_s": 0.002, "slo.attainment": 0.999},
        {"slo.tpot_p99_s": 0.0017, "slo.attainment": 0.999},
    )]
    assert counts == sorted(counts) and counts[-1] > counts[0]


def test_the_answer_meets_the_slo_at_the_peak_and_one_replica_fewer_does_not():
    s, peak = tiny(), 600.0
    ans = replicas_needed(s, peak)
    assert ans.replicas >= 2 and ans.verified
    # Re-simulate the fleets independently of the answer object.
    assert fleet_check(s, peak, ans.replicas).meets
    fewer = fleet_check(s, peak, ans.replicas - 1)
    assert not fewer.meets and peak / (ans.replicas - 1) <= ans.saturation_qps  # missed by latency, not by the ceiling


def test_the_fleet_search_lands_within_one_replica_of_the_split_stream_estimate():
    s = tiny()
    for peak in (250.0, 480.0, 700.0):
        ans = replicas_needed(s, peak)
        assert ans.verified, peak
        assert abs(ans.replicas - ans.split_estimate) <= 1, (peak, ans.replicas, ans.split_estimate)
        assert ans.replicas in ans.fleet_checks and (ans.replicas == 1 or ans.replicas - 1 in ans.fleet_checks)
        assert len(ans.fleet_checks) <= 8  # the fleet-simulation budget


def test_the_split_stream_model_agrees_with_a_routed_fleet():
    """Random routing of a Poisson stream = independent Poisson streams at λ/N: one replica at
    λ/N and a routed fleet of N at λ see the same latency distribution (up to sampling)."""
    s = tiny(**{"workload.num_requests": 2000})
    one = check_slo_from(s, 100.0)
    fleet = fleet_check(s, 300.0, 3)
    for k in ("ttft_p50_s", "tpot_p50_s", "tpot_p99_s", "e2e_p50_s"):
        assert fleet.percentiles_s[k] == pytest.approx(one.percentiles_s[k], rel=0.15), k


def check_slo_from(s: Scenario, rate: float):
    from simulator.capacity import Probe

    return Probe(s, rate)()


# --- the cheapest configuration ---------------------------------------------------------------


def test_search_prunes_what_cannot_load_and_picks_the_cheapest_verified_configuration():
    s = tiny(**{"workload.num_requests": 600})
    space = parse_search("gpu=H100-SXM/L4,tp=1/2", s)
    ans = search(s, 300.0, space)
    table = ans.candidates
    l4_tp2 = table[(table["gpu.name"] == "L4") & (table["gpu.tensor_parallel"] == 2)].iloc[0]
    assert not l4_tp2["fits_memory"] and np.isnan(l4_tp2["max_qps_per_replica"])  # never simulated
    summary = candidates_summary(table).set_index(["name", "tensor_parallel"])
    assert summary.loc[("L4", 2), "note"].startswith("cannot run: L4 has no NVLink")
    chosen = summary.loc[(ans.config["gpu.name"], ans.config["gpu.tensor_parallel"])]
    assert chosen["note"] == "simulated" and chosen["replicas"] == ans.replicas and chosen["usd_per_hour"] == pytest.approx(ans.usd_per_hour)
    assert ans.meets and ans.verified
    evaluated = table[table["usd_per_hour_est"].notna()]
    cheapest_estimate = evaluated["usd_per_hour_est"].min()
    assert ans.usd_per_hour <= cheapest_estimate * 1.5  # confirmation moves N by at most a step
    confirmed = table.dropna(subset=["replicas_confirmed"])
    costs = confirmed["replicas_confirmed"] * confirmed["gpus_per_replica"] * confirmed["usd_per_gpu_hour"]
    assert ans.usd_per_hour == pytest.approx(costs.min())


def test_branch_and_bound_finds_what_exhaustive_search_finds_with_fewer_simulations():
    s = tiny(**{"workload.num_requests": 600})
    space = parse_search("gpu=H100-SXM/A100-80GB/L4,tp=1/2/4", s)
    ans = search(s, 300.0, space, verify=False)
    table = ans.candidates
    runnable = table[table["fits_memory"]]
    assert (~runnable["evaluated"]).any()  # some configurations were never bisected
    exhaustive = []
    for _, row in runnable.iterrows():
        variant = s.with_changes(**{k: row[k] for k in space.values})
        n = replicas_needed(variant, 300.0, verify=False).replicas if max_rate_meeting_slo(variant) > 0 else 0
        if n:
            exhaustive.append(n * row["gpus_per_replica"] * row["usd_per_gpu_hour"])
    assert ans.usd_per_hour == pytest.approx(min(exhaustive))
    skipped = runnable[~runnable["evaluated"]]
    assert (skipped["usd_per_hour_bound"] >= ans.usd_per_hour - 1e-9).all()  # pruned only by a valid bound


def test_a_search_through_a_parquet_table_gives_the_same_answer_and_resumes(tmp_path):
    s = tiny(**{"workload.num_requests": 400})
    space = parse_search("gpu=H100-SXM/A100-80GB,tp=1/2", s)
    in_memory = search(s, 300.0, space, verify=False)
    out = tmp_path / "search.parquet"
    on_disk = search(s, 300.0, space, verify=False, out_parquet=out)
    assert (on_disk.config, on_disk.replicas, on_disk.usd_per_hour) == (in_memory.config, in_memory.replicas, in_memory.usd_per_hour)
    stored = pd.read_parquet(out)
    assert stored["key"].str.startswith("sat|").sum() == on_disk.candidates["fits_memory"].sum()
    assert stored["key"].str.startswith("rate|").sum() == on_disk.candidates["evaluated"].sum()
    again = search(s, 300.0, space, verify=False, out_parquet=out)  # every row comes from the table
    pd.testing.assert_frame_equal(again.candidates, on_disk.candidates)


def test_the_answer_does_not_depend_on_the_number_of_workers():
    from simulator.sweep import LocalExecutor

    s = tiny(**{"workload.num_requests": 400})
    space = parse_search("gpu=H100-SXM/A100-80GB/L4,tp=1/2", s)
    serial = search(s, 300.0, space, executor=LocalExecutor(1))
    with LocalExecutor(2) as two:
        parallel = search(s, 300.0, space, executor=two)
    assert (parallel.config, parallel.replicas, parallel.usd_per_hour, parallel.verified) == (serial.config, serial.replicas, serial.usd_per_hour, serial.verified)


def test_cost_scales_linearly_with_the_price_and_does_not_change_the_choice():
    s = tiny(**{"workload.num_requests": 600, "prices.usd_per_gpu_hour": 2.0})
    a = search(s, 200.0, verify=False)
    b = search(s.with_changes(**{"prices.usd_per_gpu_hour": 6.0}), 200.0, verify=False)
    assert a.config == b.config and a.replicas == b.replicas
    assert b.usd_per_hour == pytest.approx(3 * a.usd_per_hour)


def test_a_model_that_cannot_load_is_reported_with_needed_vs_available_memory():
    fits, why = memory_verdict(Scenario().with_changes(**{"model.name": "Llama-3.1-70B", "gpu.name": "L4"}))
    assert not fits and "needs" in why and "GiB" in why


def test_an_unmeetable_slo_reports_the_closest_configuration_and_the_miss():
    # 0.3 ms per output token is below one decode step of the 1B model on either GPU.
    s = tiny(**{"workload.num_requests": 400, "slo.tpot_p99_s": 0.0003})
    ans = search(s, 50.0, parse_search("gpu=H100-SXM/A100-80GB", s))
    assert not ans.meets and ans.replicas == 0
    assert ans.config["gpu.name"] == "H100-SXM"  # the faster GPU comes closest
    assert "p99 TPOT" in ans.miss and "vs 0.3 ms" in ans.miss
    assert ans.summary()["meets_slo"] is False
    with pytest.raises(LifecostError, match="TPOT"):
        capacity_for_cost(s)


def test_bad_search_input_is_a_one_line_user_error():
    with pytest.raises(LifecostError, match="did you mean 'tp'"):
        parse_search("tpp=1/2", Scenario())
    with pytest.raises(LifecostError, match="--search tp"):
        parse_search("tp=one/two", Scenario())
    with pytest.raises(LifecostError, match="--peak-qps"):
        search(tiny(), 0.0)
    with pytest.raises(LifecostError, match="--search model.quant"):
        search(tiny(), 10.0, parse_search("quant=int3", tiny()))
    with pytest.raises(LifecostError, match="true or false"):
        parse_search("offload=maybe", tiny())


# --- headroom and cost hook -------------------------------------------------------------------


def test_headroom_attainment_falls_as_the_rate_passes_capacity():
    s = tiny()
    cap = max_rate_meeting_slo(s)
    curve = headroom_curve(s, 2, [0.3 * 2 * cap, 2 * cap * 0.95, 2 * cap * 1.4])
    assert list(curve["rate_qps"]) == sorted(curve["rate_qps"])
    assert curve["meets_slo"].iloc[0] and not curve["meets_slo"].iloc[-1]
    assert curve["slo_attainment"].iloc[0] >= curve["slo_attainment"].iloc[-1]
    assert (curve["ttft_p99_s"] >= curve["ttft_p50_s"]).all()


def test_capacity_for_cost_is_the_max_rate_and_the_replica_gpus():
    s = tiny(**{"gpu.tensor_parallel": 2})
    cap = capacity_for_cost(s)
    assert cap.gpus_per_replica == 2
    assert cap.max_qps_per_replica == pytest.approx(max_rate_meeting_slo(s))
