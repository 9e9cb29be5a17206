"""Lifetime cost: training bursts plus serving that never stops, month by month.

The rollup, for each month m = 1..M of the horizon:

1. **Traffic**: requests/day = `requests_per_day` × (1 + `monthly_growth`)^(m−1), or an explicit
   per-month curve. Within a day the rate follows a 24-hour shape with mean 1: the scenario's
   `workload.arrival.diurnal_shape` when given, else a von Mises bump
   s(h) ∝ exp(κ·cos(2π(h − 14)/24)) whose κ is solved so that max/mean = `diurnal_peak_to_mean`
   (a smooth single daily peak; any ratio from 1 to 24 is reachable).
2. **Replicas per hour**: replicas(h) = ceil(rate(h) / `max_qps_per_replica`) (at least
   `min_replicas`), from an injected `ReplicaCapacity` — `capacity_from_simulation` measures it
   with the serving simulator (the highest rate one replica sustains within the SLO).
3. **Billed GPU-hours**: on-demand/spot with `autoscale` pay Σ_h replicas(h) × GPUs/replica; without
   autoscaling the month's peak is provisioned all day. Reserved and on-prem capacity is a
   commitment: the fleet is the largest peak so far (it never shrinks inside the horizon), billed
   every hour. Cold starts of autoscaled replicas are not charged (hourly granularity).
4. **Idle**: billed GPU-hours minus busy GPU-hours (Σ rate/capacity × GPUs/replica): the price
   of provisioning whole replicas for a fluctuating load; shown as a part of serving.
5. **Energy**: the linear server power model P(u) = P_idle + (P_max − P_idle)·u (Fan, Weber &
   Barroso 2007, "Power provisioning for a warehouse-sized computer", ISCA) with P_max = TDP and
   P_idle = the sheet's idle fraction of TDP (or a Profile's measured `idle_w`), plus the host's
   overhead per GPU; a Profile's measured J/token replaces the busy part when present. Charged
   only on-prem (× PUE × $/kWh); a cloud price already includes power, so there it is reported
   but not billed.
6. **Training**: the initial fine-tune in month 1 and a retrain every `retrain_every_months`;
   each run's expected cost includes checkpoint/restart overhead, and failed attempts that must
   be redone are shown as their own column.

Totals: lifetime dollars, $/1M tokens (all-in, and serving-only), and the break-even month — the
first month whose cumulative serving spend reaches the cumulative training spend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.errors import LifecostError
from models.gpus import load_gpu
from models.prices import HOURS_PER_MONTH, GpuHourPrice, PriceSheet, gpu_hour_price, load_prices
from simulator.failures import FailureModel
from simulator.scenario import Scenario
from simulator.training import TrainingPlan, plan_training

DAYS_PER_MONTH = HOURS_PER_MONTH / 24.0  # 30.42 days: the average calendar month
PEAK_HOUR = 14  # the hour of the synthetic daily peak (only the shape's spread matters for cost)
COMMITTED = ("reserved_1y", "reserved_3y", "on_prem")
TOKEN_SAMPLE_REQUESTS = 20_000  # requests drawn to estimate mean tokens per request


@dataclass(frozen=True)
class ReplicaCapacity:
    """What one serving replica sustains within the SLO, and how many GPUs it occupies."""

    max_qps_per_replica: float
    gpus_per_replica: int
    source: str = "given"

    def __post_init__(self) -> None:
        if not (self.max_qps_per_replica > 0 and math.isfinite(self.max_qps_per_replica)):
            raise LifecostError(f"must be > 0, got {self.max_qps_per_replica}", field="capacity.max_qps_per_replica")
        if self.gpus_per_replica < 1:
            raise LifecostError(f"must be ≥ 1, got {self.gpus_per_replica}", field="capacity.gpus_per_replica")


@dataclass(frozen=True)
class LifetimeCost:
    """A scenario's month-by-month cost (`frame`) and its totals."""

    scenario: str
    frame: pd.DataFrame
    totals: dict[str, Any]
    capacity: ReplicaCapacity
    price: GpuHourPrice
    training: TrainingPlan | None


