"""The SimPy replica loop: schedule → step time → apply, with whole runs of decode steps at once.

Reading guide: `simulate()` is the public entry point (Scenario in, `Result` out). It builds one
`Replica` — a SimPy process owning a `Scheduler` (what runs), a `KVCacheManager` (where its KV
lives) and a `StepTimePredictor` (how long a step takes) — and feeds it requests from an
`ArrivalFeed`. Each turn of the replica loop is BLIS's four phases: form the batch
(`scheduler.schedule()` or `decode_run_limit()`), execute (one `env.timeout` of the predicted
time), complete (`scheduler.update(...)`), record (`Recorder`).

Why runs: between two scheduling events — an arrival that could be admitted, a completion, a
prefill chunk boundary, KV blocks running out — the batch is fixed and each step's time is a
closed-form function of the step index. The loop advances the whole run in ONE timeout
(`predictor.run_time_s`), cut at the step during which the next admissible arrival lands
(`predictor.run_until_s`). Cost per request is then O(1) events, whatever its output length.

Arrivals come from the sorted arrays directly (`SortedFeed`): no SimPy event per arrival. A
multi-replica router instead pushes each request, at its arrival time, into the chosen replica's
`QueueFeed`; the replica then cuts a run in progress at the end of the current step. Replicas
share one `RequestState` and one `Recorder` (arrays by request id); each has its own scheduler,
KV cache and predictor (`make_replica`).
"""

from __future__ import annotations

import math
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import simpy

from models.errors import LifecostError
from simulator.kv_cache import KVCacheManager, blocks_for
from simulator.predictor import StepTimePredictor, make_predictor
from simulator.result import Result, build_requests_frame
from simulator.scheduler import RequestState, Scheduler, check_engine

ProgressFn = Callable[[int, int], None]  # (requests finished, total)


class ArrivalFeed(Protocol):
    """Where a replica's requests come from. `presorted` feeds know every future arrival time
    (the replica then cuts its runs at them); others push requests as they arrive and wake the
    replica (`Replica.arrival_pending`), which cuts a run at the step in progress."""

    presorted: bool

    def take(self, now_s: float, add: Callable[[int], None]) -> float:
        """Hand every request arriving at or before `now_s` to `add` (in arrival order);
        return the next arrival time (inf when none is known)."""

    def exhausted(self) -> bool:
        """No request will ever come again."""

    def wait(self, env: simpy.Environment) -> simpy.Event:
        """An event that fires when the next request may have arrived (the replica is idle)."""


class SortedFeed:
    """Arrivals read straight from a sorted `arrival_s` array (single replica): no event per arrival."""

    presorted = True

    def __init__(self, arrival_s: np.ndarray):
        self._arr = np.ascontiguousarray(arrival_s, np.float64)
        self._v = self._arr.data
        self._n = len(self._arr)
        self._i = 0

    def next_arrival_s(self) -> float:
        return self._v[self._i] if self._i < self._n else math.inf

    def take(self, now_s: float, add: Callable[[int], None]) -> float:
        i, v, n = self._i, self._v, self._n
        while i < n and v[i] <= now_s:
            add(i)
            i += 1
        self._i = i
        return v[i] if i < n else math.inf

    def exhausted(self) -> bool:
        return self._i >= self._n

    def wait(self, env: simpy.Environment) -> simpy.Event:
        return env.timeout(max(self.next_arrival_s() - env.now, 0.0))


class QueueFeed:
    """Requests pushed to one replica by another SimPy process (a router) at their arrival times.

    The router calls `push(rid)` at the request's arrival and `close()` after the last one. A
    replica idle on `wait` is woken; one in the middle of a run is told (`arrival_pending`) and
    cuts the run at the end of the step in progress, as a real engine would see the request at
    its next scheduling point.
    """

    presorted = False

    def __init__(self, env: simpy.Environment):
        self.env = env
        self._queue: deque[int] = deque()
        self._closed = False
        self._wake: simpy.Event | None = None
        self.replica: Replica | None = None  # set by Replica.start

    def push(self, rid: int) -> None:
        self._queue.append(rid)
        self._notify()

    def close(self) -> None:
        self._closed = True
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()
        elif self.replica is not None:
            self.replica.arrival_pending()

    def __len__(self) -> int:
        return len(self._queue)

    def take(self, now_s: float, add: Callable[[int], None]) -> float:
        q = self._queue
        while q:
            add(q.popleft())
        return math.inf

    def exhausted(self) -> bool:
        return self._closed and not self._queue

    def wait(self, env: simpy.Environment) -> simpy.Event:
        self._wake = env.event()
        if self._queue or self._closed:
            self._wake.succeed()
        return self._wake


