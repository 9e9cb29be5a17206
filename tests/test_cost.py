"""The lifetime cost rollup: traffic shape, provisioning, pricing, break-even, and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import LifecostError
from models.prices import HOURS_PER_MONTH, gpu_hour_price, load_prices
from simulator.cost import (
    ReplicaCapacity,
    capacity_from_simulation,
    compare,
    daily_shape,
    lifetime_cost,
    requests_per_day_by_month,
)
from simulator.scenario import Scenario, parse_scenario

TOK = (600.0, 250.0)  # mean prompt/output tokens per request, fixed so the tests need no sampling
CAP = ReplicaCapacity(max_qps_per_replica=10.0, gpus_per_replica=1)
SHEET = load_prices()


def _serving_only(**changes) -> Scenario:
    base = {"training.method": "none", "horizon.months": 6}
    base.update(changes)
    return Scenario().with_changes(**base)


def _cost(s: Scenario, cap: ReplicaCapacity = CAP, **kw):
    return lifetime_cost(s, cap, sheet=SHEET, tokens_per_request=TOK, use_profile=False, **kw)


@settings(max_examples=50, deadline=None)
@given(ratio=st.floats(1.0, 20.0))
def test_daily_shape_has_mean_one_and_the_requested_peak(ratio):
    s = daily_shape(ratio)
    assert s.shape == (24,) and (s > 0).all()
    assert s.mean() == pytest.approx(1.0)
    assert s.max() == pytest.approx(ratio, rel=1e-6)


def test_workload_diurnal_shape_overrides_the_synthetic_one():
    shape = [1.0] * 12 + [3.0] * 12
    s = _serving_only(**{"workload.arrival.kind": "diurnal", "workload.arrival.diurnal_shape": shape})
    c = _cost(s)
    assert c.frame.peak_qps.iloc[0] == pytest.approx(2_000_000 / 86_400 * 1.5)


def test_monthly_traffic_compounds_growth_and_tokens_follow_requests():
    s = _serving_only(**{"horizon.monthly_growth": 0.1, "horizon.months": 4})
    rpd = requests_per_day_by_month(s, 4)
    assert rpd == pytest.approx([2e6, 2.2e6, 2.42e6, 2.662e6])
    c = _cost(s)
    assert c.frame.requests.to_numpy() == pytest.approx(rpd * HOURS_PER_MONTH / 24)
    assert c.frame.tokens.to_numpy() == pytest.approx(c.frame.requests.to_numpy() * 850)
    assert c.totals["usd_per_1m_tok"] == pytest.approx(c.totals["total_usd"] / c.totals["tokens"] * 1e6)


def test_fixed_provisioning_bills_the_daily_peak_all_day():
    s = _serving_only(**{"horizon.autoscale": False, "horizon.monthly_growth": 0.0, "horizon.diurnal_peak_to_mean": 2.0})
    c = _cost(s)
    peak_qps = 2e6 / 86_400 * 2.0  # 46.3 req/s → 5 replicas of 10 req/s
    assert c.frame.replicas_peak.iloc[0] == 5
    assert c.frame.gpu_hours.iloc[0] == pytest.approx(5 * HOURS_PER_MONTH)
    assert c.frame.serving_usd.iloc[0] == pytest.approx(5 * HOURS_PER_MONTH * 6.88)
    assert c.frame.peak_qps.iloc[0] == pytest.approx(peak_qps)
    assert (c.frame.idle_usd < c.frame.serving_usd).all() and (c.frame.idle_usd > 0).all()


def test_committed_capacity_never_shrinks_and_ignores_autoscaling():
    s = _serving_only(**{"prices.pricing": "reserved_1y", "horizon.monthly_growth": -0.3, "horizon.months": 4})
    c = _cost(s)
    assert (c.frame.gpu_hours.diff().dropna() == 0).all()  # the month-1 fleet is kept
    fixed = _cost(s.with_changes(**{"horizon.autoscale": False}))
    assert c.totals["serving_usd"] == pytest.approx(fixed.totals["serving_usd"])
    assert not c.totals["autoscale"]


def test_on_prem_charges_amortised_capex_plus_energy_times_pue_and_tariff():
    s = _serving_only(**{"prices.pricing": "on_prem", "horizon.monthly_growth": 0.0})
    c = _cost(s)
    op = c.price.on_prem
    fleet = c.frame.replicas_peak.iloc[0]
    assert c.frame.serving_usd.iloc[0] == pytest.approx(fleet * HOURS_PER_MONTH * op.capex_usd / (op.depreciation_months * HOURS_PER_MONTH))
    assert c.frame.energy_usd.iloc[0] == pytest.approx(c.frame.energy_kwh.iloc[0] * op.pue * op.usd_per_kwh)
    # the IT load lies between all-idle and all-at-TDP (plus the host) for the provisioned GPU-hours
    gpu_h = c.frame.gpu_hours.iloc[0]
    kwh = c.frame.energy_kwh.iloc[0]
    assert gpu_h * (0.15 * 700 + op.host_overhead_w) / 1000 < kwh < gpu_h * (700 + op.host_overhead_w) / 1000
    cloud = _cost(_serving_only())
    assert cloud.totals["energy_usd"] == 0 and cloud.totals["energy_kwh"] > 0  # power is in the rental price


@settings(max_examples=40, deadline=None)
@given(
    rpd=st.floats(1e3, 5e7),
    growth=st.floats(-0.5, 0.5),
    ratio=st.floats(1.0, 6.0),
    qps=st.floats(0.5, 200.0),
    gpr=st.integers(1, 8),
    factor=st.floats(0.01, 50.0),
    pricing=st.sampled_from(["on_demand", "spot", "reserved_1y", "on_prem"]),
)
def test_cost_scales_linearly_with_price_and_autoscaling_never_costs_more(rpd, growth, ratio, qps, gpr, factor, pricing):
    s = _serving_only(**{"horizon.requests_per_day": rpd, "horizon.monthly_growth": growth, "horizon.diurnal_peak_to_mean": ratio, "prices.pricing": pricing})
    cap = ReplicaCapacity(qps, gpr)
    price = gpu_hour_price(SHEET, "aws", "H100-SXM", pricing)
    base = _cost(s, cap, price=price)
    scaled = _cost(s, cap, price=price.scaled(factor))
    assert scaled.totals["total_usd"] == pytest.approx(base.totals["total_usd"] * factor, rel=1e-9)
    fixed = _cost(s, cap, price=price, autoscale=False)
    auto = _cost(s, cap, price=price, autoscale=True)
    assert auto.totals["total_usd"] <= fixed.totals["total_usd"] * (1 + 1e-12)
    assert (auto.frame.gpu_hours <= fixed.frame.gpu_hours * (1 + 1e-12)).all()


@settings(max_examples=40, deadline=None)
@given(
    rpd=st.floats(1e3, 5e7),
    extra=st.floats(0.0, 3.0),
    growth=st.floats(-0.3, 0.3),
    autoscale=st.booleans(),
    pricing=st.sampled_from(["on_demand", "reserved_3y", "on_prem"]),
)
def test_more_traffic_never_costs_less(rpd, extra, growth, autoscale, pricing):
    s = _serving_only(**{"horizon.requests_per_day": rpd, "horizon.monthly_growth": growth, "horizon.autoscale": autoscale, "prices.pricing": pricing})
    more = s.with_changes(**{"horizon.requests_per_day": rpd * (1 + extra)})
    a, b = _cost(s), _cost(more)
    assert b.totals["total_usd"] >= a.totals["total_usd"] * (1 - 1e-12)
    assert (b.frame.gpu_hours >= a.frame.gpu_hours * (1 - 1e-12)).all()


def test_training_is_charged_at_start_and_every_retrain_and_break_even_is_the_first_crossing():
    s = Scenario().with_changes(
        **{
            "model.name": "Llama-3.1-70B",
            "gpu.name": "A100-80GB",
            "training.method": "qlora",
            "training.retrain_every_months": 2,
            "horizon.months": 7,
            "horizon.requests_per_day": 20_000,
            "horizon.monthly_growth": 0.0,
        }
    )
    c = _cost(s, ReplicaCapacity(2.0, 1))
    one = c.training.usd.mid
    assert c.frame.training_usd.to_numpy() == pytest.approx([one, 0, one, 0, one, 0, one])
    cum_t, cum_s = c.frame.cum_training_usd.to_numpy(), c.frame.cum_serving_usd.to_numpy()
    m = c.totals["break_even_month"]
    assert m is not None and m >= 1
    assert cum_s[m - 1] >= cum_t[m - 1] and all(cum_s[i] < cum_t[i] for i in range(m - 1))
    assert c.totals["training_usd"] == pytest.approx(4 * one)


def test_failed_attempts_add_their_own_column():
    from simulator.failures import FailureModel

    s = Scenario().with_changes(**{"horizon.months": 3, "training.retrain_every_months": None})
    c = _cost(s, failures=FailureModel(attempt_failure_prob=0.5))
    assert c.frame.failed_attempts_usd.iloc[0] == pytest.approx(c.frame.training_usd.iloc[0])  # 2 expected attempts
    assert c.frame.failed_attempts_usd.iloc[1:].sum() == 0


def test_compare_puts_scenarios_side_by_side():
    a = _cost(_serving_only(name="h100"))
    b = _cost(_serving_only(name="h100-spot", **{"prices.pricing": "spot"}))
    table = compare([a, b])
    assert list(table.columns) == ["h100", "h100-spot"]
    assert table.loc["total_usd", "h100-spot"] < table.loc["total_usd", "h100"]
    assert table.loc["gpu", "h100"] == "H100-SXM"
    same = compare([_serving_only(name="h100"), _serving_only(name="h100")], capacity=CAP, sheet=SHEET, tokens_per_request=TOK, use_profile=False)
    assert list(same.columns) == ["h100", "h100 #2"]
    assert same.loc["total_usd", "h100"] == pytest.approx(table.loc["total_usd", "h100"])


def test_zero_month_horizon_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(LifecostError, match=r"horizon.months: must be a whole number of months ≥ 1, got 0"):
        _cost(_serving_only(), months=0)
    with pytest.raises(LifecostError) as e:
        parse_scenario("horizon:\n  months: 0\n", source="plan.yaml")
    assert "plan.yaml:2 horizon.months" in str(e.value) and "greater than or equal to 1" in str(e.value)


def test_negative_traffic_is_refused_naming_the_month():
    with pytest.raises(LifecostError, match="month 3 has -5 requests/day"):
        _cost(_serving_only(**{"horizon.months": 4}), traffic_curve=[10, 20, -5, 30])
    bad_growth = Scenario.model_construct(**{**Scenario().__dict__, "horizon": Scenario().horizon.model_construct(**{**Scenario().horizon.__dict__, "monthly_growth": -1.5})})
    with pytest.raises(LifecostError, match="negative traffic"):
        requests_per_day_by_month(bad_growth, 3)


def test_missing_price_for_the_gpu_lists_what_exists():
    with pytest.raises(LifecostError, match="no on_demand price for RTX-4090 on aws.*runpod/RTX-4090/on_demand"):
        _cost(_serving_only(**{"gpu.name": "RTX-4090"}))


def test_training_that_does_not_fit_stops_the_rollup_with_needed_vs_available():
    s = Scenario().with_changes(**{"model.name": "Llama-3.1-70B", "training.method": "full"})
    with pytest.raises(LifecostError, match=r"does not fit: needs [\d,.]+ GiB, has 80.0 GiB"):
        _cost(s)


def test_capacity_from_the_serving_simulator_is_positive_and_an_impossible_slo_is_explained():
    s = Scenario().with_changes(**{"model.name": "Llama-3.2-1B", "workload.num_requests": 200})
    cap = capacity_from_simulation(s)
    assert cap.max_qps_per_replica > 0 and cap.gpus_per_replica == 1 and "simulated" in cap.source
    impossible = s.with_changes(**{"slo.ttft_p99_s": 1e-6})
    with pytest.raises(LifecostError, match="misses the SLO"):
        capacity_from_simulation(impossible)
    assert np.isfinite(cap.max_qps_per_replica)


def test_a_measured_idle_power_replaces_the_sheet_assumption(tmp_path, monkeypatch):
    import models.profile as mp

    s = _serving_only(**{"horizon.autoscale": False})
    sheet_based = lifetime_cost(s, CAP, sheet=SHEET, tokens_per_request=TOK, use_profile=False)
    monkeypatch.setattr(mp, "PROFILES_DIR", tmp_path)
    prof = mp.Profile(
        gpu=mp.ProfileGpu(name="NVIDIA H100 80GB HBM3", catalog_name="H100-SXM"),
        engine=mp.ProfileEngine(name="vllm", version="0.32.0"),
        created_utc="2026-11-22T19:00:00Z",
        command="lifecost calibrate",
        energy=mp.EnergyTerms(idle_w=300.0),
    )
    mp.save_profile(prof, mp.profile_path("H100-SXM", "vllm", tmp_path))
    measured = lifetime_cost(s, CAP, sheet=SHEET, tokens_per_request=TOK, use_profile=True)
    f0, f1 = sheet_based.frame.iloc[0], measured.frame.iloc[0]
    idle_gpu_h = f0.gpu_hours - f0.busy_gpu_hours
    # only the idle draw changes: 300 W measured vs 0.15 × 700 W = 105 W assumed
    assert f1.energy_kwh - f0.energy_kwh == pytest.approx(f0.gpu_hours * (300 - 105) / 1000 - f0.busy_gpu_hours * (300 - 105) / 1000)
    assert idle_gpu_h > 0