# ---------------------------------------------------------------- traffic


def daily_shape(peak_to_mean: float, hours: int = 24) -> np.ndarray:
    """Hourly multipliers with mean 1 and max/mean = `peak_to_mean` (von Mises bump, κ by bisection)."""
    if not (1.0 <= peak_to_mean < hours):
        raise LifecostError(
            f"must be in [1, {hours}), got {peak_to_mean}", field="horizon.diurnal_peak_to_mean", fix="the busiest hour's rate divided by the day's mean rate"
        )
    theta = 2.0 * np.pi * (np.arange(hours) - PEAK_HOUR) / hours

    def shape(kappa: float) -> np.ndarray:
        w = np.exp(kappa * (np.cos(theta) - 1.0))  # − 1 keeps exp() finite for large κ
        return w / w.mean()

    if peak_to_mean == 1.0:
        return np.ones(hours)
    lo, hi = 0.0, 1.0
    while shape(hi).max() < peak_to_mean:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if shape(mid).max() < peak_to_mean:
            lo = mid
        else:
            hi = mid
    return shape(hi)


def scenario_daily_shape(scenario: Scenario) -> np.ndarray:
    """The workload's own 24-hour shape when it has one, else one built from the horizon's peak/mean."""
    given = scenario.workload.arrival.diurnal_shape
    if given is not None:
        s = np.asarray(given, dtype=float)
        return s / s.mean()
    return daily_shape(scenario.horizon.diurnal_peak_to_mean)


def requests_per_day_by_month(scenario: Scenario, months: int, curve: Sequence[float] | None = None) -> np.ndarray:
    """Requests/day for each month: compound growth, or the explicit `curve` (one value per month)."""
    if curve is not None:
        values = np.asarray(list(curve), dtype=float)
        if values.shape[0] < months:
            raise LifecostError(f"has {values.shape[0]} months, the horizon needs {months}", field="traffic_curve", fix="give one requests/day value per month")
        values = values[:months]
        bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
        if bad.size:
            m = int(bad[0])
            raise LifecostError(f"month {m + 1} has {values[m]:g} requests/day", field="traffic_curve", fix="traffic must be ≥ 0 requests/day in every month")
        return values
    g = scenario.horizon.monthly_growth
    if g <= -1.0:
        raise LifecostError(
            f"monthly_growth {g:g} gives {'zero' if g == -1 else 'negative'} traffic from month 2",
            field="horizon.monthly_growth",
            fix="growth must be > -1 (e.g. -0.05 for 5 % fewer requests each month)",
        )
    return scenario.horizon.requests_per_day * (1.0 + g) ** np.arange(months)


def mean_tokens_per_request(scenario: Scenario) -> tuple[float, float]:
    """(mean prompt tokens, mean output tokens) of the scenario's request mix (seeded sample)."""
    from simulator.workload import generate_requests

    n = min(scenario.workload.num_requests, TOKEN_SAMPLE_REQUESTS) if scenario.workload.arrival.kind == "trace" else TOKEN_SAMPLE_REQUESTS
    reqs = generate_requests(scenario.workload, seed=scenario.seed, num_requests=n, max_model_len_tok=scenario.engine.max_model_len_tok, clip_prompts=True)
    return float(reqs.prompt_tok.mean()), float(reqs.output_tok.mean())


# ---------------------------------------------------------------- capacity


