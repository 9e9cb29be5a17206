"""The contract every serving backend implements, and the per-request metrics all of them share.

Why one small Protocol: the calibration measures the same thing whatever engine serves the
requests (vLLM in-process, an OpenAI-compatible server over HTTP, transformers continuous
batching) — a list of requests with arrival times goes in, each request's first-token and finish
times come out. The fit and the validation only ever see `ServedRequest`s, so a backend is one
class with `replay` and nothing else (no engine-specific hooks in the interface).

Times are seconds relative to the start of the run (the moment `replay` began submitting), so a
burst is "all arrivals at 0". Metric definitions follow vLLM's benchmark_serving:
  ttft_s = first_token_s − arrival_s
  tpot_s = (finish_s − first_token_s) / (output_tok − 1)   (undefined for one-token outputs)
  e2e_s  = finish_s − arrival_s

This module imports only the standard library: it runs on the device machine, which has no
pydantic.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass
class ServeRequest:
    """One request to replay: when it arrives and how many tokens go in and must come out."""

    arrival_s: float
    prompt_tok: int
    output_tok: int


@dataclass
class ServedRequest:
    """What the engine did with one request (seconds from the run's start)."""

    arrival_s: float
    prompt_tok: int
    output_tok: int
    first_token_s: float
    finish_s: float
    token_times_s: list[float] | None = None


@runtime_checkable
class ServeBackend(Protocol):
    """A serving engine that replays requests at their arrival times and reports timestamps."""

    name: str
    engine_version: str

    def replay(self, requests: list[ServeRequest]) -> list[ServedRequest]:
        """Submit each request at its `arrival_s` (relative to the call), wait for all, return
        them in the input order. Output length is fixed: EOS is ignored."""
        ...


def burst(n: int, prompt_tok: int, output_tok: int) -> list[ServeRequest]:
    """N identical requests all arriving at t=0 — the shape used to measure step time at batch N."""
    return [ServeRequest(0.0, prompt_tok, output_tok) for _ in range(n)]


def request_metrics(r: ServedRequest) -> dict[str, float]:
    """ttft_s, tpot_s, e2e_s of one request (tpot_s is NaN for a one-token output)."""
    tpot = (r.finish_s - r.first_token_s) / (r.output_tok - 1) if r.output_tok > 1 else math.nan
    return {
        "ttft_s": r.first_token_s - r.arrival_s,
        "tpot_s": tpot,
        "e2e_s": r.finish_s - r.arrival_s,
    }


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), NaNs dropped; NaN when empty."""
    xs = sorted(v for v in values if not math.isnan(v))
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(served: list[ServedRequest]) -> dict[str, float]:
    """Run-level figures: throughput over the makespan and p50/p99 of each per-request metric.

    Makespan runs from the first arrival to the last finish, as in vLLM's benchmark_serving
    (`duration`), so idle time before the first request does not dilute throughput.
    """
    if not served:
        return {"num_requests": 0}
    per = [request_metrics(r) for r in served]
    start = min(r.arrival_s for r in served)
    end = max(r.finish_s for r in served)
    makespan = max(end - start, 1e-12)
    out_tok = sum(r.output_tok for r in served)
    in_tok = sum(r.prompt_tok for r in served)
    summary: dict[str, float] = {
        "num_requests": len(served),
        "makespan_s": makespan,
        "request_throughput_qps": len(served) / makespan,
        "output_throughput_tok_s": out_tok / makespan,
        "total_throughput_tok_s": (in_tok + out_tok) / makespan,
    }
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        vals = [m[metric] for m in per]
        summary[f"{metric}_p50"] = _percentile(vals, 50)
        summary[f"{metric}_p99"] = _percentile(vals, 99)
        finite = [v for v in vals if not math.isnan(v)]
        summary[f"{metric}_mean"] = sum(finite) / len(finite) if finite else math.nan
    return summary


def captures_summary(captures: list[tuple[float, float]] | None) -> dict[str, Any] | None:
    """The CUDA-graph captures of one replay (`TransformersBackend.last_captures`): how many, their
    seconds, and when (from the replay's start); None where the backend cannot see them."""
    if captures is None:
        return None
    return {"count": len(captures), "total_s": sum(d for _, d in captures),
            "at_s": [round(t, 4) for t, _ in captures], "seconds": [round(d, 4) for _, d in captures]}


def workload_key(workload: dict[str, Any]) -> str:
    """A short stable hash of a workload description (sorted JSON), for run-log keys."""
    text = json.dumps(workload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def replay_record(
    *,
    key: str,
    backend: ServeBackend,
    model: str,
    gpu: str,
    workload: dict[str, Any],
    served: list[ServedRequest],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run-log record of one replay: the workload, every request's timestamps, the summary.

    `workload` describes how the requests were made (kind, rate, length distribution, seed...);
    `extra` carries backend settings and power/energy figures. Everything a later fit or
    validation needs is in the record — it never reruns the engine.
    """
    rec: dict[str, Any] = {
        "kind": "serve_replay",
        "key": key,
        "backend": backend.name,
        "engine_version": backend.engine_version,
        "model": model,
        "gpu": gpu,
        "workload": workload,
        "requests": [asdict(r) for r in served],
        "summary": summarize(served),
    }
    if extra:
        rec.update(extra)
    return rec


def served_from_record(record: dict[str, Any]) -> list[ServedRequest]:
    """Rebuild the ServedRequests of a `serve_replay` record (for fit/validate)."""
    return [ServedRequest(**r) for r in record["requests"]]


def read_length_pairs(csv_path: str, prompt_col: str = "num_prefill_tokens",
                      output_col: str = "num_decode_tokens") -> list[tuple[int, int]]:
    """(prompt_tok, output_tok) rows of a Splitwise/Vidur-style trace CSV (stdlib csv)."""
    import csv

    with open(csv_path, newline="", encoding="utf-8") as f:
        return [(int(float(row[prompt_col])), int(float(row[output_col]))) for row in csv.DictReader(f)]


def poisson_requests(rate_qps: float, num_requests: int, lengths: list[tuple[int, int]], seed: int = 0,
                     max_prompt_tok: int | None = None, max_output_tok: int | None = None) -> list[ServeRequest]:
    """Poisson arrivals at `rate_qps` (exponential gaps) with lengths drawn from `lengths`.

    Lengths are sampled with replacement from real (prompt, output) pairs so their correlation is
    kept; optional caps clip long tails to keep a calibration run short (say so in the workload).
    The first request arrives at t=0. Seeded: the same arguments give the same requests.
    """
    import random

    if rate_qps <= 0:
        raise ValueError("rate_qps must be > 0")
    rng = random.Random(seed)
    t = 0.0
    out = []
    for i in range(num_requests):
        if i:
            t += rng.expovariate(rate_qps)
        p, o = lengths[rng.randrange(len(lengths))]
        if max_prompt_tok:
            p = min(p, max_prompt_tok)
        if max_output_tok:
            o = min(o, max_output_tok)
        out.append(ServeRequest(t, max(1, p), max(1, o)))
    return out


def pure_decode_step_s(served: list[ServedRequest]) -> float:
    """Median inter-token gap while *every* request of a burst is decoding, NaN if never.

    In a burst of N identical requests the window between the last first-token and the first
    finish holds only decode steps at batch N (no prefill chunks mixed in), so its token gaps
    are the decode step time at batch N. Needs per-token times.
    """
    if not served or any(not r.token_times_s for r in served):
        return math.nan
    lo = max(r.first_token_s for r in served)
    hi = min(r.finish_s for r in served)
    gaps = []
    for r in served:
        ts = r.token_times_s or []
        gaps += [b - a for a, b in zip(ts, ts[1:]) if a >= lo and b <= hi]
    return _percentile(gaps, 50)
