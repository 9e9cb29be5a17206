"""SLA capacity search: how many replicas, and which configuration is cheapest, for a peak rate.

Reading guide
-------------
1. `check_slo(requests_frame, slo)` — what "meets the SLO" means (below), as a `SloCheck`.
2. `find_max_rate(scenario)` / `max_rate_meeting_slo(scenario)` — the highest request rate one
   replica sustains within the SLO (bisection on the rate, every probe a simulation).
3. `replicas_needed(scenario, peak_qps)` — the fewest replicas: ⌈peak ÷ max rate⌉ under the
   Poisson-splitting property, then an exponential-then-binary search over N in which every
   step simulates the whole routed fleet at the peak, ending at N that meets with N−1 missing.
4. `search(scenario, peak_qps, space)` — the cheapest configuration over a `SearchSpace`
   (GPU type, tensor parallel, `max_num_seqs`, token budget, quantization, KV dtype,
   speculation, offload): configurations that cannot load are pruned before any simulation,
   then branch and bound — every throughput ceiling (one simulation each) gives a lower bound
   on cost, and only configurations whose bound beats the best estimate so far are bisected —
   all simulations in parallel through a `simulator.sweep` executor. Returns a
   `CapacityAnswer`, which is also the answer when no configuration meets the SLO (then it
   names the closest one and by how much it misses).
5. `headroom_curve(scenario, n_replicas, rates)` — SLO attainment and latency percentiles vs
   offered rate for a fleet. `capacity_for_cost(scenario)` feeds `simulator/cost.py`.

What "meets the SLO" means
--------------------------
`SloSpec` sets bounds on TTFT, TPOT and E2E (any may be unset) and an attainment fraction A.
A request *attains* the SLO when every set bound holds for it (TTFT ≤ ttft_p99_s, TPOT ≤
tpot_p99_s, E2E ≤ e2e_p99_s; a request that never finished misses; a one-token output has no
TPOT and passes that bound). A run *meets* the SLO when the fraction of measured requests that
attain is ≥ A, *and* the offered rate per replica is sustainable: below the replica's
throughput ceiling (`saturation_qps`) — a finite run above it can look fine only because its
backlog has not had time to grow. The attainment rule implies each metric's A-quantile (p99
for A = 0.99) is within its bound, and is stricter than checking the quantiles separately
when two bounds bind at once (the DistServe/Splitwise "SLO attainment" definition). The first `WARMUP_FRACTION` of arrivals
are not measured: the simulation starts with an empty replica, which flatters early requests.

How many requests: the tail estimate needs several requests beyond the A-quantile; with
the scenario's default 2,000 requests and 10 % warm-up, 1,800 are measured and ~18 lie beyond
p99. Fewer requests make the answer noisier, not biased; tests use a few hundred.

Replicas and the routing assumption
-----------------------------------
A Poisson stream of rate λ routed uniformly at random over N replicas splits into N
independent Poisson streams of rate λ/N (the thinning/splitting property of the Poisson
process; e.g. Ross, *Introduction to Probability Models*, §5.3). With identical replicas the
fleet's attainment is then exactly one replica's attainment at λ/N, so N = ⌈λ ÷ r*⌉ with r*
one replica's max rate. This is exact for random routing of Poisson arrivals and conservative
for smarter routers (least-loaded / join-shortest-queue balance load better). The verification
does not rely on it: it generates the peak stream, routes every request to a uniformly random
replica, simulates each replica on its own share, and pools the requests.

Reproducibility: every probe uses the scenario's seed, so probes at different rates share the
same underlying draws (common random numbers: a Poisson stream at rate r is the unit stream
scaled by 1/r, lengths do not depend on the rate), which keeps the search monotone in practice
and makes the answer a pure function of (scenario, peak, space).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from models.errors import LifecostError
from simulator.scenario import Scenario, SloSpec
from simulator.sweep import Executor, LocalExecutor, run_sweep

WARMUP_FRACTION = 0.10
# A rate so high that every request is queued at t ≈ 0: the run measures the replica's
# saturated completion rate, the upper bracket of the bisection.
SATURATION_PROBE_QPS = 1.0e6
# The "near zero load" probe as a fraction of the saturated rate: if the SLO is missed even
# there, adding replicas cannot help (per-replica load only falls towards zero).
LOW_LOAD_FRACTION = 0.02
MAX_REPLICAS = 100_000
METRICS = (("ttft_s", "ttft_p99_s", "TTFT"), ("tpot_s", "tpot_p99_s", "TPOT"), ("e2e_s", "e2e_p99_s", "E2E"))


# --- what "meets" means -------------------------------------------------------------------------


def quantile_label(attainment: float) -> str:
    """'p99' for 0.99, 'p99.9' for 0.999, 'p95' for 0.95."""
    return "p" + f"{attainment * 100:.6g}"


@dataclass(frozen=True)
class SloCheck:
    """One simulated run judged against an SLO. Quantiles are at the attainment level A."""

    rate_qps: float  # offered rate per replica (the fleet's rate for a fleet check)
    n_replicas: int
    attainment: float  # fraction of measured requests that attain every bound
    target: float  # A
    n_measured: int
    bounds_s: dict[str, float]  # metric column → bound (only the set ones)
    quantile_s: dict[str, float]  # metric column → its A-quantile (inf when requests never finished)
    percentiles_s: dict[str, float] = field(default_factory=dict)  # e.g. ttft_p50_s, ttft_p99_s
    throughput_req_s: float = math.nan

    @property
    def meets(self) -> bool:
        return self.attainment >= self.target

    @property
    def worst(self) -> tuple[str, float, float]:
        """(metric column, its A-quantile, its bound) for the bound missed by the largest ratio."""
        if not self.bounds_s:
            return ("", math.nan, math.nan)
        col = max(self.bounds_s, key=lambda c: self.quantile_s[c] / self.bounds_s[c])
        return col, self.quantile_s[col], self.bounds_s[col]

    @property
    def miss_ratio(self) -> float:
        """Worst A-quantile ÷ its bound: ≤ 1 within the SLO's quantiles, 1.8 = 80 % over."""
        col, value, bound = self.worst
        return value / bound if col else math.nan

    def describe(self) -> str:
        """'p99 TTFT 1.8 s vs 1.0 s (attainment 93.1% vs 99%)'."""
        col, value, bound = self.worst
        label = dict((c, n) for c, _, n in METRICS).get(col, col)
        q = quantile_label(self.target)
        return f"{q} {label} {_fmt_s(value)} vs {_fmt_s(bound)} (attainment {self.attainment:.1%} vs {self.target:.0%})"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["meets"] = self.meets
        d["miss_ratio"] = self.miss_ratio
        return d


