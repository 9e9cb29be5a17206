"""Many replicas: pools of engine replicas behind a router, optionally autoscaled or disaggregated.

Reading guide: `simulate_cluster()` is what `engine.simulate()` calls when a Scenario's
`cluster` asks for more than one replica (`is_cluster`). It validates the cluster
(`check_cluster`), builds one `Pool` of colocated replicas — or, with
`cluster.disaggregated.enabled`, a prefill pool and a decode pool joined by KV transfers
(`simulator/disagg.py`) — and a router process that hands each request, at its arrival time,
to the replica `simulator/router.py` picks. `simulator/autoscale.py` resizes a pool.

A replica is exactly the core simulator's `engine.Replica` (its scheduler, KV cache and
predictor) fed by a `QueueFeed`; nothing inside a replica changes. The pool learns what
finished through `PoolScheduler`, a `Scheduler` whose `update`/`advance_decode_run` also report
their finished requests, at the simulated time they finish (the engine calls both right after
the step's timeout). That keeps each replica's outstanding tokens (work routed to it, not yet
finished) for the routers and the autoscaler, and checks that every request finishes exactly
once, on one replica.

Counting GPUs: a replica is `gpu.tensor_parallel` GPUs. A replica is *provisioned* from the
moment it is started (the first arrival for the initial replicas; an autoscaler's scale-out,
cold start included) until it is released (drained, or the run ends at the last completion).
`meta["cluster"]` reports GPU-seconds actually provisioned — ∫ provisioned replicas × TP dt —
and each replica's utilisation (busy step time ÷ provisioned time); `Result.summary()` shows
them under "cluster" and uses the provisioned GPU-seconds as `gpu_seconds`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import simpy

from models.errors import LifecostError
from simulator.engine import ProgressFn, QueueFeed, Recorder, Replica, SimSetup, collect_result, prepare, replica_kv
from simulator.result import Result
from simulator.router import ROUTERS, RouterView
from simulator.scheduler import RequestState, Scheduler

# A cluster simulation keeps one Python object per replica; far above any single deployment
# this tool plans for (a 4,096-GPU fleet is a frontier-lab cluster), and a typo guard.
MAX_CLUSTER_GPUS = 4096
ROUTER_SEED_KEY = 0x524F555445  # "ROUTE": the router's RNG stream, apart from the workload's

OFF, COLD, ACTIVE, DRAINING = 0, 1, 2, 3  # replica status in a pool


def is_cluster(scenario) -> bool:
    """Does this Scenario need the cluster simulator (else the single-replica core path)?"""
    c = scenario.cluster
    return c.replicas > 1 or c.autoscale.enabled or c.disaggregated.enabled


def check_tensor_parallel(card, tp: int) -> None:
    """Refuse a TP degree vLLM refuses: attention heads must split evenly over the ranks, and
    KV heads must either split evenly or be replicated whole (tp a multiple of them); MLA keeps
    one latent per rank, so only the query heads matter there (vLLM `ModelConfig.verify_with_parallel_config`)."""
    if tp <= 1:
        return
    heads = card.num_attention_heads
    if heads % tp:
        divisors = [d for d in (1, 2, 4, 8, 16, 32, 64) if heads % d == 0]
        raise LifecostError(
            f"tensor_parallel={tp} does not divide {card.name}'s {heads} attention heads",
            field="gpu.tensor_parallel",
            fix=f"use one of {divisors}",
        )
    kv = card.num_kv_heads
    if card.kv_lora_rank is None and kv and kv % tp and tp % kv:
        raise LifecostError(
            f"tensor_parallel={tp} neither divides nor is a multiple of {card.name}'s {kv} KV heads",
            field="gpu.tensor_parallel",
            fix="use a TP degree that divides the KV heads (or a multiple of them)",
        )


def cluster_gpus(scenario) -> int:
    """The most GPUs the cluster can hold at once: replicas (or the autoscaler's ceiling, per
    pool when disaggregated) × tensor parallel."""
    c, tp = scenario.cluster, scenario.gpu.tensor_parallel
    per_pool_max = c.autoscale.max_replicas if c.autoscale.enabled else None
    if c.disaggregated.enabled:
        d = c.disaggregated
        pools = [d.prefill_replicas, d.decode_replicas]
    else:
        pools = [c.replicas]
    if per_pool_max is not None:
        pools = [max(per_pool_max, p) for p in pools]
    return sum(pools) * tp


def check_cluster(scenario, card) -> None:
    """Refuse nonsense cluster settings with the field to fix."""
    c = scenario.cluster
    check_tensor_parallel(card, scenario.gpu.tensor_parallel)
    a = c.autoscale
    if a.enabled and a.min_replicas > a.max_replicas:
        raise LifecostError(
            f"min_replicas ({a.min_replicas}) is above max_replicas ({a.max_replicas})",
            field="cluster.autoscale.min_replicas",
            fix="set min_replicas ≤ max_replicas",
        )
    d = c.disaggregated
    if d.enabled and (d.prefill_replicas < 1 or d.decode_replicas < 1):
        which = "prefill_replicas" if d.prefill_replicas < 1 else "decode_replicas"
        raise LifecostError(f"a disaggregated cluster needs at least one replica in each pool, got {which}={getattr(d, which)}", field=f"cluster.disaggregated.{which}", fix="give each pool at least 1 replica")
    gpus = cluster_gpus(scenario)
    if gpus > MAX_CLUSTER_GPUS:
        where = "cluster.autoscale.max_replicas" if a.enabled else ("cluster.disaggregated" if d.enabled else "cluster.replicas")
        raise LifecostError(
            f"the cluster would use {gpus} GPUs (replicas × tensor_parallel {scenario.gpu.tensor_parallel}), above {MAX_CLUSTER_GPUS}",
            field=where,
            fix=f"plan at most {MAX_CLUSTER_GPUS} GPUs per simulated cluster (split a larger fleet into identical clusters)",
        )


class PoolScheduler(Scheduler):
    """A replica's scheduler that reports finished requests to its pool (`on_finish`).

    In a decode pool it also admits requests whose KV arrived by transfer (`transferred`): they
    enter like a swapped-out request (blocks for the whole transferred context, no recompute),
    but the copy already happened over the cluster link, so the PCIe swap-in the core charges
    for a swapped request is taken off the step.
    """

    def __init__(self, requests, output_tok, engine, kv, state, on_finish: Callable[[list[int]], None], **options):
        super().__init__(requests, output_tok, engine, kv, state, **options)
        self.on_finish = on_finish
        self.transferred: set[int] = set()

    def schedule(self):
        plan = super().schedule()
        if self.transferred and plan.admitted:
            for rid in plan.admitted:
                if rid in self.transferred:
                    self.transferred.discard(rid)
                    plan.features.swap_in_tok -= self.st.computed_v[rid]
        return plan

    def update(self, plan):
        first, finished = super().update(plan)
        if finished:
            self.on_finish(finished)
        return first, finished

    def advance_decode_run(self, k: int) -> list[int]:
        finished = super().advance_decode_run(k)
        if finished:
            self.on_finish(finished)
        return finished


class Pool:
    """A set of identical replicas with one router; some may be off (autoscaling).

    `work_tok[rid]` is what a request adds to its replica's outstanding tokens until it
    finishes there. `on_done(rid, replica)` is called, at the finish time, for each request
    that finishes in this pool.
    """

    def __init__(
        self,
        env: simpy.Environment,
        setup: SimSetup,
        *,
        name: str,
        size: int,
        initial: int,
        first_id: int,
        output_tok: np.ndarray,
        work_tok: np.ndarray,
        router: str,
        rng: np.random.Generator,
        tensor_parallel: int,
        fast_forward: bool = True,
        progress: ProgressFn | None = None,
    ):
        n = len(setup.requests)
        e = setup.scenario.engine
        self.env, self.name, self.first_id, self.tp = env, name, first_id, tensor_parallel
        self.state, self.recorder = RequestState(n), Recorder(n)
        self.work_tok = np.ascontiguousarray(work_tok, np.int64)
        self.outstanding = np.zeros(size, np.int64)
        self.status = [OFF] * size
        self.prov_since = [math.nan] * size
        self.prov_s = [0.0] * size
        self.served = np.full(n, -1, np.int32)  # pool-local replica each request finished on
        self.routed = np.zeros(size, np.int64)
        self.on_done: Callable[[int, int], None] = lambda rid, replica: None
        self.on_change: Callable[[], None] = lambda: None  # the active set changed
        self.replicas: list[Replica] = []
        self.feeds: list[QueueFeed] = []
        for i in range(size):
            kv, options = replica_kv(setup)  # per-replica KV (with offload tiers) and speculative rates
            sched = PoolScheduler(setup.requests, output_tok, e, kv, self.state, self._finisher(i), **options)
            rep = Replica(env, sched, setup.predictor, self.recorder, first_id + i, fast_forward=fast_forward)
            feed = QueueFeed(env)
            rep.start(feed, n, progress)
            self.replicas.append(rep)
            self.feeds.append(feed)
        self.route_fn = ROUTERS[router]
        self.view = RouterView([], self.outstanding, self.work_tok, np.asarray(setup.requests.prefix_id), rng)
        t0 = float(setup.requests.arrival_s[0])
        for i in range(initial):
            self.provision(i, t0)
            self.status[i] = ACTIVE
        self._refresh()

    # -- membership ------------------------------------------------------------------------
    def _refresh(self) -> None:
        self.view.active = [i for i, s in enumerate(self.status) if s == ACTIVE]
        self.on_change()

    def count(self, *statuses: int) -> int:
        return sum(1 for s in self.status if s in statuses)

    def provision(self, i: int, now_s: float) -> None:
        self.prov_since[i] = now_s
        self.status[i] = COLD

    def activate(self, i: int) -> None:
        self.status[i] = ACTIVE
        self._refresh()

    def drain(self, i: int) -> None:
        """Stop routing to replica i; it is released once its outstanding work is done."""
        self.status[i] = DRAINING
        self._refresh()
        self._maybe_release(i)

    def _maybe_release(self, i: int) -> None:
        if self.status[i] == DRAINING and self.outstanding[i] == 0:
            self.prov_s[i] += float(self.env.now - self.prov_since[i])
            self.prov_since[i] = math.nan
            self.status[i] = OFF

    def close_books(self, end_s: float) -> None:
        """The run ended at `end_s`: every replica still provisioned is released then."""
        for i, since in enumerate(self.prov_since):
            if since == since:  # not NaN
                self.prov_s[i] += float(max(end_s - since, 0.0))
                self.prov_since[i] = math.nan

    # -- requests ----------------------------------------------------------------------------
    def route(self, rid: int, *, push: bool = True) -> int:
        """Pick a replica for `rid` (router policy over the active replicas) and push it there
        (`push=False`: the caller pushes it later, e.g. once its KV has arrived)."""
        if not self.view.active:
            raise RuntimeError(f"{self.name} pool has no active replica to route to (a bug: the autoscaler keeps min_replicas ≥ 1)")
        i = self.route_fn(self.view, rid)
        self.outstanding[i] += self.work_tok[rid]
        self.routed[i] += 1
        if push:
            self.feeds[i].push(rid)
        return i

    def _finisher(self, i: int) -> Callable[[list[int]], None]:
        def finished(rids: list[int]) -> None:
            served, work = self.served, self.work_tok
            for rid in rids:
                if served[rid] >= 0:
                    raise RuntimeError(f"request {rid} finished twice in the {self.name} pool (replicas {served[rid]} and {i})")
                served[rid] = i
                self.outstanding[i] -= work[rid]
                self.on_done(rid, i)
            if self.status[i] == DRAINING:
                self._maybe_release(i)

        return finished

    def close(self) -> None:
        for feed in self.feeds:
            feed.close()

    # -- reporting -----------------------------------------------------------------------------
    def report(self, busy_s: dict[int, float]) -> dict:
        used = [i for i in range(len(self.replicas)) if self.prov_s[i] > 0 or self.routed[i] > 0]
        return {
            "replicas_provisioned": len(used),
            "gpu_seconds_provisioned": float(sum(self.prov_s)) * self.tp,
            "replica_utilisation": [round(float(busy_s.get(self.first_id + i, 0.0)) / self.prov_s[i], 6) if self.prov_s[i] > 0 else 0.0 for i in used],
            "requests_per_replica": [int(self.routed[i]) for i in used],
        }


def _busy_by_replica(steps) -> dict[int, float]:
    if not len(steps):
        return {}
    return {int(k): float(v) for k, v in steps.groupby("replica")["duration_s"].sum().items()}


def start_router(env: simpy.Environment, arrival_s: np.ndarray, pool: Pool, after: Callable[[], None]) -> None:
    """A SimPy process handing each request to `pool` at its arrival time; `after()` once all are routed."""

    def router():
        n = len(arrival_s)
        for rid in range(n):
            t = arrival_s[rid]
            if t > env.now:
                yield env.timeout(t - env.now)
            pool.route(rid)
        after()

    env.process(router())


def router_rng(seed: int, pool_index: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), ROUTER_SEED_KEY, pool_index]))


def simulate_cluster(
    scenario,
    requests=None,
    *,
    num_requests: int | None = None,
    rate_qps: float | None = None,
    seed: int | None = None,
    progress: ProgressFn | None = None,
    predictor=None,
    kv_blocks: int | None = None,
    fast_forward: bool = True,
) -> Result:
    """Simulate the Scenario's cluster (same arguments as `engine.simulate`)."""
    from models.catalog import load_model

    check_cluster(scenario, load_model(scenario.model.name))
    setup = prepare(scenario, requests, num_requests=num_requests, rate_qps=rate_qps, seed=seed, predictor=predictor, kv_blocks=kv_blocks)
    seed = scenario.seed if seed is None else seed
    if scenario.cluster.disaggregated.enabled:
        from simulator.disagg import simulate_disaggregated

        return simulate_disaggregated(setup, seed=seed, progress=progress, fast_forward=fast_forward)
    return _simulate_colocated(setup, seed=seed, progress=progress, fast_forward=fast_forward)