def capacity_from_simulation(scenario: Scenario, *, rtol: float = 0.05, num_requests: int | None = None) -> ReplicaCapacity:
    """The highest arrival rate one replica sustains within the scenario's SLO.

    Delegates to `simulator.capacity.find_max_rate`: a bisection on the offered rate in which
    every probe is a run of the serving simulator (`simulator.engine.simulate`) judged against
    the SLO. Imported here, not at the top, because `capacity` imports this module for its
    `ReplicaCapacity`.
    """
    from simulator.capacity import find_max_rate

    found = find_max_rate(scenario, rtol=rtol, num_requests=num_requests)
    if not found.feasible:
        raise LifecostError(
            f"one replica misses the SLO even at {found.low_load_check.rate_qps:.3g} req/s: {found.low_load_check.describe()}",
            field="slo",
            fix="relax the SLO, or choose a faster GPU, more tensor parallelism or a smaller model",
        )
    return ReplicaCapacity(
        found.max_rate_qps,
        scenario.gpu.tensor_parallel,
        source=f"simulated: {found.max_rate_qps:.3g} req/s per replica within the SLO ({len(found.checks)} runs)",
    )


# ---------------------------------------------------------------- rollup


def _serving_energy_terms(gpu_name: str) -> tuple[float | None, float | None, float | None]:
    """(idle_w, prefill J/tok, decode J/tok) from a calibrated Profile, if any."""
    try:
        from models.profile import find_profile
    except ImportError:
        return None, None, None
    try:
        prof = find_profile(gpu_name)
    except LifecostError:
        return None, None, None
    if prof is None or prof.energy is None:
        return None, None, None
    e = prof.energy
    return e.idle_w, e.prefill_j_per_tok, e.decode_j_per_tok