def _fmt_s(x: float) -> str:
    if not math.isfinite(x):
        return "∞ s (never finished)"
    return f"{x * 1000:.3g} ms" if x < 1.0 else f"{x:.3g} s"


def slo_bounds(slo: SloSpec) -> dict[str, float]:
    return {col: getattr(slo, attr) for col, attr, _ in METRICS if getattr(slo, attr) is not None}


def check_slo(frame: pd.DataFrame, slo: SloSpec, *, rate_qps: float = math.nan, n_replicas: int = 1) -> SloCheck:
    """Judge per-request results (`arrival_s`, `ttft_s`, `tpot_s`, `e2e_s`; NaN TTFT/E2E = never
    finished) against `slo`, after dropping the first `WARMUP_FRACTION` of arrivals."""
    ordered = frame.sort_values("arrival_s", kind="stable")
    measured = ordered.iloc[int(len(ordered) * WARMUP_FRACTION) :]
    if measured.empty:
        raise LifecostError("no requests to measure", field="workload.num_requests", fix="simulate at least 10 requests")
    bounds = slo_bounds(slo)
    ok = np.ones(len(measured), dtype=bool)
    quantiles: dict[str, float] = {}
    percentiles: dict[str, float] = {}
    for col, _, _ in METRICS:
        values = measured[col].to_numpy(dtype=np.float64)
        if col == "tpot_s":
            # A one-token output has no inter-token time: it cannot miss a TPOT bound.
            unfinished = np.isnan(measured["e2e_s"].to_numpy(dtype=np.float64))
            values = np.where(unfinished, np.inf, np.where(np.isnan(values), 0.0, values))
        else:
            values = np.where(np.isnan(values), np.inf, values)
        for p in (50, 90, 99):
            percentiles[f"{col.removesuffix('_s')}_p{p}_s"] = float(np.quantile(values, p / 100, method="higher"))
        if col in bounds:
            ok &= values <= bounds[col]
            quantiles[col] = float(np.quantile(values, slo.attainment, method="higher"))
    finish = (ordered["arrival_s"] + ordered["e2e_s"]).to_numpy(dtype=np.float64)
    done = np.isfinite(finish)
    span = float(np.nanmax(finish) - ordered["arrival_s"].min()) if done.any() else math.nan
    return SloCheck(
        rate_qps=float(rate_qps),
        n_replicas=int(n_replicas),
        attainment=float(ok.mean()),
        target=float(slo.attainment),
        n_measured=int(len(measured)),
        bounds_s=bounds,
        quantile_s=quantiles,
        percentiles_s=percentiles,
        throughput_req_s=float(done.sum() / span) if span and span > 0 else math.nan,
    )


# --- one probe = one simulation ---------------------------------------------------------------


def _request_frame(result: Any) -> pd.DataFrame:
    """The per-request columns `check_slo` reads, from an engine `Result`."""
    return result.requests


def at_steady_rate(scenario: Scenario) -> Scenario:
    """The scenario as capacity probes run it: a diurnal process becomes Poisson at the probe's
    rate (a probe asks "can a replica hold this rate?", and a few minutes of simulated traffic
    would otherwise sit in one hour of the daily shape). Gamma keeps its burstiness (cv) and a
    trace its own inter-arrival pattern, time-scaled to the probe's rate. A probe is one replica
    (one prefill + decode group when disaggregated): `cluster.replicas` and autoscaling are the
    answer being searched for, not part of the probe."""
    changes: dict[str, Any] = {}
    if scenario.workload.arrival.kind == "diurnal":
        changes["workload.arrival.kind"] = "poisson"
    if scenario.cluster.replicas != 1 or scenario.cluster.autoscale.enabled:
        changes |= {"cluster.replicas": 1, "cluster.autoscale.enabled": False}
    return scenario.with_changes(**changes) if changes else scenario


def simulate_requests_frame(scenario: Scenario, *, rate_qps: float | None = None, requests: Any = None, num_requests: int | None = None, seed: int | None = None) -> pd.DataFrame:
    from simulator.engine import simulate

    result = simulate(at_steady_rate(scenario), requests, num_requests=num_requests, rate_qps=rate_qps, seed=seed)
    return _request_frame(result)


@dataclass(frozen=True)
class Probe:
    """One replica simulated at `rate_qps` (picklable: it crosses process/Ray boundaries)."""

    scenario: Scenario
    rate_qps: float
    num_requests: int | None = None
    n_replicas: int = 1  # recorded only: the probe is one replica of an N-replica fleet

    def __call__(self) -> SloCheck:
        frame = simulate_requests_frame(self.scenario, rate_qps=self.rate_qps, num_requests=self.num_requests)
        return check_slo(frame, self.scenario.slo, rate_qps=self.rate_qps, n_replicas=self.n_replicas)


def run_probe(probe: Probe) -> SloCheck:
    return probe()


def probe_row(probe: Probe) -> dict[str, Any]:
    """A probe as one flat sweep row (scalars only): rate, attainment, meets, percentiles."""
    c = probe()
    return {"rate_qps": c.rate_qps, "attainment": c.attainment, "meets_slo": c.meets, "n_measured": c.n_measured, "throughput_req_s": c.throughput_req_s, **c.percentiles_s}


# --- 1. max rate per replica ------------------------------------------------------------------


