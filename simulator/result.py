"""What a simulation returns: a per-request frame, a per-step-run frame and a summary dict.

Kept apart from the engine so the CLI, capacity search and the dashboard read one shape. The
frames are plain pandas; `summary()` is a flat-ish dict of floats that serialises to JSON as is.

Definitions (all times in seconds of simulated time):
  queue_s  = first scheduled − arrival          ttft_s = first token − arrival
  tpot_s   = (last token − first token) / (output_tok − 1)   (NaN for one-token outputs)
  e2e_s    = last token − arrival               itl_mean_s = tpot_s (mean gap between tokens)
The step frame holds *runs* of identical-composition steps (`num_steps` ≥ 1); the inter-token
latency distribution `itl_s` (percentiles, mean and max) weights each run's mean step time by the
decode tokens it produced — steps inside a run differ by a few context tokens' KV reads, so the
mean stands for each of them.
Throughputs divide by the makespan (first arrival → last completion).
Reasoning: `thinking_tok` of a request's `output_tok` are thinking; `answer_tok` = the rest.
When some requests reason, `summary()["reasoning"]` splits TTFT/TPOT/E2E by reasoning on/off and
adds the time to the first *answer* token (`ttfa_s`, `time_to_first_answer_s`).
A cluster run (`simulator/cluster.py`) puts its GPU-seconds actually provisioned (autoscaling)
and per-replica utilisation in `meta["cluster"]`; the summary reports them under "cluster".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

PERCENTILES = (50, 90, 95, 99)


def _pcts(x: np.ndarray) -> dict[str, float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {f"p{p}": float("nan") for p in PERCENTILES} | {"mean": float("nan")}
    vals = np.percentile(x, PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, vals)} | {"mean": float(x.mean())}


def _weighted_pcts(values: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    if values.size == 0:
        return {f"p{p}": float("nan") for p in PERCENTILES} | {"mean": float("nan"), "max": float("nan")}
    order = np.argsort(values, kind="stable")
    v, cw = values[order], np.cumsum(weights[order])
    out = {}
    for p in PERCENTILES:
        i = int(np.searchsorted(cw, cw[-1] * p / 100.0, side="left"))
        out[f"p{p}"] = float(v[min(i, v.size - 1)])
    out["mean"] = float(np.average(values, weights=weights))
    out["max"] = float(v[-1])
    return out


@dataclass
class Result:
    """Per-request and per-step frames of one simulation, plus what is needed to summarise them."""

    requests: pd.DataFrame
    steps: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        r, s, m = self.requests, self.steps, self.meta
        done = r["finish_s"].notna().to_numpy()
        n_done = int(done.sum())
        start = float(r["arrival_s"].min()) if len(r) else 0.0
        end = float(r["finish_s"].max()) if n_done else start
        makespan = max(end - start, 1e-12)
        out_tok = float(r.loc[done, "output_tok"].sum())
        met = int(r["met_slo"].sum())
        cap = m.get("kv_capacity_blocks", 0) * m.get("num_replicas", 1)
        if len(s):
            dur = s["duration_s"].to_numpy()
            used = s["kv_blocks_used"].to_numpy()
            kv_peak = float(used.max()) / cap if cap else float("nan")
            kv_mean = float((used * dur).sum()) / (cap * makespan) if cap else float("nan")
            mean_step = dur / s["num_steps"].to_numpy()
            itl = _weighted_pcts(mean_step, (s["decode_tok"] * s["num_steps"]).to_numpy().astype(float))
            busy = float(dur.sum())
            num_steps = int(s["num_steps"].sum())
        else:
            kv_peak = kv_mean = float("nan")
            itl = _weighted_pcts(np.array([]), np.array([]))
            busy, num_steps = 0.0, 0
        prompt = float(r["prompt_tok"].sum())
        out = {
            "num_requests": int(len(r)),
            "finished": n_done,
            "makespan_s": makespan,
            "throughput_tok_s": out_tok / makespan,
            "throughput_req_s": n_done / makespan,
            "ttft_s": _pcts(r["ttft_s"].to_numpy()),
            "tpot_s": _pcts(r["tpot_s"].to_numpy()),
            "e2e_s": _pcts(r["e2e_s"].to_numpy()),
            "queue_s": _pcts(r["queue_s"].to_numpy()),
            "itl_s": itl,
            "kv_peak_frac": kv_peak,
            "kv_mean_frac": kv_mean,
            "preemptions": int(r["preemptions"].sum()),
            "prefix_hit_frac": float(r["prefix_hit_tok"].sum()) / prompt if prompt else 0.0,
            "slo_attainment": met / len(r) if len(r) else float("nan"),
            "goodput_req_s": met / makespan,
            "busy_frac": busy / (makespan * m.get("num_replicas", 1)),
            "num_steps": num_steps,
            "gpu_seconds": makespan * m.get("gpus_per_replica", 1) * m.get("num_replicas", 1),
            "predictor": m.get("predictor", ""),
            "sim_wall_s": m.get("sim_wall_s", float("nan")),
        }
        if "offload" in m:  # tiered KV offload: hit rates per tier (of prompt tokens), bytes moved, time saved
            o, bs = m["offload"], m.get("block_size_tok", 16)
            out["offload"] = {
                "hbm_hit_frac": m.get("kv_prefix_hit_blocks", 0) * bs / prompt if prompt else 0.0,
                **{f"{name}_hit_frac": t["hit_blocks"] * bs / prompt if prompt else 0.0 for name, t in o["tiers"].items()},
                "bytes_up": sum(t["bytes_up"] for t in o["tiers"].values()),
                "bytes_down": sum(t["bytes_down"] for t in o["tiers"].values()),
                "loads": o["loads"],
                "recompute_decisions": o["recomputes"],
                "prefill_saved_s": o["prefill_saved_s"],
                "tiers": o["tiers"],
            }
        if "speculative" in m:
            out["speculative"] = m["speculative"]
        if "cluster" in m:
            out["cluster"] = m["cluster"]
            out["gpu_seconds"] = provisioned = m["cluster"]["gpu_seconds_provisioned"]
            out["busy_frac"] = busy * m.get("gpus_per_replica", 1) / provisioned if provisioned > 0 else float("nan")  # of the replicas provisioned
        if "reasoning_on" in r and r["reasoning_on"].any():
            out["answer_tok_s"] = float(r.loc[done, "output_tok"].sum() - r.loc[done, "thinking_tok"].sum()) / makespan
            out["reasoning"] = {
                label: {
                    "num_requests": int(sel.sum()),
                    "thinking_tok_mean": float(r.loc[sel, "thinking_tok"].mean()) if sel.any() else float("nan"),
                    **{k: _pcts(r.loc[sel, k].to_numpy()) for k in ("ttft_s", "tpot_s", "e2e_s")},
                    "ttfa_s": _pcts(time_to_first_answer_s(r.loc[sel])),
                    "slo_attainment": float(r.loc[sel, "met_slo"].mean()) if sel.any() else float("nan"),
                }
                for label, sel in (("on", r["reasoning_on"].to_numpy()), ("off", ~r["reasoning_on"].to_numpy()))
            }
        return out

    def same_as(self, other: "Result") -> bool:
        """Identical simulated outcome (wall-clock time excluded)."""
        strip = lambda d: {k: v for k, v in d.items() if k != "sim_wall_s"}  # noqa: E731
        return self.requests.equals(other.requests) and self.steps.equals(other.steps) and strip(self.meta) == strip(other.meta)


def time_to_first_answer_s(r: pd.DataFrame) -> np.ndarray:
    """When the user sees the answer start: TTFT plus the thinking tokens at the request's mean
    decode pace (tpot_s). Runs of steps keep no per-token times, so the thinking's end is
    interpolated; exact when the request's steps all took the same time. No thinking: TTFT."""
    think = r["thinking_tok"].to_numpy()
    tpot = np.nan_to_num(r["tpot_s"].to_numpy())
    return r["ttft_s"].to_numpy() + np.where(think > 0, np.minimum(think, r["output_tok"].to_numpy() - 1) * tpot, 0.0)


