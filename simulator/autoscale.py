"""Autoscaling a pool of replicas from its outstanding tokens, with a cold-start delay.

Every `interval_s` the autoscaler reads the pool's outstanding tokens L (work routed to its
replicas and not yet finished) and the replicas serving or starting, S. It wants
D = ⌈L ÷ target_outstanding_tok⌉ replicas, clamped to [min_replicas, max_replicas]:
- scale out when D > S: draining replicas are taken back first (they are warm), then new
  replicas are provisioned; a new replica costs GPU time from that moment but takes requests
  only after `cold_start_s` (weights load, CUDA graphs, warm-up);
- scale in when L < ½ · target · S (hysteresis: the band between ½ and 1 × target per replica
  keeps it from flapping) down to max(D, min_replicas): the least-loaded active replicas stop
  taking requests and are released once their in-flight work finishes.
This is the Kubernetes HPA rule (desired = ⌈current metric ÷ target⌉, with a tolerance band)
on the metric LLM routers expose (outstanding / queued tokens, as in vLLM production-stack and
llm-d), stepped at the HPA's sync period.

GPU-hours: the pool books each replica's provisioned time (cold start included, draining
included); `Pool.report()` turns it into GPU-seconds × tensor parallel.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from simulator.cluster import ACTIVE, COLD, DRAINING, OFF, Pool


class Autoscaler:
    """A SimPy process resizing `pool` every `spec.interval_s` until `finished()`."""

    def __init__(self, env, pool: Pool, spec, *, finished: Callable[[], bool], start_s: float = 0.0):
        """Decisions every `spec.interval_s` from `start_s` (the first arrival: the pool's
        initial replicas are provisioned from then, see `Pool`)."""
        self.env, self.pool, self.spec, self.finished = env, pool, spec, finished
        self.start_s = start_s
        self.scale_outs = self.scale_ins = 0
        self.peak_replicas = pool.count(ACTIVE, COLD)
        self._trace: list[tuple[float, int]] = [(start_s, self.peak_replicas)]
        env.process(self._loop())

    def desired(self, outstanding_tok: int) -> int:
        s = self.spec
        return min(max(math.ceil(outstanding_tok / s.target_outstanding_tok), s.min_replicas), s.max_replicas)

    def _loop(self):
        if self.start_s > self.env.now:
            yield self.env.timeout(self.start_s - self.env.now)
        while True:
            yield self.env.timeout(self.spec.interval_s)
            if self.finished() or self.env.peek() == math.inf:  # done, or nothing else can happen
                return
            self.step()

    def step(self) -> None:
        """One scaling decision at the current time."""
        pool, s = self.pool, self.spec
        load = int(pool.outstanding.sum())
        serving = pool.count(ACTIVE, COLD)
        want = self.desired(load)
        if want > serving:
            self.scale_outs += 1
            for i, st in enumerate(pool.status):
                if serving >= want:
                    break
                if st == DRAINING:  # warm: takes requests again at once
                    pool.activate(i)
                    serving += 1
            for i, st in enumerate(pool.status):
                if serving >= want:
                    break
                if st == OFF:
                    pool.provision(i, self.env.now)
                    self.env.process(self._warm_up(i))
                    serving += 1
        elif load < 0.5 * s.target_outstanding_tok * serving and serving > s.min_replicas:
            keep = max(want, s.min_replicas)
            active = sorted(pool.view.active, key=lambda i: (pool.outstanding[i], -i))
            drained = 0
            for i in active:
                if serving - drained <= keep or len(active) - drained <= 1:
                    break
                pool.drain(i)
                drained += 1
            if drained:
                self.scale_ins += 1
        now_serving = pool.count(ACTIVE, COLD)
        self.peak_replicas = max(self.peak_replicas, now_serving)
        self._trace.append((self.env.now, now_serving))

    def _warm_up(self, i: int):
        yield self.env.timeout(self.spec.cold_start_s)
        if self.pool.status[i] == COLD:
            self.pool.activate(i)

    def report(self) -> dict:
        times = [t for t, _ in self._trace]
        counts = [c for _, c in self._trace]
        span = times[-1] - times[0]
        mean = sum(c * (t2 - t1) for (t1, c), t2 in zip(self._trace, times[1:])) / span if span > 0 else float(counts[-1])
        return {
            "scale_outs": self.scale_outs,
            "scale_ins": self.scale_ins,
            "peak_replicas": self.peak_replicas,
            "mean_replicas": round(mean, 6),
            "decisions": len(self._trace) - 1,
        }