@dataclass(frozen=True)
class RateSearch:
    """The bisection's outcome: the highest probed rate that met the SLO, and every probe."""

    max_rate_qps: float  # 0.0 when even the near-zero-load probe misses
    saturation_qps: float
    checks: tuple[SloCheck, ...]

    @property
    def feasible(self) -> bool:
        return self.max_rate_qps > 0

    @property
    def low_load_check(self) -> SloCheck:
        return min(self.checks, key=lambda c: c.rate_qps)


def saturation_qps(scenario: Scenario, num_requests: int | None = None) -> float:
    """One replica's throughput ceiling (req/s): all requests queued at t ≈ 0, completions per
    second over the middle 80 % of completions. The first completions come before the batch has
    filled and the last after it has drained, so completions ÷ makespan would understate the
    steady full-batch rate (by about 2× in a 400-request run). No offered rate above the ceiling
    is sustainable: the queue would grow without bound."""
    frame = simulate_requests_frame(scenario, rate_qps=SATURATION_PROBE_QPS, num_requests=num_requests)
    finish = np.sort(frame["finish_s"].to_numpy(dtype=np.float64))
    finish = finish[np.isfinite(finish)]
    n = finish.shape[0]
    lo, hi = int(0.1 * n), min(int(0.9 * n), n - 1)
    span = float(finish[hi] - finish[lo]) if n >= 2 else 0.0
    if span <= 0:
        span, count = float(finish[-1]) if n else 0.0, n
    else:
        count = hi - lo
    if not (count > 0 and span > 0):
        raise LifecostError("the simulated replica finished no requests", field="engine", fix="check max_model_len_tok and the request lengths")
    return count / span


def find_max_rate(scenario: Scenario, *, rtol: float = 0.05, num_requests: int | None = None, saturation: float | None = None) -> RateSearch:
    """Bisection on one replica's offered rate, within [LOW_LOAD_FRACTION × sat, sat).

    sat = `saturation_qps`: a finite simulation at or above it can still look fine (its backlog
    only has the run's length to build up), so those rates are never called sustainable; when
    the SLO is loose, the answer approaches sat from below (the throughput ceiling binds before
    the latency bounds). A miss at the low probe means no rate meets the SLO. Bisection stops
    when the bracket is within `rtol` of its top (≈ 5 probes for 5 %).
    """
    checks: list[SloCheck] = []

    def probe(rate: float) -> SloCheck:
        c = Probe(scenario, rate, num_requests)()
        checks.append(c)
        return c

    sat = saturation if saturation is not None and saturation > 0 else saturation_qps(scenario, num_requests)  # NaN > 0 is False

    def done(rate: float) -> RateSearch:
        return RateSearch(rate, sat, tuple(sorted(checks, key=lambda c: c.rate_qps)))

    low, hi = sat * LOW_LOAD_FRACTION, sat
    if not probe(low).meets:
        return done(0.0)
    # `hi` = sat is a miss by definition (utilisation 1 is never stable: the queue's waiting
    # time grows without bound as utilisation → 1, Kingman 1961), so it is not simulated.
    while (hi - low) > rtol * hi:
        mid = 0.5 * (low + hi)
        if probe(mid).meets:
            low = mid
        else:
            hi = mid
    return done(low)


def max_rate_meeting_slo(scenario: Scenario, *, rtol: float = 0.05, num_requests: int | None = None) -> float:
    """Highest request rate (req/s) one replica of `scenario` serves within its SLO (0 if none)."""
    return find_max_rate(scenario, rtol=rtol, num_requests=num_requests).max_rate_qps


# --- 2. replicas for a peak -------------------------------------------------------------------


def _subset(requests: Any, mask: np.ndarray) -> Any:
    from simulator.workload import Requests

    return Requests(
        arrival_s=requests.arrival_s[mask],
        prompt_tok=requests.prompt_tok[mask],
        output_tok=requests.output_tok[mask],
        class_id=requests.class_id[mask],
        priority=requests.priority[mask],
        prefix_id=requests.prefix_id[mask],
        prefix_tok=requests.prefix_tok[mask],
        class_names=requests.class_names,
        thinking_tok=requests.thinking_tok[mask],
        reasoning_on=requests.reasoning_on[mask],
    )


def _simulate_share(job: tuple[Scenario, Any]) -> pd.DataFrame:
    scenario, requests = job
    return simulate_requests_frame(scenario, requests=requests)


def fleet_check(scenario: Scenario, peak_qps: float, n_replicas: int, *, num_requests: int | None = None, executor: Executor | None = None, router: str | None = None) -> SloCheck:
    """Simulate N replicas behind a uniformly random router at `peak_qps` and pool the requests.

    The peak stream has N × `num_requests` requests (each replica sees about `num_requests`);
    the router's choice is seeded from the scenario's seed, independently of the stream.
    With `router` (a `simulator.router.ROUTERS` name) the whole fleet is instead simulated as
    one routed cluster (`simulator/cluster.py`; N prefill + decode groups when disaggregated),
    so a load-aware router's better balance counts; one process, no executor.
    """
    from simulator.workload import generate_requests

    per_replica = num_requests or scenario.workload.num_requests
    stream = generate_requests(
        at_steady_rate(scenario).workload,
        seed=scenario.seed,
        num_requests=per_replica * n_replicas,
        rate_qps=peak_qps,
        max_model_len_tok=scenario.engine.max_model_len_tok,
    )
    if router is not None:
        from simulator.engine import simulate

        steady = at_steady_rate(scenario)
        d = steady.cluster.disaggregated
        size = {"cluster.disaggregated.prefill_replicas": d.prefill_replicas * n_replicas, "cluster.disaggregated.decode_replicas": d.decode_replicas * n_replicas} if d.enabled else {"cluster.replicas": n_replicas}
        fleet = steady.with_changes(**{"cluster.router": router}, **size)
        return check_slo(_request_frame(simulate(fleet, stream)), scenario.slo, rate_qps=peak_qps, n_replicas=n_replicas)
    route = np.random.default_rng(np.random.SeedSequence([scenario.seed, 0x524F555445])).integers(0, n_replicas, size=len(stream))
    jobs = [(scenario, _subset(stream, route == r)) for r in range(n_replicas) if np.any(route == r)]
    executor = executor or LocalExecutor(1)
    frames = list(executor.map_unordered(_simulate_share, jobs))
    pooled = pd.concat(frames, ignore_index=True)
    return check_slo(pooled, scenario.slo, rate_qps=peak_qps, n_replicas=n_replicas)


