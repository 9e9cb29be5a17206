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
multi-replica router can give each `Replica` its own feed (anything with `next_arrival_s`,
`pop_until` and `wait`).
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable
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
    def take(self, now_s: float, add: Callable[[int], None]) -> float:
        """Hand every request arriving at or before `now_s` to `add` (in arrival order);
        return the next arrival time (inf when none is known)."""

    def wait(self, env: simpy.Environment) -> simpy.Event:
        """An event that fires when the next request may have arrived (the replica is idle)."""


class SortedFeed:
    """Arrivals read straight from a sorted `arrival_s` array (single replica)."""

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

    def wait(self, env: simpy.Environment) -> simpy.Event:
        return env.timeout(max(self.next_arrival_s() - env.now, 0.0))


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
        while True:
            now = env.now
            if t_next <= now:
                t_next = take(now, add)
            if not running and not sched.num_waiting:
                if t_next == inf:
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
                yield env.timeout(dt)
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
    need_blocks = blocks_for(e.max_model_len_tok, e.block_size_tok)
    if not plan.fits or blocks < need_blocks:
        raise LifecostError(
            f"{card.name} ({m.quant}) needs {plan.needed_gib:.1f} GiB per GPU for weights, activations and one "
            f"{e.max_model_len_tok}-token sequence, but {gpu.name} has {plan.usable_gib:.1f} GiB usable",
            field="model.name",
            fix="use a bigger GPU, more tensor_parallel, quantization, a smaller max_model_len_tok or a higher gpu_memory_utilization",
        )
    return blocks


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
    """
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

    n = len(requests)
    env = simpy.Environment()
    kv = KVCacheManager(kv_blocks, e.block_size_tok, e.enable_prefix_caching)
    state = RequestState(n)
    sched = Scheduler(requests, output_tok, e, kv, state)
    rec = Recorder(n)
    replica = Replica(env, sched, predictor, rec, fast_forward=fast_forward)
    env.process(replica.process(SortedFeed(requests.arrival_s), n, progress))
    env.run()
    if progress is not None:
        progress(rec.finished, n)
    if rec.finished != n:
        raise RuntimeError(f"simulation ended with {n - rec.finished} of {n} requests unfinished (a bug)")
    frame = build_requests_frame(requests, output_tok, rec.sched_s, rec.first_s, rec.finish_s, state.preemptions, state.prefix_hit_tok, scenario.slo)
    frame["generated_tok"] = state.gen  # tokens the scheduler sampled for each request (must equal output_tok)
    meta = {
        "scenario": scenario.name,
        "predictor": predictor.name,
        "kv_capacity_blocks": kv_blocks,
        "block_size_tok": e.block_size_tok,
        "num_replicas": 1,
        "gpus_per_replica": scenario.gpu.tensor_parallel,
        "kv_evicted_blocks": kv.evicted_blocks,
        "kv_blocks_in_use_at_end": kv.used_blocks,  # 0 when every request freed its blocks
        "kv_prefix_hit_blocks": kv.hit_blocks,
        "sim_wall_s": time.perf_counter() - t0,
    }
    return Result(frame, rec.steps_frame(), meta)
