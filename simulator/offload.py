"""Tiered KV offload: prefix blocks evicted from HBM go down to host DRAM, NVMe (and a remote
store) instead of vanishing; a later prefix hit loads them back or recomputes them, whichever
the predictor says is faster.

The idea is LMCache's and vLLM's KV-offloading connector (`vllm/v1/kv_offload/`): HBM is the
first tier of a cache hierarchy keyed by prefix; each lower tier has a capacity and read/write
bandwidths, and is LRU within itself, spilling to the next tier down; the last tier drops.

Layout (counts, no block objects, like `kv_cache.py`): prefix caching only ever shares a
prefix's *leading* full blocks, and HBM evicts a prefix's blocks from its tail. So a prefix's
blocks always form a chain of contiguous segments down the tiers:

    HBM [0, h)   host [h, h + n₁)   nvme [h + n₁, h + n₁ + n₂)   …

An HBM eviction of the tail of [0, h) prepends those blocks to the host segment; a host eviction
(LRU prefix first, its tail first) prepends its tail to the nvme segment — the chain stays
contiguous. A hit that loads m blocks takes them from the front of the chain (tiers are
exclusive: loaded blocks move up); when HBM recomputes part of the chain instead, the now
duplicate front of the chain is dropped.

Cost model (the break-even): loading m blocks from tier t takes m · block bytes ÷ read
bandwidth of t (NVMe and remote data reach the GPU through the host link, so their rate is the
min of the tier's and the host link's); loads are serialised on the host link with the step that
needs them (a transfer queues behind those already planned in the step; the batch waits, as a
synchronous load does). Recomputing the same tokens costs the predictor's marginal prefill time
of that chunk (`recompute_s`: step time with the chunk − step time without). The scheduler loads
when the load (with its queue) is faster — that comparison is the break-even, per hit.
Writes down (evictions) are not charged to the step: vLLM's offloading connector stores on a
separate CUDA stream, asynchronously with compute, and PCIe is full duplex (device→host writes do
not slow host→device loads); their bytes are counted. Loads are the only traffic in their
direction and each waits inside its step, so the link serves them one after another.

Default bandwidths: host = the GPU card's `host_link_gb_s` (PCIe, per direction), or the
Profile's measured h2d/d2h when present; NVMe 7 GB/s read, 5 GB/s write (a PCIe Gen4 x4 drive's
datasheet sequential rates, e.g. Samsung 990 PRO: 7.45/6.9, WD SN850X: 7.3/6.6, rounded down for
the 4–16 KiB-per-layer I/O sizes KV blocks make); remote 12.5 GB/s (a 100 GbE link).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from models.errors import LifecostError

GB = 1e9
DEFAULT_READ_GB_S = {"nvme": 7.0, "remote": 12.5}
DEFAULT_WRITE_GB_S = {"nvme": 5.0, "remote": 12.5}


@dataclass(frozen=True, slots=True)
class TierConfig:
    """One tier below HBM, resolved to blocks and seconds per block."""

    name: str
    capacity_blocks: int
    read_s_per_block: float  # to HBM, including the host link
    write_s_per_block: float
    read_gb_s: float
    write_gb_s: float


def resolve_tiers(scenario, card, gpu, profile=None) -> tuple[list[TierConfig], float]:
    """The Scenario's tiers with defaults filled in, and the per-GPU bytes of one KV block.

    Refuses a tier smaller than one block or with a zero bandwidth (naming the field)."""
    from models.memory import GIB, kv_bytes_per_token_per_gpu

    if not scenario.engine.enable_prefix_caching:
        raise LifecostError("offload keeps evicted prefix-cache blocks, but prefix caching is off", field="offload.enabled", fix="set engine.enable_prefix_caching: true, or offload.enabled: false")
    names = [t.name for t in scenario.offload.tiers]
    if len(set(names)) != len(names):
        raise LifecostError(f"tiers {names} name one tier twice", field="offload.tiers", fix="list each of host, nvme, remote at most once, fastest first")
    m, tp, bs = scenario.model, scenario.gpu.tensor_parallel, scenario.engine.block_size_tok
    block_bytes = kv_bytes_per_token_per_gpu(card, m.kv_dtype, tp) * bs
    ceil = getattr(profile, "ceilings", None)
    h2d = (getattr(ceil, "h2d_gb_s", None) or gpu.host_link_gb_s)
    d2h = (getattr(ceil, "d2h_gb_s", None) or gpu.host_link_gb_s)
    tiers = []
    for i, t in enumerate(scenario.offload.tiers):
        where = f"offload.tiers[{i}]"
        read = t.read_gb_s if t.read_gb_s is not None else (h2d if t.name == "host" else DEFAULT_READ_GB_S[t.name])
        write = t.write_gb_s if t.write_gb_s is not None else (d2h if t.name == "host" else DEFAULT_WRITE_GB_S[t.name])
        for name, v in (("read_gb_s", read), ("write_gb_s", write)):
            if not v > 0:
                raise LifecostError(f"tier {t.name!r} has {name} {v}", field=f"{where}.{name}", fix="give the tier a positive bandwidth in GB/s (or leave it out for the default)")
        if t.name != "host":  # data reaches the GPU through host memory and the PCIe link
            read, write = min(read, h2d), min(write, d2h)
        cap = int(t.capacity_gib * GIB / (block_bytes * tp))
        if cap < 1:
            raise LifecostError(
                f"tier {t.name!r} holds {t.capacity_gib} GiB, less than one {bs}-token KV block ({block_bytes * tp / GIB * 1024:.2f} MiB)",
                field=f"{where}.capacity_gib", fix="give the tier at least one block of capacity",
            )
        tiers.append(TierConfig(t.name, cap, block_bytes / (read * GB), block_bytes / (write * GB), read, write))
    return tiers, block_bytes


@dataclass
class _Tier:
    cfg: TierConfig
    segments: OrderedDict = field(default_factory=OrderedDict)  # prefix id → blocks, least recently used first
    used_blocks: int = 0
    hit_blocks: int = 0  # loaded back to HBM from here
    written_blocks: int = 0  # arrived here (from HBM or the tier above)
    dropped_blocks: int = 0  # evicted out of the last tier, or duplicates of recomputed blocks


class KvOffload:
    """The tiers below one replica's HBM and the load-vs-recompute policy the scheduler consults."""

    def __init__(self, tiers: list[TierConfig], block_bytes: float, predictor=None, block_size_tok: int = 16):
        self.tiers = [_Tier(t) for t in tiers]
        self.block_bytes = block_bytes
        self.predictor = predictor
        self.bs = block_size_tok
        self.loads = 0  # prefix hits served (partly) from a lower tier
        self.recomputes = 0  # lower-tier hits the policy chose to recompute
        self.saved_s = 0.0  # Σ over loads of (recompute_s − load_s): predicted prefill time saved

    # -- the chain of a prefix's segments --------------------------------------------------------
    def available_blocks(self, pid: int) -> int:
        """Blocks of `pid` held below HBM (contiguous after HBM's cached blocks)."""
        return sum(t.segments.get(pid, 0) for t in self.tiers)

    def _push(self, i: int, pid: int, blocks: int) -> None:
        """Prepend `blocks` of `pid` to tier i's segment, spilling LRU tails down when full."""
        if i >= len(self.tiers):
            self.tiers[-1].dropped_blocks += blocks
            return
        t = self.tiers[i]
        t.segments[pid] = t.segments.get(pid, 0) + blocks
        t.segments.move_to_end(pid)
        t.used_blocks += blocks
        t.written_blocks += blocks
        over = t.used_blocks - t.cfg.capacity_blocks
        while over > 0:
            victim = next(iter(t.segments))
            have = t.segments[victim]
            take = min(have, over)
            if take == have:
                del t.segments[victim]
            else:
                t.segments[victim] = have - take
            t.used_blocks -= take
            over -= take
            self._push(i + 1, victim, take)

    def on_evict(self, pid: int, blocks: int) -> None:
        """HBM evicted the last `blocks` cached blocks of `pid`: they go down a tier."""
        self._push(0, pid, blocks)

    def drop_front(self, pid: int, blocks: int) -> None:
        """HBM now holds `blocks` more leading blocks of `pid` (recomputed): drop the duplicates below."""
        self._remove_front(pid, blocks, "dropped_blocks", touch=False)

    def _remove_front(self, pid: int, blocks: int, counter: str, *, touch: bool) -> None:
        """Remove the chain's first `blocks` blocks tier by tier (top tier first), counting them in
        the tier's `counter`; `touch` marks what is left of the chain most recently used."""
        for t in self.tiers:
            if blocks <= 0:
                return
            have = t.segments.get(pid, 0)
            n = min(have, blocks)
            if n:
                if n == have:
                    del t.segments[pid]
                else:
                    t.segments[pid] = have - n
                    if touch:
                        t.segments.move_to_end(pid)
                t.used_blocks -= n
                setattr(t, counter, getattr(t, counter) + n)
                blocks -= n

    def load_time_s(self, pid: int, blocks: int) -> float:
        """Seconds to bring the first `blocks` blocks of the chain up to HBM (tier by tier)."""
        s = 0.0
        for t in self.tiers:
            if blocks <= 0:
                break
            take = min(t.segments.get(pid, 0), blocks)
            s += take * t.cfg.read_s_per_block
            blocks -= take
        return s

    def take(self, pid: int, blocks: int) -> float:
        """Move the first `blocks` blocks of the chain up to HBM; returns the load seconds."""
        s = self.load_time_s(pid, blocks)
        self._remove_front(pid, blocks, "hit_blocks", touch=True)
        return s

    # -- the policy ----------------------------------------------------------------------------
    def recompute_s(self, cached_tok: int, new_tok: int) -> float:
        """Predicted marginal prefill time of `new_tok` tokens after `cached_tok` cached ones."""
        from simulator.predictor import StepFeatures

        n, c = new_tok, cached_tok
        chunk = StepFeatures(prefill_tok=n, prefill_ctx_tok=c + n, prefill_attn_pairs=n * c + n * (n + 1) // 2, num_seqs=1)
        return self.predictor.step_time_s(chunk) - self.predictor.step_time_s(StepFeatures())

    def plan_load(self, pid: int, cached_blocks: int, max_blocks: int, queued_s: float) -> tuple[int, bool]:
        """(blocks to load, declined) for a hit whose HBM part is `cached_blocks` and that may use
        up to `max_blocks`: all available lower-tier blocks when loading them (behind `queued_s`
        of transfers already planned this step) beats recomputing them; else 0, and `declined`
        says lower-tier blocks were there but recomputing is faster (the scheduler counts it in
        `recomputes` once the request is admitted)."""
        m = min(self.available_blocks(pid), max_blocks - cached_blocks)
        if m <= 0:
            return 0, False
        if queued_s + self.load_time_s(pid, m) < self.recompute_s(cached_blocks * self.bs, m * self.bs):
            return m, False
        return 0, True

    def record_load(self, pid: int, cached_blocks: int, blocks: int) -> float:
        """Apply a planned load: move the blocks up, count the predicted time saved; returns seconds."""
        s = self.take(pid, blocks)
        self.loads += 1
        self.saved_s += self.recompute_s(cached_blocks * self.bs, blocks * self.bs) - s
        return s

    # -- checks and report -----------------------------------------------------------------------
    def check(self) -> None:
        """Tier conservation: never negative, never above capacity, counts match the segments."""
        for t in self.tiers:
            assert 0 <= t.used_blocks <= t.cfg.capacity_blocks, (t.cfg.name, t.used_blocks)
            assert t.used_blocks == sum(t.segments.values()), t.cfg.name
            assert all(v > 0 for v in t.segments.values()), t.cfg.name

    def stats(self) -> dict:
        """Per-tier hits and bytes moved; loads vs recomputes; predicted prefill time saved."""
        bb = self.block_bytes
        return {
            "loads": self.loads,
            "recomputes": self.recomputes,
            "prefill_saved_s": self.saved_s,
            "tiers": {
                t.cfg.name: {
                    "hit_blocks": t.hit_blocks,
                    "bytes_up": t.hit_blocks * bb,
                    "bytes_down": t.written_blocks * bb,
                    "dropped_blocks": t.dropped_blocks,
                    "used_blocks_at_end": t.used_blocks,
                    "capacity_blocks": t.cfg.capacity_blocks,
                    "read_gb_s": t.cfg.read_gb_s,
                    "write_gb_s": t.cfg.write_gb_s,
                }
                for t in self.tiers
            },
        }


def merge_stats(stats: list[dict]) -> dict:
    """Sum per-replica offload stats (cluster runs)."""
    out = {"loads": 0, "recomputes": 0, "prefill_saved_s": 0.0, "tiers": {}}
    for s in stats:
        out["loads"] += s["loads"]
        out["recomputes"] += s["recomputes"]
        out["prefill_saved_s"] += s["prefill_saved_s"]
        for name, t in s["tiers"].items():
            acc = out["tiers"].setdefault(name, {k: 0 for k in t} | {"read_gb_s": t["read_gb_s"], "write_gb_s": t["write_gb_s"]})
            for k in ("hit_blocks", "bytes_up", "bytes_down", "dropped_blocks", "used_blocks_at_end", "capacity_blocks"):
                acc[k] += t[k]
    return out