@dataclass(frozen=True)
class ReplicaAnswer:
    """The fewest replicas N for `peak_qps`, with the checks that justify it."""

    peak_qps: float
    replicas: int  # 0 when no rate meets the SLO (more replicas cannot help)
    max_rate_qps: float  # one replica's max rate within the SLO (`find_max_rate`)
    split_estimate: int  # ⌈peak ÷ max rate⌉: the answer under the Poisson-splitting property
    fleet_checks: dict[int, SloCheck] = field(default_factory=dict)  # N → the routed fleet at the peak
    saturation_qps: float = math.inf  # one replica's throughput ceiling (see `saturation_qps`)

    def fleet_meets(self, check: SloCheck | None, n: int) -> bool:
        return check is not None and n > 0 and check.meets and self.peak_qps / n < self.saturation_qps

    @property
    def fleet_at_n(self) -> SloCheck | None:
        return self.fleet_checks.get(self.replicas)

    @property
    def fleet_at_n_minus_1(self) -> SloCheck | None:
        return self.fleet_checks.get(self.replicas - 1)

    @property
    def verified(self) -> bool:
        """N meets the SLO at the peak by fleet simulation and N − 1 does not."""
        n = self.replicas
        fewer_fails = n == 1 or (self.fleet_at_n_minus_1 is not None and not self.fleet_meets(self.fleet_at_n_minus_1, n - 1))
        return self.fleet_meets(self.fleet_at_n, n) and fewer_fails


def replicas_needed(
    scenario: Scenario,
    peak_qps: float,
    *,
    hint: int | None = None,
    verify: bool = True,
    num_requests: int | None = None,
    executor: Executor | None = None,
    max_rate: float | None = None,
    saturation: float | None = None,
    max_fleet_sims: int = 8,
    router: str | None = None,
) -> ReplicaAnswer:
    """Fewest replicas meeting the SLO at `peak_qps`.

    Split-stream answer: with random routing each of N replicas sees Poisson traffic at
    peak / N (module docstring), so N = ⌈peak ÷ r*⌉ with r* = `find_max_rate` (pass `max_rate`
    when it is known). This is monotone by construction — in the peak (a ceiling of a ratio)
    and in the SLO (a bisection whose predicate only gets stricter as the SLO tightens returns
    a rate that is never higher) — which per-N probes at nearby rates are not: two runs at
    144 and 146 req/s can land on either side of a 99 % attainment by sampling noise.

    Verification (`verify`): exponential then binary search over N, each step a simulation of
    the whole routed fleet at the peak (`fleet_check`), starting from `hint` (default the
    split-stream N): the answer is the fewest N whose fleet meets the SLO with N − 1 missing.
    Near the boundary the fleet (N × the requests of one probe) can disagree with the split-
    stream estimate by a replica; it then wins, since it simulates more requests. At most
    `max_fleet_sims` fleets are simulated; if none meets, N stays the split-stream answer and
    `verified` is False. `router` verifies with the whole fleet behind that router instead of
    random splitting (`fleet_check`).
    """
    if not peak_qps > 0:
        raise LifecostError(f"must be > 0, got {peak_qps}", field="--peak-qps")
    sat = saturation if saturation is not None and saturation > 0 else saturation_qps(scenario, num_requests)  # NaN > 0 is False
    if max_rate is None:
        max_rate = find_max_rate(scenario, num_requests=num_requests, saturation=sat).max_rate_qps
    if not max_rate > 0:
        return ReplicaAnswer(peak_qps, 0, 0.0, 0, saturation_qps=sat)
    estimate = max(1, math.ceil(peak_qps / max_rate - 1e-12))
    if not verify:
        return ReplicaAnswer(peak_qps, estimate, max_rate, estimate, saturation_qps=sat)

    fleet: dict[int, SloCheck] = {}
    answer = ReplicaAnswer(peak_qps, estimate, max_rate, estimate, fleet, sat)

    def ok(n: int) -> bool | None:
        """Fleet of n meets the SLO at the peak; None when the simulation budget is spent."""
        if n <= 0:
            return False
        if n not in fleet:
            if len(fleet) >= max_fleet_sims:
                return None
            fleet[n] = fleet_check(scenario, peak_qps, n, num_requests=num_requests, executor=executor, router=router)
        return answer.fleet_meets(fleet[n], n)

    start = max(1, int(hint or estimate))
    first = ok(start)
    if first:
        hi, step = start, 1  # meets: step down until a fleet misses
        while (r := ok(hi - step)) is True:
            hi, step = hi - step, step * 2
        lo = max(0, hi - step)
    else:
        lo, step = start, 1  # misses: step up until a fleet meets
        while (r := ok(lo + step)) is False:
            lo, step = lo + step, step * 2
        if r is None:
            return answer
        hi = lo + step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r = ok(mid)
        if r is None:
            break
        lo, hi = (lo, mid) if r else (mid, hi)
    ok(hi - 1)  # record the N − 1 fleet for the verification
    return ReplicaAnswer(peak_qps, hi, max_rate, estimate, fleet, sat)


# --- 3. the cheapest configuration ------------------------------------------------------------

SEARCH_DIMENSIONS = {
    # CLI name → (Scenario dotted field, default values searched when named without values)
    "gpu": ("gpu.name", None),  # None: every catalog GPU with a price under the scenario's pricing
    "tp": ("gpu.tensor_parallel", [1, 2, 4, 8]),
    "max-num-seqs": ("engine.max_num_seqs", [32, 64, 128, 256, 512]),
    "max-num-batched-tokens": ("engine.max_num_batched_tokens", [2048, 4096, 8192, 16384]),
    "quant": ("model.quant", ["bf16", "fp8", "int8", "int4-awq"]),
    "kv-dtype": ("model.kv_dtype", ["bf16", "fp8"]),
    "speculative": ("speculative.method", ["none", "eagle", "ngram"]),
    "offload": ("offload.enabled", [False, True]),
}