def build_requests_frame(requests, output_tok, sched_s, first_s, finish_s, preemptions, hit_tok, slo) -> pd.DataFrame:
    """The per-request frame; `met_slo` applies each SLO bound that is set (SloSpec)."""
    arrival = np.asarray(requests.arrival_s, np.float64)
    out = np.asarray(output_tok, np.int64)
    ttft = first_s - arrival
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (finish_s - first_s) / np.maximum(out - 1, 1), np.nan)
    e2e = finish_s - arrival
    met = np.isfinite(finish_s)
    if slo is not None:
        if slo.ttft_p99_s is not None:
            met &= ttft <= slo.ttft_p99_s
        if slo.tpot_p99_s is not None:
            met &= ~(tpot > slo.tpot_p99_s)  # NaN (one-token output) has no TPOT to miss
        if slo.e2e_p99_s is not None:
            met &= e2e <= slo.e2e_p99_s
    names = np.asarray(requests.class_names, dtype=object)
    return pd.DataFrame(
        {
            "arrival_s": arrival,
            "prompt_tok": np.asarray(requests.prompt_tok, np.int64),
            "output_tok": out,
            "class": pd.Categorical.from_codes(np.asarray(requests.class_id, np.int64), categories=list(names)) if len(names) else None,
            "queue_s": sched_s - arrival,
            "ttft_s": ttft,
            "tpot_s": tpot,
            "itl_mean_s": tpot,
            "e2e_s": e2e,
            "finish_s": finish_s,
            "preemptions": np.asarray(preemptions, np.int32),
            "prefix_hit_tok": np.asarray(hit_tok, np.int64),
            "met_slo": met,
            "thinking_tok": np.minimum(np.asarray(requests.thinking_tok, np.int64), out),
            "reasoning_on": np.asarray(requests.reasoning_on, np.bool_),
        },
        copy=False,  # the arrays are ours; consolidating them would double peak memory at 1M requests
    )
