"""Tiered KV offload economics: offload on/off for a multi-turn long-context workload whose KV
exceeds HBM, and the load-beats-recompute break-even prefix length per model and GPU.

Workload: chat sessions that re-send their growing history every turn (prefix id = session;
history 8k → 24k tokens over 5 turns, 150-token answers, think time ~20 s between turns). The
sessions' histories together exceed the HBM KV cache, so without offload most turns recompute
their history; with host DRAM (+ NVMe) tiers they load it back over PCIe.

Break-even: the smallest cached prefix N (tokens) for which loading its KV from the tier
(N · KV bytes/token ÷ read bandwidth) is faster than recomputing it (the predictor's marginal
prefill time of an N-token chunk) — below N the policy recomputes.

    .venv/bin/python benchmarks/econ_offload.py
"""

from __future__ import annotations

import sys


from models.errors import LifecostError
from simulator.engine import prepare, simulate
from simulator.offload import KvOffload
from simulator.scenario import Scenario
from simulator.workload import Requests, multi_turn_sessions

CASES = (  # (model, gpu, tensor_parallel, sessions)
    ("Llama-3.1-8B", "H100-SXM", 1, 60),
    ("Llama-3.1-70B", "H100-SXM", 4, 60),
)
BREAK_EVEN = (("Llama-3.1-8B", 1), ("Llama-3.1-70B", 4))
GPUS = ("H100-SXM", "A100-80GB", "L40S")


def sessions(n_sessions: int, **kw) -> Requests:
    return multi_turn_sessions(n_sessions, **kw)


def scenario(model: str, gpu: str, tp: int, offload: bool, tiers=None) -> Scenario:
    d = {"model": {"name": model}, "gpu": {"name": gpu, "tensor_parallel": tp},
         "engine": {"profile": "roofline", "max_model_len_tok": 32768, "max_num_seqs": 64}, "offload": {"enabled": offload}}
    if tiers:
        d["offload"]["tiers"] = tiers
    return Scenario.model_validate(d)


def break_even_tok(model: str, gpu: str, tp: int, tier: str) -> int | None:
    """Smallest cached prefix (tokens, whole blocks) whose load from `tier` beats recomputing it."""
    tiers = [{"name": "host", "capacity_gib": 1024.0}] if tier == "host" else [{"name": tier, "capacity_gib": 1024.0}]
    s = scenario(model, gpu, tp, True, tiers)
    setup = prepare(s, sessions(1, turns=1))
    bs = s.engine.block_size_tok
    off = KvOffload(*setup.offload_tiers, predictor=setup.predictor, block_size_tok=bs)
    t = off.tiers[0].cfg
    for blocks in range(1, 32768 // bs):
        if blocks * t.read_s_per_block < off.recompute_s(0, blocks * bs):
            return blocks * bs
    return None


def main() -> None:
    print("# tiered KV offload on/off — multi-turn sessions (history 8k→24k tokens, 5 turns), roofline")
    print(f"{'model':14s} {'gpu':9s} tp {'offload':7s} {'hbm_hit':>7s} {'host_hit':>8s} {'nvme_hit':>8s} {'ttft_p50_s':>10s} {'ttft_p99_s':>10s} {'tok/s':>8s} {'GB up':>7s} {'GB down':>7s}")
    for model, gpu, tp, n in CASES:
        reqs = sessions(n)
        for on in (False, True):
            res = simulate(scenario(model, gpu, tp, on), reqs)
            s = res.summary()
            o = s.get("offload", {})
            hbm = o.get("hbm_hit_frac", s["prefix_hit_frac"])
            print(f"{model:14s} {gpu:9s} {tp:2d} {'on' if on else 'off':7s} {hbm:7.1%} {o.get('host_hit_frac', 0):8.1%} {o.get('nvme_hit_frac', 0):8.1%} "
                  f"{s['ttft_s']['p50']:10.3f} {s['ttft_s']['p99']:10.3f} {s['throughput_tok_s']:8.0f} {o.get('bytes_up', 0) / 1e9:7.1f} {o.get('bytes_down', 0) / 1e9:7.1f}")
            sys.stdout.flush()
    print("\n# break-even cached prefix length (load from tier beats recompute at or above N tokens)")
    print(f"{'model':14s} tp " + " ".join(f"{g + ' ' + t:>18s}" for g in GPUS for t in ("host", "nvme")))
    for model, tp in BREAK_EVEN:
        row = []
        for g in GPUS:
            for t in ("host", "nvme"):
                try:
                    n = break_even_tok(model, g, tp, t)
                    row.append("never" if n is None else str(n))
                except LifecostError as e:  # a model that does not fit the GPU, or TP without NVLink
                    row.append("n/a: " + e.field.split(".")[-1])
        print(f"{model:14s} {tp:2d} " + " ".join(f"{x:>18s}" for x in row))


if __name__ == "__main__":
    main()