def _coerce(current: Any, raw: str, name: str) -> Any:
    """A CLI value as the type of the field it replaces (bool accepts true/false/yes/no/on/off/1/0)."""
    if isinstance(current, bool):
        low = raw.lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        raise LifecostError(f"cannot read {raw!r} as true/false", field=f"--search {name}", fix="use true or false, e.g. offload=false/true")
    try:
        return type(current)(raw) if current is not None else raw
    except ValueError:
        raise LifecostError(f"cannot read {raw!r} as {type(current).__name__}", field=f"--search {name}", fix="separate values with '/', e.g. tp=1/2/4") from None


class SearchSpace(BaseModel):
    """Values to try per dimension (Scenario dotted field → values). A field not listed keeps
    the scenario's value. Built from the CLI's `--search gpu,tp=1/2,quant` by `parse_search`.
    Every combination is a full Scenario re-validated by pydantic (`Scenario.with_changes`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    values: dict[str, list[Any]] = Field(default_factory=dict)

    def configs(self, scenario: Scenario) -> list[dict[str, Any]]:
        """Every combination, as {dotted field: value}, in a stable order."""
        fields = sorted(self.values)
        return [dict(zip(fields, combo)) for combo in itertools.product(*(self.values[f] for f in fields))]


def _priced_gpus(scenario: Scenario) -> list[str]:
    from models.gpus import list_gpus
    from models.prices import load_prices, price_per_gpu_hour

    sheet = load_prices(scenario.prices.sheet)
    names = []
    for name in list_gpus():
        try:
            price_per_gpu_hour(sheet, scenario.prices.provider, name, scenario.prices.pricing)
        except LifecostError:
            continue
        names.append(name)
    return names


def parse_search(spec: str | None, scenario: Scenario) -> SearchSpace:
    """`"gpu,tp=1/2,max-num-seqs,quant=bf16/int4-awq"` → a SearchSpace (names from SEARCH_DIMENSIONS)."""
    values: dict[str, list[Any]] = {}
    for part in (p.strip() for p in (spec or "").split(",")):
        if not part:
            continue
        name, _, given = part.partition("=")
        name = name.strip().replace("_", "-")
        if name not in SEARCH_DIMENSIONS:
            from models.errors import unknown_name

            raise unknown_name("--search dimension", name, list(SEARCH_DIMENSIONS))
        dotted, default = SEARCH_DIMENSIONS[name]
        if given:
            current = _get(scenario, dotted)
            vals = [_coerce(current, v.strip(), name) for v in given.split("/") if v.strip()]
        elif default is None:
            vals = _priced_gpus(scenario)
        else:
            vals = list(default)
        values[dotted] = vals
    return SearchSpace(values=values)


def _get(scenario: Scenario, dotted: str) -> Any:
    node: Any = scenario
    for p in dotted.split("."):
        node = getattr(node, p)
    return node


def usd_per_gpu_hour(scenario: Scenario, *, use_override: bool = True) -> float:
    """The scenario's $/GPU-hour (`models.prices.gpu_hour_price`): `prices.usd_per_gpu_hour`
    when set and `use_override`, else the sheet's row for (provider, GPU, pricing); a missing
    row is a LifecostError naming what the sheet has. On-prem: the capital part only."""
    from models.prices import gpu_hour_price, load_prices

    override = scenario.prices.usd_per_gpu_hour if use_override else None
    sheet = load_prices(scenario.prices.sheet)
    return float(gpu_hour_price(sheet, scenario.prices.provider, scenario.gpu.name, scenario.prices.pricing, override).usd_per_gpu_hour)


def _bare(err: LifecostError) -> str:
    """The error's message without its field prefix and fix suffix (for a table cell)."""
    text = str(err)
    if err.field and text.startswith(f"{err.field}: "):
        text = text[len(err.field) + 2 :]
    return text.split(" — ")[0]


def memory_verdict(scenario: Scenario) -> tuple[bool, str]:
    """(fits, why) from `models.memory.serving_memory_plan`: weights + activation reserve +
    runtime overhead + one max_model_len sequence of KV must fit in the usable HBM per GPU."""
    from models.catalog import load_model
    from models.gpus import load_gpu
    from models.memory import serving_memory_plan

    e = scenario.engine
    try:
        plan = serving_memory_plan(
            load_model(scenario.model.name),
            load_gpu(scenario.gpu.name),
            scenario.model.quant,
            scenario.model.kv_dtype,
            e.gpu_memory_utilization,
            tensor_parallel=scenario.gpu.tensor_parallel,
            max_model_len_tok=e.max_model_len_tok,
            max_num_batched_tokens=e.max_num_batched_tokens,
            max_num_seqs=e.max_num_seqs,
        )
    except LifecostError as err:
        if err.field == "tensor_parallel":  # e.g. heads that do not split over this TP
            return False, "cannot run: " + _bare(err)
        raise
    if not plan.fits:
        return False, f"does not fit: needs {plan.needed_gib:.1f} GiB/GPU, {plan.usable_gib:.1f} GiB usable"
    from simulator.predictor import make_predictor

    try:  # a configuration the step-time model cannot run (e.g. TP without NVLink, KV heads that TP cannot shard) is pruned too
        from simulator.cluster import check_tensor_parallel

        check_tensor_parallel(load_model(scenario.model.name), scenario.gpu.tensor_parallel)
        make_predictor(scenario)
    except LifecostError as err:
        if err.field in ("gpu.tensor_parallel", "model.quant"):
            return False, "cannot run: " + _bare(err)
        raise
    return True, f"fits: {plan.kv_gib:.1f} GiB/GPU for KV ({plan.max_kv_tokens:,} tokens)"


@dataclass(frozen=True)
class ConfigJob:
    """Evaluate one configuration (picklable for the sweep executors)."""

    scenario: Scenario
    peak_qps: float
    num_requests: int | None
    rtol: float
    saturation_qps: float | None = None