STEP_COLUMNS = ("start_s", "num_steps", "duration_s", "batch_size", "prefill_tok", "decode_tok", "kv_blocks_used", "replica")
_STEP_DTYPES = {"start_s": np.float64, "duration_s": np.float64, "replica": np.int16}  # the rest: int32


class Recorder:
    """Per-request timestamps (arrays by request id) and the step-run log (one flat float array:
    a single `extend` per run is the cheapest way to log from the hot loop; 8 bytes a field)."""

    def __init__(self, num_requests: int):
        n = num_requests
        self.sched_s = np.full(n, np.nan)
        self.first_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.sched_v, self.first_v, self.finish_v = self.sched_s.data, self.first_s.data, self.finish_s.data
        self.finished = 0
        self.steps = array("d")

    def steps_frame(self):
        """The step-run log as a frame with compact dtypes; releases the log (it is as big as the frame)."""
        import pandas as pd

        flat = np.frombuffer(self.steps, np.float64) if len(self.steps) else np.zeros(0)
        table = flat.reshape(-1, len(STEP_COLUMNS))
        cols = {name: table[:, i].astype(_STEP_DTYPES.get(name, np.int32)) for i, name in enumerate(STEP_COLUMNS)}
        del flat, table
        self.steps = array("d")
        return pd.DataFrame(cols, copy=False)


class Replica:
    """One engine instance: a SimPy process that runs its scheduler against a predictor."""

    def __init__(self, env: simpy.Environment, scheduler: Scheduler, predictor: StepTimePredictor, recorder: Recorder, replica_id: int = 0, *, fast_forward: bool = True):
        self.fast_forward = fast_forward  # False: one event per step (the reference the runs are tested against)
        self.env = env
        self.scheduler = scheduler
        self.predictor = predictor
        self.recorder = recorder
        self.replica_id = replica_id
        self.proc: simpy.Process | None = None
        self._in_run = False

    def start(self, feed: ArrivalFeed, total: int, progress: ProgressFn | None = None) -> simpy.Process:
        """Start the replica loop on `feed` (a pushed feed learns which replica to wake)."""
        if isinstance(feed, QueueFeed):
            feed.replica = self
        self.proc = self.env.process(self.process(feed, total, progress))
        return self.proc

    def arrival_pending(self) -> None:
        """A request was pushed mid-run: cut the run if the request could join the batch."""
        s = self.scheduler
        if self._in_run and len(s.running) < s.max_seqs and (s.priority_policy or not s.num_waiting):
            self._in_run = False  # one interrupt per run is enough; the loop re-arms it
            self.proc.interrupt("arrival")

    def process(self, feed: ArrivalFeed, total: int, progress: ProgressFn | None = None, progress_every: int = 2000):
        """The replica loop (a SimPy generator). Ends when the feed is exhausted and all requests finished."""
        env, sched, pred, rec = self.env, self.scheduler, self.predictor, self.recorder
        kv = sched.kv
        sched_v, first_v, finish_v = rec.sched_v, rec.first_v, rec.finish_v
        log = rec.steps.extend
        tag = float(self.replica_id)
        add, take, running, waiting = sched.add_request, feed.take, sched.running, sched.waiting
        run_limit, run_features, run_until, advance = sched.decode_run_limit, sched.run_features, pred.run_until_s, sched.advance_decode_run
        max_seqs, priority = sched.max_seqs, sched.priority_policy
        inf, fast = math.inf, self.fast_forward
        next_report = progress_every
        t_next = -inf
        presorted = feed.presorted
        while True:
            now = env.now
            if t_next <= now or not presorted:
                t_next = take(now, add)
            if not running and not sched.num_waiting:
                if t_next == inf and feed.exhausted():
                    return
                yield feed.wait(env)
                continue
            k = run_limit() if fast else 0
            if k:
                # a run of k identical decode steps, cut at the step during which a request
                # arrives that could join the batch (room for it, nobody queued ahead)
                f = run_features()
                admissible = t_next != inf and len(running) < max_seqs and (priority or not waiting)
                k, dt = run_until(f, k, t_next - now if admissible else inf)
                if presorted:
                    yield env.timeout(dt)
                else:  # a pushed arrival may cut the run at the end of the step in progress
                    end = now + dt
                    self._in_run = True
                    while True:
                        try:
                            yield env.timeout(max(end - env.now, 0.0))
                            break
                        except simpy.Interrupt:
                            k_cut, dt_cut = run_until(f, k, env.now - now)
                            if k_cut < k:
                                k, dt, end = k_cut, dt_cut, now + dt_cut
                    self._in_run = False
                finished = advance(k)
                log((now, k, dt, f.num_seqs, 0, f.decode_tok, sched.run_peak_blocks, tag))
                first = ()
            else:
                plan = sched.schedule()
                f = plan.features
                if f.prefill_tok + f.decode_tok == 0:
                    raise RuntimeError("scheduler produced an empty step with requests pending (a bug: no progress possible)")
                for rid in plan.admitted:
                    if sched_v[rid] != sched_v[rid]:  # NaN: first time scheduled
                        sched_v[rid] = now
                dt = pred.step_time_s(f)
                log((now, 1, dt, f.num_seqs, f.prefill_tok, f.decode_tok, kv.used_blocks, tag))
                yield env.timeout(dt)
                first, finished = sched.update(plan)
            if first or finished:
                t = env.now
                for rid in first:
                    first_v[rid] = t
                if finished:
                    for rid in finished:
                        finish_v[rid] = t
                    rec.finished += len(finished)
                    if progress is not None and rec.finished >= next_report:
                        progress(rec.finished, total)
                        next_report = rec.finished + progress_every


