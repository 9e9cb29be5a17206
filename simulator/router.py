"""Which replica of a pool serves a request: the router policies, as one dict of functions.

A router is `route(view, rid) -> replica index`. `RouterView` is everything a router may read:
the replicas accepting new requests (`active`, ascending ids), each replica's outstanding
tokens (work routed to it and not yet finished, `simulator/cluster.py` keeps it), the request's
prefix id and its own work, and a seeded RNG. Routers never touch the clock or the replicas.

Policies (`ROUTERS`):
- `round_robin` — the next active replica in turn (vLLM production-stack's default).
- `random` — uniformly at random (seeded): the Poisson-splitting assumption `capacity.py` uses.
- `least_outstanding_tokens` — the active replica with the fewest outstanding tokens (ties: the
  lowest id); a join-the-shortest-queue rule measured in tokens, since a 4,000-token prompt is
  not one unit of work like a 40-token one.
- `prefix_affinity` — consistent hashing of the request's `prefix_id` onto a ring of the active
  replicas (`VNODES` points each), so requests sharing a system prompt land where it is
  cached, with bounded loads (Mirrokni, Thorup & Zadimoghaddam 2018, "Consistent Hashing with
  Bounded Loads"): a replica whose outstanding tokens exceed `LOAD_CAP` × the active replicas'
  mean (counting the new request's tokens) is skipped for the next one on the ring; the
  least-loaded replica is never above the mean, so the walk always ends. Requests without a prefix go to the
  least-loaded replica. Adding or removing a replica (autoscaling) moves only the prefixes of
  its ring arcs.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

VNODES = 64  # ring points per replica: with 64, arc lengths vary by about ±1/√64 ≈ 12 %
LOAD_CAP = 1.25  # the paper's c: no replica takes more than 1.25 × the mean load


def _hash64(key: str) -> int:
    """A stable 64-bit hash (Python's `hash` is salted per process, so runs would differ)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


@dataclass
class RouterView:
    """What a router reads, plus the little memory routers keep (turn counter, hash rings)."""

    active: list[int]  # replica ids accepting new requests, ascending
    outstanding_tok: np.ndarray  # per replica (all replicas of the pool, active or not)
    work_tok: np.ndarray  # per request: tokens it adds to a replica's outstanding work
    prefix_id: np.ndarray  # per request, −1 for none
    rng: np.random.Generator
    turn: int = 0
    _rings: dict[tuple[int, ...], tuple[list[int], list[int]]] = field(default_factory=dict)
    _prefix_hash: dict[int, int] = field(default_factory=dict)

    def ring(self) -> tuple[list[int], list[int]]:
        """(sorted ring points, replica at each point) for the current active set (cached)."""
        key = tuple(self.active)
        got = self._rings.get(key)
        if got is None:
            points = sorted((_hash64(f"replica-{r}-{v}"), r) for r in key for v in range(VNODES))
            got = ([h for h, _ in points], [r for _, r in points])
            self._rings[key] = got
        return got


def round_robin(view: RouterView, rid: int) -> int:
    active = view.active
    choice = active[view.turn % len(active)]
    view.turn += 1
    return choice


def random_choice(view: RouterView, rid: int) -> int:
    return view.active[int(view.rng.integers(len(view.active)))]


def least_outstanding_tokens(view: RouterView, rid: int) -> int:
    load = view.outstanding_tok
    return min(view.active, key=lambda r: (load[r], r))


def prefix_affinity(view: RouterView, rid: int) -> int:
    pid = int(view.prefix_id[rid])
    if pid < 0 or len(view.active) == 1:
        return least_outstanding_tokens(view, rid)
    h = view._prefix_hash.get(pid)
    if h is None:
        h = view._prefix_hash[pid] = _hash64(f"prefix-{pid}")
    points, owners = view.ring()
    load = view.outstanding_tok
    total = float(sum(load[r] for r in view.active)) + float(view.work_tok[rid])
    cap = LOAD_CAP * total / len(view.active)
    i = bisect.bisect_left(points, h)
    seen: set[int] = set()
    for j in range(len(points)):
        r = owners[(i + j) % len(points)]
        if r in seen:
            continue
        if load[r] <= cap:
            return r
        seen.add(r)
        if len(seen) == len(view.active):
            break
    return least_outstanding_tokens(view, rid)  # unreachable: the least-loaded replica is at most the mean


ROUTERS: dict[str, Callable[[RouterView, int], int]] = {
    "round_robin": round_robin,
    "random": random_choice,
    "least_outstanding_tokens": least_outstanding_tokens,
    "prefix_affinity": prefix_affinity,
}