def evaluate_saturation(job: ConfigJob) -> dict[str, Any]:
    """Stage 1 sweep row: the configuration's throughput ceiling (one simulation)."""
    return {"saturation_qps": saturation_qps(job.scenario, job.num_requests)}


EVALUATE_COLUMNS = (
    "max_qps_per_replica",
    "probes",
    "replicas_est",
    "low_load_qps",
    "low_load_worst_metric",
    "low_load_worst_s",
    "low_load_bound_s",
    "low_load_attainment",
    "low_load_miss",
)


def evaluate_config(job: ConfigJob) -> dict[str, Any]:
    """Stage 2 sweep row: the configuration's max rate per replica and the replicas it implies."""
    rs = find_max_rate(job.scenario, rtol=job.rtol, num_requests=job.num_requests, saturation=job.saturation_qps)
    low = rs.low_load_check
    col, value, bound = low.worst
    replicas = math.ceil(job.peak_qps / rs.max_rate_qps) if rs.feasible else 0
    return {
        "max_qps_per_replica": rs.max_rate_qps,
        "probes": len(rs.checks),
        "replicas_est": replicas,
        "low_load_qps": low.rate_qps,
        "low_load_worst_metric": col,
        "low_load_worst_s": value,
        "low_load_bound_s": bound,
        "low_load_attainment": low.attainment,
        "low_load_miss": low.describe(),
    }


def _workers(executor: Executor | None) -> int:
    """How many configurations to evaluate per round: the executor's parallelism."""
    if executor is None:
        return 1
    n = getattr(executor, "workers", None) or getattr(executor, "num_cpus", None)
    if n is None and type(executor).__name__ == "RayExecutor":
        import ray

        n = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 2
    return max(1, int(n or 1))


def _variant(scenario: Scenario, config: dict[str, Any]) -> Scenario:
    """The scenario with one configuration's fields set; an invalid value is a user error."""
    from pydantic import ValidationError

    try:
        return scenario.with_changes(**config) if config else scenario
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise LifecostError(err["msg"].removeprefix("Value error, "), field=f"--search {field}", fix="see `lifecost capacity --help` for the values each dimension takes") from None


def config_key(config: dict[str, Any]) -> str:
    return ",".join(f"{k}={config[k]}" for k in sorted(config)) or "scenario"


@dataclass
class CapacityAnswer:
    """The result of a capacity search — also when no configuration meets the SLO.

    `meets` False: `closest` names the configuration whose near-zero-load run came nearest the
    SLO and `miss` says by how much it misses (e.g. "p99 TTFT 1.80 s vs 1.00 s …").
    """

    meets: bool
    peak_qps: float
    slo: dict[str, Any]
    config: dict[str, Any]  # the chosen (or closest) configuration: dotted field → value
    scenario: Scenario
    replicas: int
    gpus_per_replica: int
    usd_per_gpu_hour: float
    max_qps_per_replica: float
    verified: bool
    verification: dict[str, Any]  # "n" / "n_minus_1" → SloCheck dicts
    candidates: pd.DataFrame  # every configuration: pruned, evaluated, cost
    miss: str | None = None

    @property
    def total_gpus(self) -> int:
        return self.replicas * self.gpus_per_replica

    @property
    def usd_per_hour(self) -> float:
        return self.total_gpus * self.usd_per_gpu_hour

    def summary(self) -> dict[str, Any]:
        """Plain JSON-able figures (the CLI's `--json`)."""
        return {
            "meets_slo": self.meets,
            "peak_qps": self.peak_qps,
            "slo": self.slo,
            "config": self.config,
            "replicas": self.replicas,
            "gpus_per_replica": self.gpus_per_replica,
            "total_gpus": self.total_gpus,
            "usd_per_gpu_hour": self.usd_per_gpu_hour,
            "usd_per_hour": self.usd_per_hour,
            "usd_per_month": self.usd_per_hour * 730.0,
            "max_qps_per_replica": self.max_qps_per_replica,
            "verified_by_fleet_simulation": self.verified,
            "verification": self.verification,
            "miss": self.miss,
            "candidates": self.candidates.to_dict(orient="records"),
        }