def _validate_requests(requests, max_model_len_tok: int) -> np.ndarray:
    """Refuse impossible requests; returns output lengths capped at the context limit (as vLLM stops at max_model_len)."""
    prompt = np.asarray(requests.prompt_tok, np.int64)
    output = np.asarray(requests.output_tok, np.int64)
    if len(prompt) == 0:
        raise LifecostError("no requests to simulate", field="workload.num_requests", fix="ask for at least one request")
    bad = np.flatnonzero(prompt < 1)
    if bad.size:
        raise LifecostError(f"request {bad[0]} has prompt_tok {prompt[bad[0]]}", field="requests.prompt_tok", fix="every prompt needs at least one token")
    bad = np.flatnonzero(output < 1)
    if bad.size:
        raise LifecostError(f"request {bad[0]} has output_tok {output[bad[0]]}", field="requests.output_tok", fix="every request generates at least one token")
    bad = np.flatnonzero(prompt >= max_model_len_tok)
    if bad.size:
        raise LifecostError(
            f"request {bad[0]} has a {prompt[bad[0]]}-token prompt, not below max_model_len_tok {max_model_len_tok}",
            field="engine.max_model_len_tok",
            fix="raise engine.max_model_len_tok or cap the workload's prompt lengths",
        )
    arrival = np.asarray(requests.arrival_s, np.float64)
    if not np.all(np.isfinite(arrival)) or (arrival.size > 1 and np.any(np.diff(arrival) < 0)):
        raise LifecostError("arrival times must be finite and sorted", field="requests.arrival_s", fix="sort the requests by arrival")
    return np.minimum(output, max_model_len_tok - prompt)


def kv_capacity_blocks(scenario, card, gpu) -> int:
    """KV blocks one replica holds (memory plan ÷ block size); refuses a model that does not fit."""
    from models.memory import serving_memory_plan

    e, m = scenario.engine, scenario.model
    if e.block_size_tok < 1:
        raise LifecostError(f"block size {e.block_size_tok}", field="engine.block_size_tok", fix="use a positive block size (vLLM: 16)")
    plan = serving_memory_plan(
        card, gpu, m.quant, m.kv_dtype, e.gpu_memory_utilization, tensor_parallel=scenario.gpu.tensor_parallel,
        max_model_len_tok=e.max_model_len_tok, max_num_batched_tokens=e.max_num_batched_tokens, max_num_seqs=e.max_num_seqs,
    )
    blocks = int(plan.max_kv_tokens) // e.block_size_tok
    if scenario.speculative.method != "none":
        # the draft's weights and KV share the KV budget (simulator/speculative.py, `draft_memory`)
        from models.memory import GIB
        from simulator.speculative import draft_memory

        from simulator.speculative import check_speculative

        check_speculative(scenario, card)
        w_bytes, kv_tok_bytes = draft_memory(scenario, card)
        blocks = max(0, int((plan.kv_gib * GIB - w_bytes) / (plan.kv_bytes_per_token + kv_tok_bytes))) // e.block_size_tok
    need_blocks = blocks_for(e.max_model_len_tok, e.block_size_tok)
    if not plan.fits or blocks < need_blocks:
        raise LifecostError(
            f"{card.name} ({m.quant}) needs {plan.needed_gib:.1f} GiB per GPU for weights, activations and one "
            f"{e.max_model_len_tok}-token sequence, but {gpu.name} has {plan.usable_gib:.1f} GiB usable",
            field="model.name",
            fix="use a bigger GPU, more tensor_parallel, quantization, a smaller max_model_len_tok or a higher gpu_memory_utilization",
        )
    return blocks