def lifetime_cost(
    scenario: Scenario,
    capacity: ReplicaCapacity | None = None,
    *,
    months: int | None = None,
    traffic_curve: Sequence[float] | None = None,
    training: TrainingPlan | None = None,
    sheet: PriceSheet | None = None,
    price: GpuHourPrice | None = None,
    failures: FailureModel = FailureModel(),
    min_replicas: int = 1,
    autoscale: bool | None = None,
    tokens_per_request: tuple[float, float] | None = None,
    use_profile: bool = True,
) -> LifetimeCost:
    """Month-by-month lifetime cost of `scenario` (see the module docstring).

    `capacity` defaults to `capacity_from_simulation(scenario)`; `training` to `plan_training`
    (skipped when `training.method` is none); `price` to the scenario's price-sheet row.
    """
    h = scenario.horizon
    months = h.months if months is None else months
    if isinstance(months, bool) or not isinstance(months, (int, np.integer)) or months < 1:
        raise LifecostError(f"must be a whole number of months ≥ 1, got {months!r}", field="horizon.months", fix="plan at least one month (e.g. --months 12)")
    if min_replicas < 0:
        raise LifecostError(f"must be ≥ 0, got {min_replicas}", field="min_replicas")
    autoscale = h.autoscale if autoscale is None else autoscale
    gpu = load_gpu(scenario.gpu.name)
    sheet = sheet if sheet is not None else load_prices(scenario.prices.sheet)
    price = price if price is not None else gpu_hour_price(sheet, scenario.prices.provider, gpu.name, scenario.prices.pricing, scenario.prices.usd_per_gpu_hour)
    if capacity is None:
        capacity = capacity_from_simulation(scenario)
    if training is None and scenario.training.method != "none":
        training = plan_training(scenario, sheet=sheet, failures=failures, use_profile=use_profile)
    if training is not None and not training.fits:
        raise LifecostError(f"the fine-tune {training.verdict}", field="training", fix="use LoRA/QLoRA, a shorter seq_len_tok, more GPU memory or adamw-8bit")

    # traffic → hourly rates (months × 24)
    rpd = requests_per_day_by_month(scenario, months, traffic_curve)
    shape = scenario_daily_shape(scenario)
    rate_qps = rpd[:, None] / 86_400.0 * shape[None, :]
    load = rate_qps / capacity.max_qps_per_replica  # replicas' worth of work, fractional
    need = np.maximum(np.ceil(load - 1e-9), min_replicas)
    peak = need.max(axis=1)
    gpr = capacity.gpus_per_replica

    if price.pricing in COMMITTED:
        fleet = np.maximum.accumulate(peak)
        replica_hours = fleet * HOURS_PER_MONTH
    elif autoscale:
        replica_hours = need.sum(axis=1) * DAYS_PER_MONTH
    else:
        replica_hours = peak * HOURS_PER_MONTH
    billed_gpu_h = replica_hours * gpr
    busy_gpu_h = load.sum(axis=1) * DAYS_PER_MONTH * gpr
    idle_gpu_h = np.maximum(billed_gpu_h - busy_gpu_h, 0.0)
    serving_usd = billed_gpu_h * price.usd_per_gpu_hour
    idle_usd = idle_gpu_h * price.usd_per_gpu_hour

    # tokens
    prompt_mean, output_mean = tokens_per_request if tokens_per_request is not None else mean_tokens_per_request(scenario)
    requests = rpd * DAYS_PER_MONTH
    prompt_tok = requests * prompt_mean
    output_tok = requests * output_mean

    # energy (IT load, kWh)
    op = price.on_prem
    idle_frac = op.idle_power_fraction if op is not None else _sheet_default(sheet, "idle_power_fraction", gpu.name)
    host_w = op.host_overhead_w if op is not None else _sheet_default(sheet, "host_overhead_w", gpu.name)
    idle_w, pj, dj = _serving_energy_terms(gpu.name) if use_profile else (None, None, None)
    p_idle_w = idle_w if idle_w is not None else idle_frac * gpu.tdp_w
    if pj is not None and dj is not None:
        busy_kwh = (prompt_tok * pj + output_tok * dj) / 3.6e6
        serving_kwh = busy_kwh + idle_gpu_h * p_idle_w / 1000.0
    else:
        serving_kwh = (billed_gpu_h * p_idle_w + busy_gpu_h * (gpu.tdp_w - p_idle_w)) / 1000.0
    serving_kwh = serving_kwh + billed_gpu_h * host_w / 1000.0
    energy_usd = np.array([op.energy_usd(k) for k in serving_kwh]) if op is not None else np.zeros(months)

    # training bursts
    train_runs = np.zeros(months)
    if training is not None:
        train_runs[0] = 1.0
        r = scenario.training.retrain_every_months
        if r is not None:
            train_runs[r::r] = 1.0  # months 1 + r, 1 + 2r, …
    one_run_usd = training.usd.mid if training is not None else 0.0
    attempts = failures.expected_attempts
    training_usd = train_runs * one_run_usd
    failed_usd = train_runs * one_run_usd * (attempts - 1.0)
    training_kwh = train_runs * (training.energy_kwh.mid * attempts if training is not None else 0.0)

    total = training_usd + failed_usd + serving_usd + energy_usd
    tokens = prompt_tok + output_tok
    frame = pd.DataFrame(
        {
            "month": np.arange(1, months + 1),
            "requests_per_day": rpd,
            "requests": requests,
            "tokens": tokens,
            "output_tokens": output_tok,
            "peak_qps": rate_qps.max(axis=1),
            "replicas_peak": peak.astype(int),
            "gpu_hours": billed_gpu_h,
            "busy_gpu_hours": busy_gpu_h,
            "training_usd": training_usd,
            "failed_attempts_usd": failed_usd,
            "serving_usd": serving_usd,
            "idle_usd": idle_usd,
            "energy_kwh": serving_kwh + training_kwh,
            "energy_usd": energy_usd,
            "total_usd": total,
        }
    ).set_index("month")
    frame["cum_training_usd"] = (frame.training_usd + frame.failed_attempts_usd).cumsum()
    frame["cum_serving_usd"] = (frame.serving_usd + frame.energy_usd).cumsum()
    frame["usd_per_1m_tok"] = np.where(tokens > 0, total / np.where(tokens > 0, tokens, 1.0) * 1e6, np.nan)

    cum_train = frame.cum_training_usd.to_numpy()
    cum_serve = frame.cum_serving_usd.to_numpy()
    crossed = np.flatnonzero((cum_serve >= cum_train) & (cum_train > 0))
    tok_total = float(tokens.sum())
    serving_all = float(serving_usd.sum() + energy_usd.sum())
    totals = {
        "scenario": scenario.name,
        "months": months,
        "gpu": gpu.name,
        "price": price.label,
        "capacity_qps_per_replica": capacity.max_qps_per_replica,
        "gpus_per_replica": gpr,
        "capacity_source": capacity.source,
        "autoscale": bool(autoscale and price.pricing not in COMMITTED),
        "total_usd": float(total.sum()),
        "training_usd": float(training_usd.sum() + failed_usd.sum()),
        "failed_attempts_usd": float(failed_usd.sum()),
        "serving_usd": float(serving_usd.sum()),
        "idle_usd": float(idle_usd.sum()),
        "energy_kwh": float(frame.energy_kwh.sum()),
        "energy_usd": float(energy_usd.sum()),
        "gpu_hours": float(billed_gpu_h.sum()),
        "gpus_peak": int(peak.max() * gpr),
        "requests": float(requests.sum()),
        "tokens": tok_total,
        "usd_per_1m_tok": float(total.sum()) / tok_total * 1e6 if tok_total > 0 else None,
        "serving_usd_per_1m_tok": serving_all / tok_total * 1e6 if tok_total > 0 else None,
        "break_even_month": int(frame.index[crossed[0]]) if crossed.size else None,
    }
    return LifetimeCost(scenario.name, frame, totals, capacity, price, training)