def search(
    scenario: Scenario,
    peak_qps: float,
    space: SearchSpace | None = None,
    *,
    executor: Executor | None = None,
    out_parquet: str | Path | None = None,
    num_requests: int | None = None,
    rtol: float = 0.05,
    verify: bool = True,
    progress: bool = False,
) -> CapacityAnswer:
    """The cheapest configuration (replicas × GPUs per replica × $/GPU-hour) meeting the SLO at
    `peak_qps` — branch and bound, every simulation through `executor`:

    0. Prune: a configuration that cannot load (memory plan) or run (e.g. TP without NVLink) is
       never simulated; every other is priced (a missing price is a LifecostError).
    1. Bound (one simulation each, in parallel): the throughput ceiling sat. Any replica count
       must exceed peak / sat, so cost ≥ (⌊peak / sat⌋ + 1) × GPUs × price: a lower bound.
    2. Branch: in order of that bound, `find_max_rate` (≈ 6 simulations) on as many
       configurations at a time as the executor runs in parallel, until every configuration not
       yet evaluated has a lower bound above the cheapest estimate ⌈peak / max rate⌉ × GPUs × price.
    3. Confirm: `replicas_needed` (with fleet verification) on the cheapest estimate; if that
       moves its cost above another estimate or bound, those are evaluated/confirmed as well,
       and the cheapest confirmed wins (ties: the fleet with more capacity).

    With `out_parquet` both stages' rows go to one resumable table (keys prefixed `sat|` and
    `rate|`). The answer does not depend on the executor or on the number of workers.
    """
    if not peak_qps > 0:
        raise LifecostError(f"must be > 0, got {peak_qps}", field="--peak-qps")
    space = space or SearchSpace()
    rows: list[dict[str, Any]] = []
    jobs: dict[str, ConfigJob] = {}
    variants: dict[str, tuple[dict[str, Any], Scenario]] = {}
    for config in space.configs(scenario):
        variant = _variant(scenario, config)
        # The key names the configuration and everything its evaluation depends on, so a
        # resumed `out_parquet` never serves rows computed for another SLO, peak or workload.
        key = f"{config_key(config)} @{variant.digest()[:10]} peak={peak_qps:g} n={num_requests or variant.workload.num_requests} rtol={rtol:g}"
        fits, why = memory_verdict(variant)
        # A fixed $/GPU-hour override prices the scenario's own GPU, not the others searched.
        price = usd_per_gpu_hour(variant, use_override=variant.gpu.name == scenario.gpu.name) if fits else math.nan
        rows.append({"key": key, **config, "fits_memory": fits, "memory": why, "usd_per_gpu_hour": price, "gpus_per_replica": variant.gpu.tensor_parallel})
        variants[key] = (config, variant)
        if fits:
            jobs[key] = ConfigJob(variant, peak_qps, num_requests, rtol)
    table = pd.DataFrame(rows).set_index("key", drop=False).rename_axis(None)
    for col, init in (("saturation_qps", np.nan), ("usd_per_hour_bound", np.nan), ("max_qps_per_replica", np.nan), ("replicas_est", np.nan), ("usd_per_hour_est", np.nan)):
        table[col] = init
    slo = scenario.slo.model_dump()

    def sweep(fn: Any, prefix: str, keys: list[str], label: str) -> pd.DataFrame:
        items = {f"{prefix}|{k}": (jobs[k] if prefix == "sat" else _with_sat(jobs[k], table.at[k, "saturation_qps"])) for k in keys}
        out = run_sweep(fn, items, out_parquet, executor, progress=progress, label=label)
        # One parquet holds both stages: keep this stage's rows and only the columns it wrote.
        out = out[out["key"].isin(items)].dropna(axis=1, how="all").copy()
        out["key"] = out["key"].str.removeprefix(f"{prefix}|")
        return out.set_index("key")

    if jobs:
        sat = sweep(evaluate_saturation, "sat", list(jobs), "capacity search: ceilings")
        table.loc[sat.index, "saturation_qps"] = sat["saturation_qps"]
        t = table.loc[list(jobs)]
        table.loc[t.index, "usd_per_hour_bound"] = (np.floor(peak_qps / t["saturation_qps"]) + 1) * t["gpus_per_replica"] * t["usd_per_gpu_hour"]

    evaluated: set[str] = set()
    confirmed: dict[str, tuple[float, ReplicaAnswer]] = {}
    batch = _workers(executor)

    def evaluate(keys: list[str]) -> None:
        res = sweep(evaluate_config, "rate", keys, "capacity search: max rate")
        for col in res.columns.intersection(EVALUATE_COLUMNS):
            if col not in table.columns:
                table[col] = np.nan if res[col].dtype.kind in "fiu" else None
            table.loc[res.index, col] = res[col]
        est = table.loc[res.index]
        table.loc[res.index, "usd_per_hour_est"] = np.where(est["replicas_est"] > 0, est["replicas_est"] * est["gpus_per_replica"] * est["usd_per_gpu_hour"], np.nan)
        evaluated.update(keys)

    def best_known() -> float:
        """The cheapest cost known to be achievable: confirmed, else estimated, else ∞."""
        costs = [c for c, _ in confirmed.values()] + [table.at[k, "usd_per_hour_est"] for k in evaluated if k not in confirmed]
        costs = [c for c in costs if c == c]
        return min(costs, default=math.inf)

    while True:
        # Branch: evaluate while some unevaluated configuration could still be cheaper.
        while True:
            bound = best_known()
            # ≤, not <: a configuration that could tie the best is evaluated too, so the tie-break
            # (and the answer) does not depend on how many configurations run per round.
            open_keys = sorted((k for k in jobs if k not in evaluated and table.at[k, "usd_per_hour_bound"] <= bound), key=lambda k: (table.at[k, "usd_per_hour_bound"], k))
            if not open_keys:
                break
            evaluate(open_keys[:batch])
        # Confirm the cheapest unconfirmed estimate if it could beat every confirmed one.
        pending = sorted((k for k in evaluated if k not in confirmed and table.at[k, "usd_per_hour_est"] == table.at[k, "usd_per_hour_est"]), key=lambda k: (table.at[k, "usd_per_hour_est"], k))
        best_confirmed = min((c for c, _ in confirmed.values()), default=math.inf)
        if not pending or table.at[pending[0], "usd_per_hour_est"] > best_confirmed:
            break
        k = pending[0]
        _, variant = variants[k]
        ans = replicas_needed(
            variant,
            peak_qps,
            verify=verify,
            num_requests=num_requests,
            executor=executor,
            max_rate=float(table.at[k, "max_qps_per_replica"]),
            saturation=float(table.at[k, "saturation_qps"]),
        )
        cost = ans.replicas * table.at[k, "gpus_per_replica"] * table.at[k, "usd_per_gpu_hour"] if ans.replicas > 0 else math.inf
        confirmed[k] = (cost, ans)

    table["replicas_confirmed"] = table["key"].map({k: a.replicas for k, (_, a) in confirmed.items()})
    table["evaluated"] = table["key"].isin(evaluated)
    table = table.sort_values(["usd_per_hour_est", "usd_per_hour_bound", "key"], na_position="last", kind="stable").reset_index(drop=True)
    winners = [(c, k, a) for k, (c, a) in confirmed.items() if a.replicas > 0]
    if not winners:
        return _infeasible(scenario, peak_qps, slo, table, variants)
    # Cheapest; on a tie in dollars, the fleet with more capacity (more headroom over the peak).
    cost, key, ans = min(winners, key=lambda w: (w[0], -w[2].replicas * float(table.loc[table["key"] == w[1], "max_qps_per_replica"].iloc[0]), w[1]))
    config, variant = variants[key]
    row = table[table["key"] == key].iloc[0]
    return CapacityAnswer(
        meets=True,
        peak_qps=peak_qps,
        slo=slo,
        config=config or {"gpu.name": variant.gpu.name},
        scenario=variant,
        replicas=ans.replicas,
        gpus_per_replica=variant.gpu.tensor_parallel,
        usd_per_gpu_hour=float(row["usd_per_gpu_hour"]),
        max_qps_per_replica=float(row["max_qps_per_replica"]),
        verified=ans.verified if verify else False,
        verification={
            "n": ans.fleet_at_n.to_dict() if ans.fleet_at_n else None,
            "n_minus_1": ans.fleet_at_n_minus_1.to_dict() if ans.fleet_at_n_minus_1 else None,
        },
        candidates=table,
    )