@dataclass
class SimSetup:
    """Everything a simulation needs, validated once: shared by all replicas of a run."""

    scenario: object
    requests: object
    output_tok: np.ndarray  # output lengths capped at the context limit
    kv_blocks: int  # per replica
    predictor: StepTimePredictor
    t0: float  # perf_counter at the start, for sim_wall_s
    spec_target_steps: np.ndarray | None = None  # speculative decoding: verification steps per request
    spec_tok_per_step: np.ndarray | None = None  # … and its tokens per target step
    offload_tiers: tuple | None = None  # tiered KV offload: (tier configs, KV bytes per block per GPU)


def prepare(
    scenario,
    requests=None,
    *,
    num_requests: int | None = None,
    rate_qps: float | None = None,
    seed: int | None = None,
    predictor: StepTimePredictor | None = None,
    kv_blocks: int | None = None,
) -> SimSetup:
    """Validate the inputs, generate the requests if none are given, size the KV cache, pick the predictor."""
    from models.catalog import load_model
    from models.gpus import load_gpu

    t0 = time.perf_counter()
    if rate_qps is not None and not rate_qps > 0:
        raise LifecostError(f"rate {rate_qps} req/s", field="rate_qps", fix="give a positive arrival rate")
    if num_requests is not None and num_requests < 1:
        raise LifecostError(f"{num_requests} requests", field="num_requests", fix="ask for at least one request")
    e = scenario.engine
    check_engine(e)
    if requests is None:
        from simulator.workload import generate_requests

        requests = generate_requests(
            scenario.workload,
            seed=scenario.seed if seed is None else seed,
            num_requests=num_requests,
            rate_qps=rate_qps,
            max_model_len_tok=e.max_model_len_tok,
        )
    output_tok = _validate_requests(requests, e.max_model_len_tok)
    card = load_model(scenario.model.name)
    gpu = load_gpu(scenario.gpu.name)
    if kv_blocks is None:
        kv_blocks = kv_capacity_blocks(scenario, card, gpu)
    elif kv_blocks < blocks_for(e.max_model_len_tok, e.block_size_tok):
        raise LifecostError(f"{kv_blocks} KV blocks cannot hold one {e.max_model_len_tok}-token sequence", field="kv_blocks", fix="give more blocks or a smaller max_model_len_tok")
    predictor = predictor or make_predictor(scenario, card, gpu)
    setup = SimSetup(scenario, requests, output_tok, kv_blocks, predictor, t0)
    if scenario.offload.enabled:
        from simulator.offload import resolve_tiers

        setup.offload_tiers = resolve_tiers(scenario, card, gpu, getattr(predictor, "profile", None))
    if scenario.speculative.method != "none":
        from simulator.speculative import check_speculative, make_speculative_predictor, request_rates

        check_speculative(scenario, card)
        setup.predictor = make_speculative_predictor(scenario, predictor, card, gpu)
        setup.spec_target_steps, setup.spec_tok_per_step = request_rates(scenario, requests, output_tok, scenario.seed if seed is None else seed)
    return setup


def replica_kv(setup: SimSetup) -> tuple[KVCacheManager, dict]:
    """A replica's own KV cache (with its offload tiers, when enabled) and the per-replica
    options its `Scheduler` takes (speculative rates, offload policy) — every replica builder
    (here, `cluster.Pool`) goes through this, so a feature switch reaches every replica."""
    e = setup.scenario.engine
    kv = KVCacheManager(setup.kv_blocks, e.block_size_tok, e.enable_prefix_caching)
    offload = None
    if setup.offload_tiers is not None:
        from simulator.offload import KvOffload

        offload = kv.offload = KvOffload(*setup.offload_tiers, predictor=setup.predictor, block_size_tok=e.block_size_tok)
    sp = setup.scenario.speculative
    budget_tok = sp.num_draft_tok + 1 if setup.spec_tok_per_step is not None else 1
    return kv, {"tok_per_step": setup.spec_tok_per_step, "decode_budget_tok": budget_tok, "offload": offload}


def make_replica(env: simpy.Environment, setup: SimSetup, state: RequestState, recorder: Recorder, replica_id: int = 0, *, fast_forward: bool = True) -> Replica:
    """One replica with its own scheduler and KV cache over the shared request state and recorder."""
    kv, options = replica_kv(setup)
    sched = Scheduler(setup.requests, setup.output_tok, setup.scenario.engine, kv, state, **options)
    return Replica(env, sched, setup.predictor, recorder, replica_id, fast_forward=fast_forward)