def pool_sizes(autoscale, replicas: int) -> tuple[int, int]:
    """(replica slots, replicas provisioned at the start) of a pool asked for `replicas`."""
    if not autoscale.enabled:
        return replicas, replicas
    start = min(max(replicas, autoscale.min_replicas), autoscale.max_replicas)
    return max(autoscale.max_replicas, start), start


def _simulate_colocated(setup: SimSetup, *, seed: int, progress: ProgressFn | None, fast_forward: bool) -> Result:
    sc = setup.scenario
    c, tp = sc.cluster, sc.gpu.tensor_parallel
    reqs = setup.requests
    n = len(reqs)
    env = simpy.Environment()
    size, initial = pool_sizes(c.autoscale, c.replicas)
    work = np.asarray(reqs.prompt_tok, np.int64) + setup.output_tok
    pool = Pool(env, setup, name="serve", size=size, initial=initial, first_id=0, output_tok=setup.output_tok, work_tok=work,
                router=c.router, rng=router_rng(seed), tensor_parallel=tp, fast_forward=fast_forward, progress=progress)
    done = SimpleNamespace(count=0, end_s=float(reqs.arrival_s[0]))

    def on_done(rid: int, replica: int) -> None:
        done.count += 1
        done.end_s = env.now

    pool.on_done = on_done
    scaler = None
    if c.autoscale.enabled:
        from simulator.autoscale import Autoscaler

        scaler = Autoscaler(env, pool, c.autoscale, finished=lambda: done.count >= n, start_s=float(reqs.arrival_s[0]))
    start_router(env, reqs.arrival_s, pool, pool.close)
    env.run()
    if progress is not None:
        progress(pool.recorder.finished, n)
    pool.close_books(done.end_s)
    result = collect_result(setup, pool.state, pool.recorder, pool.replicas)
    result.requests["replica"] = pool.served
    info = pool.report(_busy_by_replica(result.steps))
    info["router"] = c.router
    if scaler is not None:
        info["autoscale"] = scaler.report()
    result.meta["cluster"] = info
    return result