def candidates_summary(cand: pd.DataFrame) -> pd.DataFrame:
    """The searched configurations for people (CLI table, report): the knobs, then the ceiling,
    max rate, replicas, $/hour and a note: `simulated` (replica count searched by simulation),
    `estimate` (⌈peak ÷ max rate⌉), `pruned: ≥ $X/h` (never bisected: its ceiling bounds the
    cost above the answer), `misses at ~0 load: …`, or why it cannot load/run."""
    knobs = [c for c in cand.columns if "." in c]
    rows = []
    for _, r in cand.iterrows():
        confirmed = r.get("replicas_confirmed")
        is_confirmed = confirmed is not None and confirmed == confirmed
        estimate = r.get("replicas_est")
        replicas = confirmed if is_confirmed else estimate
        if not r["fits_memory"]:
            note, replicas, cost = r["memory"], None, None
        elif not r.get("evaluated", True):
            note, replicas, cost = f"pruned: ≥ ${r['usd_per_hour_bound']:,.2f}/h", None, None
        elif not estimate:
            note, replicas, cost = "misses at ~0 load: " + str(r.get("low_load_miss")).split(" (")[0], None, None
        else:
            note = "simulated" if is_confirmed else "estimate"
            cost = replicas * r["gpus_per_replica"] * r["usd_per_gpu_hour"]
        rows.append(
            {
                **{c.split(".")[-1]: r[c] for c in knobs},
                "ceiling_qps": r.get("saturation_qps"),
                "max_qps_per_replica": r.get("max_qps_per_replica"),
                "replicas": int(replicas) if replicas is not None and replicas == replicas and replicas > 0 else None,
                "usd_per_hour": cost,
                "note": note,
            }
        )
    return pd.DataFrame(rows)


def _with_sat(job: ConfigJob, sat: float) -> ConfigJob:
    from dataclasses import replace

    return replace(job, saturation_qps=float(sat))


def _infeasible(scenario: Scenario, peak_qps: float, slo: dict[str, Any], table: pd.DataFrame, variants: dict[str, tuple[dict[str, Any], Scenario]]) -> CapacityAnswer:
    evaluated = table[table["fits_memory"]] if "fits_memory" in table else table
    if evaluated.empty:
        # Nothing even loads: the closest is the one needing the least extra memory.
        config, variant = variants[table.iloc[0]["key"]]
        miss = f"no configuration fits in memory; e.g. {config_key(config)}: {table.iloc[0]['memory']}"
        price = math.nan
        max_qps = 0.0
    else:
        ratio = evaluated["low_load_worst_s"] / evaluated["low_load_bound_s"]
        row = evaluated.loc[ratio.idxmin()]
        config, variant = variants[row["key"]]
        miss = f"{row['low_load_miss']} at {row['low_load_qps']:.3g} req/s on 1 replica (near-zero load; more replicas cannot help)"
        price = float(row["usd_per_gpu_hour"])
        max_qps = 0.0
    return CapacityAnswer(
        meets=False,
        peak_qps=peak_qps,
        slo=slo,
        config=config or {"gpu.name": variant.gpu.name},
        scenario=variant,
        replicas=0,
        gpus_per_replica=variant.gpu.tensor_parallel,
        usd_per_gpu_hour=price,
        max_qps_per_replica=max_qps,
        verified=False,
        verification={},
        candidates=table,
        miss=miss,
    )


# --- 4. headroom ------------------------------------------------------------------------------


def headroom_curve(
    scenario: Scenario,
    n_replicas: int,
    rates: Sequence[float] | Iterable[float],
    *,
    num_requests: int | None = None,
    executor: Executor | None = None,
) -> pd.DataFrame:
    """SLO attainment and latency percentiles vs the fleet's offered rate, for `n_replicas`
    replicas behind a random router (each replica simulated at rate / N, see the module
    docstring). One row per rate, sorted by rate."""
    if n_replicas < 1:
        raise LifecostError(f"must be ≥ 1, got {n_replicas}", field="replicas")
    rates = sorted(float(r) for r in rates)
    if not rates or rates[0] <= 0:
        raise LifecostError("rates must be positive", field="rates")
    probes = [Probe(scenario, r / n_replicas, num_requests, n_replicas=n_replicas) for r in rates]
    executor = executor or LocalExecutor(1)
    checks = sorted(executor.map_unordered(run_probe, probes), key=lambda c: c.rate_qps)
    rows = []
    for rate, c in zip(rates, checks):
        rows.append(
            {
                "rate_qps": rate,
                "rate_per_replica_qps": c.rate_qps,
                "replicas": n_replicas,
                "slo_attainment": c.attainment,
                "meets_slo": c.meets,
                **c.percentiles_s,
            }
        )
    return pd.DataFrame(rows)


HEADROOM_FRACTIONS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5)


def headroom_rates(peak_qps: float) -> list[float]:
    """Fleet rates for the headroom curve: from a quarter of the peak to 1.5 × the peak."""
    return [peak_qps * f for f in HEADROOM_FRACTIONS]


def capacity_for_cost(scenario: Scenario, *, num_requests: int | None = None, rtol: float = 0.05) -> Any:
    """One replica's SLO capacity for the cost rollup: `simulator.cost.capacity_from_simulation`,
    which runs `find_max_rate` (one implementation; this name is the capacity-side entry point).
    A LifecostError naming the miss when no rate meets the SLO."""
    from simulator.cost import capacity_from_simulation

    return capacity_from_simulation(scenario, rtol=rtol, num_requests=num_requests)