def collect_result(setup: SimSetup, state: RequestState, recorder: Recorder, replicas: list[Replica]) -> Result:
    """The Result of a finished simulation (checks every request finished)."""
    n = len(setup.requests)
    if recorder.finished != n:
        raise RuntimeError(f"simulation ended with {n - recorder.finished} of {n} requests unfinished (a bug)")
    e, scenario = setup.scenario.engine, setup.scenario
    frame = build_requests_frame(setup.requests, setup.output_tok, recorder.sched_s, recorder.first_s, recorder.finish_s, state.preemptions, state.prefix_hit_tok, scenario.slo)
    frame["generated_tok"] = state.gen  # tokens the scheduler sampled for each request (must equal output_tok)
    kvs = [r.scheduler.kv for r in replicas]
    meta = {
        "scenario": scenario.name,
        "predictor": setup.predictor.name,
        "kv_capacity_blocks": setup.kv_blocks,  # per replica
        "block_size_tok": e.block_size_tok,
        "num_replicas": len(replicas),
        "gpus_per_replica": scenario.gpu.tensor_parallel,
        "kv_evicted_blocks": sum(kv.evicted_blocks for kv in kvs),
        "kv_blocks_in_use_at_end": sum(kv.used_blocks for kv in kvs),  # 0 when every request freed its blocks
        "kv_prefix_hit_blocks": sum(kv.hit_blocks for kv in kvs),
    }
    if setup.offload_tiers is not None:
        from simulator.offload import merge_stats

        meta["offload"] = merge_stats([kv.offload.stats() for kv in kvs if kv.offload is not None])
    if setup.spec_target_steps is not None:
        frame["spec_target_steps"] = setup.spec_target_steps  # verification steps each request took
        steps_total = int(setup.spec_target_steps.sum())
        meta["speculative"] = {
            "method": scenario.speculative.method,
            "num_draft_tok": scenario.speculative.num_draft_tok,
            "target_steps": steps_total,
            # decode tokens per verification step, all requests together (E[X] when α is uniform)
            "tok_per_target_step": float((setup.output_tok - 1).sum()) / steps_total if steps_total else float("nan"),
        }
    steps = recorder.steps_frame()
    meta["sim_wall_s"] = time.perf_counter() - setup.t0
    return Result(frame, steps, meta)


def simulate(
    scenario,
    requests=None,
    *,
    num_requests: int | None = None,
    rate_qps: float | None = None,
    seed: int | None = None,
    progress: ProgressFn | None = None,
    predictor: StepTimePredictor | None = None,
    kv_blocks: int | None = None,
    fast_forward: bool = True,
) -> Result:
    """Simulate one replica serving a Scenario's workload (or the given `Requests`).

    `num_requests` / `rate_qps` / `seed` override the Scenario's workload. `predictor` and
    `kv_blocks` override what the Scenario implies (tests and calibration replay use them);
    `fast_forward=False` simulates every step as its own event (slow; the reference for tests).
    Same inputs ⇒ identical `Result` (besides `sim_wall_s`).
    A Scenario whose `cluster` asks for several replicas, autoscaling or disaggregation runs
    in `simulator/cluster.py` instead (same arguments, same `Result` shape).
    """
    c = scenario.cluster
    if c.replicas > 1 or c.autoscale.enabled or c.disaggregated.enabled or scenario.gpu.tensor_parallel > 1:
        from simulator.cluster import check_tensor_parallel, is_cluster, simulate_cluster

        if is_cluster(scenario):
            return simulate_cluster(scenario, requests, num_requests=num_requests, rate_qps=rate_qps, seed=seed, progress=progress, predictor=predictor, kv_blocks=kv_blocks, fast_forward=fast_forward)
        from models.catalog import load_model

        check_tensor_parallel(load_model(scenario.model.name), scenario.gpu.tensor_parallel)
    setup = prepare(scenario, requests, num_requests=num_requests, rate_qps=rate_qps, seed=seed, predictor=predictor, kv_blocks=kv_blocks)
    n = len(setup.requests)
    env = simpy.Environment()
    state, rec = RequestState(n), Recorder(n)
    replica = make_replica(env, setup, state, rec, fast_forward=fast_forward)
    replica.start(SortedFeed(setup.requests.arrival_s), n, progress)
    env.run()
    if progress is not None:
        progress(rec.finished, n)
    return collect_result(setup, state, rec, [replica])