def _sheet_default(sheet: PriceSheet, name: str, gpu_name: str) -> float:
    """An on-prem power assumption for energy reporting under cloud pricing (0 if the sheet lacks it)."""
    from models.prices import on_prem_for

    try:
        return float(getattr(on_prem_for(sheet, gpu_name), name))
    except LifecostError:
        value = getattr(sheet.on_prem.defaults, name)
        return float(value) if value is not None else 0.0


COMPARE_ROWS = (
    "gpu",
    "price",
    "capacity_qps_per_replica",
    "gpus_per_replica",
    "gpus_peak",
    "training_usd",
    "serving_usd",
    "idle_usd",
    "energy_kwh",
    "energy_usd",
    "total_usd",
    "tokens",
    "usd_per_1m_tok",
    "serving_usd_per_1m_tok",
    "break_even_month",
)


def compare(items: Sequence[LifetimeCost | Scenario], **kwargs: Any) -> pd.DataFrame:
    """Side by side: one column per scenario, one row per headline figure.

    Items are finished `LifetimeCost`s or `Scenario`s; a Scenario is costed here with
    `lifetime_cost(scenario, **kwargs)` (its capacity simulated unless `capacity=` is given).
    """
    costs = [it if isinstance(it, LifetimeCost) else lifetime_cost(it, **kwargs) for it in items]
    columns: dict[str, list[Any]] = {}
    for i, c in enumerate(costs):
        name = c.scenario if c.scenario not in columns else f"{c.scenario} #{i + 1}"
        columns[name] = [c.totals[k] for k in COMPARE_ROWS]
    return pd.DataFrame(columns, index=list(COMPARE_ROWS))


def compare_scenarios(scenarios: Sequence[Scenario], capacities: Sequence[ReplicaCapacity | None] | None = None, **kwargs: Any) -> pd.DataFrame:
    """`lifetime_cost` for each scenario (with its capacity, or simulated), then `compare`."""
    caps = list(capacities) if capacities is not None else [None] * len(scenarios)
    if len(caps) != len(scenarios):
        raise LifecostError(f"{len(caps)} capacities for {len(scenarios)} scenarios", field="capacities")
    return compare([lifetime_cost(s, c, **kwargs) for s, c in zip(scenarios, caps)])
