"""One command per calibration group on a lent GPU: `python3 -m calibrate.device_runs {check|train|serve} --out DIR`.

Why a driver separate from the CLI: the device machine has torch/transformers/peft/pynvml but
no pydantic, simpy or typer-app imports of ours, and each call there is short and precious. This
module imports only the device-safe modules (probe, power, train, serve_base,
serve_transformers, runlog), runs a whole group in priority order inside a time budget, logs
progress to stderr, tolerates failures per run (logged, the group goes on), appends every
finished measurement to `DIR/<group>.jsonl` at once, and prints a compact summary table last.

Groups (the H100 plan of issue 5; `repeat` re-measures the held-out set for its noise floor):
- check: software versions, the continuous-batching API as installed, the probe (identity and
  ceilings), one LoRA run and one small burst on the Llama-3.2-1B shape.
- train: FIT set on Llama-3.2-1B (seq × micro-batch grid with and without gradient
  checkpointing at r=16; r=64 and full fine-tune at a few points; a few Llama-3.2-3B points) and
  the HELD-OUT set on Llama-3.1-8B (seq 2048, micro-batch 1 and 4, ckpt on/off, r 16 and 64).
- serve: bursts of N identical requests (step time at batch N; prefill time at N=1) and Poisson
  replays at fractions of the measured capacity with trace-sampled lengths, for Llama-3.2-1B
  (fit) and Llama-3.1-8B (held-out).
- host: the training runs again with host (launch) time per step, QLoRA where bitsandbytes is.
- warm: the trace replays on a warm engine (one untimed pass first; graph captures timed), at the
  rates of `--capacity-log`.
- gemmgrid: the probe's GEMM grid alone (`gemm_grid.json`).

`--seed-log PATH` copies an earlier log of the same group first, so a rerun skips what is done.
`--budget-s` stops *starting* runs once spent, so the command ends inside the lease.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from calibrate.runlog import RunLog, write_atomic
from calibrate.serve_base import (ServeRequest, burst, captures_summary, poisson_requests, pure_decode_step_s,
                                  read_length_pairs, replay_record, summarize, workload_key)

REPO_ROOT = Path(__file__).resolve().parent.parent
TRACE_CSV = REPO_ROOT / "tests" / "fixtures" / "calibrate_traces" / "splitwise_conv_head1000.csv"
FIT_MODEL, MID_MODEL, HELDOUT_MODEL = "Llama-3.2-1B", "Llama-3.2-3B", "Llama-3.1-8B"

_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------- plans
def train_plan(tiny: bool = False) -> list:
    """Training runs in priority order (fit grid, held-out 8B, then extras)."""
    from calibrate.train import TrainRun

    if tiny:  # the same code path on CPU with a 2-layer model
        return [TrainRun("tiny-llama", "lora", s, b, c, 8, warmup_steps=1, timed_steps=2)
                for s in (32, 64) for b in (1, 2) for c in (False, True)] + [
            TrainRun("tiny-llama", "full", 64, 2, True, warmup_steps=1, timed_steps=2)]
    runs = [TrainRun(FIT_MODEL, "lora", s, b, c, 16)
            for c in (False, True) for s in (512, 1024, 2048, 4096) for b in (1, 2, 4, 8)]
    runs += [TrainRun(HELDOUT_MODEL, "lora", 2048, b, c, r) for r in (16, 64) for b in (1, 4) for c in (False, True)]
    runs += [TrainRun(FIT_MODEL, "lora", s, b, c, 64) for s in (1024, 4096) for b in (1, 4) for c in (False, True)]
    runs += [TrainRun(FIT_MODEL, "full", s, b, True) for s in (1024, 2048) for b in (1, 4)]
    runs += [TrainRun(FIT_MODEL, "full", 2048, 1, False)]
    runs += [TrainRun(MID_MODEL, "lora", 2048, b, c, 16) for b in (1, 4) for c in (False, True)]
    return runs


def serve_plan(tiny: bool = False) -> list[dict[str, Any]]:
    """Serving measurements in priority order; each item: model, kind, and its parameters."""
    if tiny:
        return [{"model": "tiny-llama", "kind": "burst", "n": n, "prompt_tok": p, "output_tok": 8}
                for n in (1, 4) for p in (16, 64)] + [
            {"model": "tiny-llama", "kind": "capacity", "n": 8, "max_prompt_tok": 64, "max_output_tok": 8},
            {"model": "tiny-llama", "kind": "poisson", "load": 0.5, "duration_s": 1.0, "max_prompt_tok": 64,
             "max_output_tok": 8}]
    plan: list[dict[str, Any]] = []
    for model, ns, prompts, out, loads in (
            (FIT_MODEL, (1, 4, 16, 64, 128), (128, 512, 2048), 128, (0.25, 0.5, 0.75)),
            (HELDOUT_MODEL, (1, 16, 64), (128, 2048), 64, (0.3, 0.7))):
        plan += [{"model": model, "kind": "burst", "n": n, "prompt_tok": p, "output_tok": out}
                 for p in prompts for n in ns]
        plan.append({"model": model, "kind": "capacity", "n": 64, "max_prompt_tok": 4096, "max_output_tok": 512})
        plan += [{"model": model, "kind": "poisson", "load": ld, "duration_s": 25.0, "max_prompt_tok": 4096,
                  "max_output_tok": 512} for ld in loads]
    # Extras once the above is in: a third size (Llama-3.2-3B) and near-saturation loads.
    plan += [{"model": MID_MODEL, "kind": "burst", "n": n, "prompt_tok": p, "output_tok": 64}
             for p in (128, 2048) for n in (1, 16, 64)]
    plan.append({"model": MID_MODEL, "kind": "capacity", "n": 64, "max_prompt_tok": 4096, "max_output_tok": 512})
    plan += [{"model": MID_MODEL, "kind": "poisson", "load": ld, "duration_s": 25.0, "max_prompt_tok": 4096,
              "max_output_tok": 512} for ld in (0.5,)]
    plan += [{"model": m, "kind": "poisson", "load": 0.9, "duration_s": 30.0, "max_prompt_tok": 4096,
              "max_output_tok": 512} for m in (HELDOUT_MODEL, FIT_MODEL)]
    return plan


# ----------------------------------------------------------------------------------- groups
def group_check(out: Path, budget_s: float, tiny: bool) -> list[dict[str, Any]]:
    import inspect

    import torch
    import transformers

    from calibrate.probe import run_probe

    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                            "transformers": transformers.__version__, "cuda": torch.cuda.is_available()}
    try:
        import peft
        info["peft"] = peft.__version__
    except ImportError as e:
        info["peft"] = f"missing: {e}"
    try:
        from transformers.generation.continuous_batching import continuous_api as ca
        from transformers.generation.continuous_batching import requests as rq
        info["init_continuous_batching"] = str(inspect.signature(ca.ContinuousMixin.init_continuous_batching))
        info["add_request"] = str(inspect.signature(ca.ContinuousBatchingManager.add_request))
        info["generate_batch"] = str(inspect.signature(ca.ContinuousMixin.generate_batch))
        info["GenerationOutput"] = [f for f in rq.GenerationOutput.__dataclass_fields__]
        from calibrate.serve_transformers import _cb_config_class
        import dataclasses
        info["ContinuousBatchingConfig"] = [f.name for f in dataclasses.fields(_cb_config_class())]
    except Exception as e:  # noqa: BLE001 - the point of check is to report what is there
        info["cb_api_error"] = f"{type(e).__name__}: {e}"
    for mod in ("flash_attn", "kernels", "pynvml", "numpy", "pydantic"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "present")
        except ImportError:
            info[mod] = None
    log("versions: " + json.dumps(info))
    write_atomic(out / "check.json", json.dumps(info, indent=2))
    log("probe ...")
    probe = run_probe(quick=tiny, progress=log)
    write_atomic(out / "probe.json", json.dumps(probe, indent=2))
    rows.append({"what": "probe", **probe["headline"]})
    for g in probe["gemm"]:
        rows.append({"what": f"gemm M={g['m']} N={g['n']} K={g['k']}", "tflops": round(g["tflops"], 1),
                     "gb_s": round(g["gb_s"], 0), "time_us": round(g["time_s"] * 1e6, 1)})
    rows += group_train(out, budget_s, tiny, plan=train_plan(tiny)[:1] if tiny else [
        __import__("calibrate.train", fromlist=["TrainRun"]).TrainRun(FIT_MODEL, "lora", 1024, 2, False, 16)],
        log_name="check.jsonl")
    rows += group_serve(out, budget_s, tiny, plan=serve_plan(tiny)[:2] if tiny else [
        {"model": FIT_MODEL, "kind": "burst", "n": 16, "prompt_tok": 512, "output_tok": 64},
        {"model": FIT_MODEL, "kind": "burst", "n": 64, "prompt_tok": 2048, "output_tok": 64}], log_name="check.jsonl")
    return rows


def _train_row(rec: dict[str, Any]) -> dict[str, Any]:
    adapter = {"lora": f"r{rec['lora_r']}", "qlora": f"q{rec['lora_r']}"}.get(rec["method"], "full")
    row = {"what": f"{rec['model']} {adapter} s{rec['seq_len_tok']} b{rec['micro_batch']} ck{int(rec['grad_ckpt'])}"}
    if rec.get("error"):
        row["result"] = "OOM" if rec.get("oom") else rec["error"][:60]
    else:
        row.update({"step_ms": round(rec["step_time_s"] * 1e3, 1), "tok_s": round(rec["tokens_per_s"]),
                    "peak_alloc_gib": round(rec["max_allocated_gib"] or 0, 2),
                    "peak_resv_gib": round(rec["max_reserved_gib"] or 0, 2),
                    "W": round(rec["power"].get("mean_power_w") or 0)})
        if rec.get("host_time_s"):
            row["host_ms"] = round(rec["host_time_s"] * 1e3, 1)
    return row


def group_train(out: Path, budget_s: float, tiny: bool, plan: list | None = None,
                log_name: str = "train.jsonl") -> list[dict[str, Any]]:
    from calibrate.train import TrainSession

    runlog = RunLog(out / log_name)
    runs = plan if plan is not None else train_plan(tiny)
    done = runlog.done_keys("train")
    rows = [_train_row(r) for r in runlog.records("train")]
    todo = [r for r in runs if r.key not in done]
    log(f"train: {len(todo)} runs to do ({len(runs) - len(todo)} already in the log)")
    session = None
    for i, run in enumerate(todo):
        if time.perf_counter() - _T0 > budget_s:
            log(f"train: budget spent, {len(todo) - i} runs left for a later call")
            break
        try:
            if session is None or session.model_name != run.model or session.base_quant != run.base_quant:
                if session is not None:
                    session.close()
                    session = None
                session = TrainSession(run.model, device=None if not tiny else "cpu", base_quant=run.base_quant)
                log(f"built {run.model}{' (NF4 base)' if run.base_quant else ''} ({session.params_total / 1e9:.2f} B) "
                    f"in {session.build_s:.1f} s")
            t = time.perf_counter()
            rec = session.run(run)
            runlog.append(rec)
            row = _train_row(rec)
            rows.append(row)
            log(f"train {i + 1}/{len(todo)} {run.key}: {row} ({time.perf_counter() - t:.1f} s)")
        except Exception as e:  # noqa: BLE001 - log, keep going
            log(f"train {run.key} FAILED: {type(e).__name__}: {e}")
            traceback.print_exc()
            rows.append({"what": run.key, "result": f"FAILED {type(e).__name__}"})
    if session is not None:
        session.close()
    return rows


def _serve_row(rec: dict[str, Any]) -> dict[str, Any]:
    w, s = rec["workload"], rec["summary"]
    if w["kind"] == "burst":
        what = f"{rec['model']} burst n{w['n']} p{w['prompt_tok']} o{w['output_tok']}"
    else:
        qps = w["rate_qps"] if w["kind"] == "poisson" else s["request_throughput_qps"]
        what = f"{rec['model']} {w['kind']} {qps:.2f}qps n{s['num_requests']}"
    row = {"what": what, "ttft_p50_ms": round(s["ttft_s_p50"] * 1e3, 1), "tpot_p50_ms": round(s["tpot_s_p50"] * 1e3, 2),
           "out_tok_s": round(s["output_throughput_tok_s"])}
    d = rec.get("derived", {})
    if d.get("pure_decode_step_s") is not None and not math.isnan(d["pure_decode_step_s"]):
        row["decode_step_ms"] = round(d["pure_decode_step_s"] * 1e3, 2)
    return row


def group_serve(out: Path, budget_s: float, tiny: bool, plan: list[dict[str, Any]] | None = None,
                log_name: str = "serve.jsonl", capacity_log: str | None = None) -> list[dict[str, Any]]:
    import torch

    from calibrate.power import PowerSampler
    from calibrate.probe import gpu_identity
    from calibrate.serve_transformers import TransformersBackend

    runlog = RunLog(out / log_name)
    items = plan if plan is not None else serve_plan(tiny)
    lengths = read_length_pairs(str(TRACE_CSV))
    ident = gpu_identity()
    gpu = ident["name"] if ident else "cpu"
    done = runlog.done_keys("serve_replay")
    rows = [_serve_row(r) for r in runlog.records("serve_replay")]
    capacity: dict[str, float] = {}
    for src in ([RunLog(Path(capacity_log))] if capacity_log else []) + [runlog]:
        capacity.update({r["model"]: r["summary"]["request_throughput_qps"]
                         for r in src.records("serve_replay") if r["workload"]["kind"] == "capacity"
                         and not r["workload"].get("warm")})
    backend = None
    for i, item in enumerate(items):
        if time.perf_counter() - _T0 > budget_s:
            log(f"serve: budget spent, {len(items) - i} items left for a later call")
            break
        model = item["model"]
        try:
            workload, requests = _workload(item, lengths, capacity)
        except KeyError:
            log(f"serve {item}: no capacity measured for {model}, skipped")
            continue
        key = f"serve/transformers/{model}/{workload['kind']}/{workload_key(workload)}"
        if key in done:
            continue
        try:
            if backend is None or backend.model_name != model:
                if backend is not None:
                    backend.close()
                    backend = None
                # CUDA graphs on: measured on the H100 (benchmarks/transformers_cb_engine.py) they
                # cut the 1B decode step at batch 16 from 59 ms to 12.6 ms; async batching made it
                # 5x slower. The graphs' private pool (~10 GiB) is not in the engine's memory plan,
                # so the KV cache gets 60% of the free memory instead of its default 90% (which
                # ran out of memory at N=128 × 2048 tokens). The engine's defaults otherwise.
                backend = TransformersBackend(model, device="cpu" if tiny else None,
                                              dtype=torch.float32 if tiny else torch.bfloat16,
                                              kv_cache_tok=8192 if tiny else None,
                                              use_cuda_graph=None if tiny else True,
                                              max_memory_percent=None if tiny else 0.6)
                # One unrecorded burst first: the first requests pay one-off costs (allocator
                # growth, lazy kernel loads) that are not part of the engine's steady state.
                backend.replay(burst(4, 64, 8))
                log(f"engine for {model}: built {backend.build_s:.1f} s, warm-up {backend.warmup_s:.1f} s; "
                    f"{json.dumps(backend.engine_settings()['continuous_batching_config'])}")
            t = time.perf_counter()
            extra: dict[str, Any] = {}
            if workload["kind"] == "burst":
                # The engine captures a CUDA graph the first time it meets a padded batch shape;
                # an unrecorded short pass over the same (N, prompt) keeps that out of the timing.
                backend.replay(burst(workload["n"], workload["prompt_tok"], 4))
                extra["pre_pass_output_tok"] = 4
            if workload.get("warm"):
                cold = backend.replay(requests)
                extra["cold_pass"] = {"summary": summarize(cold),
                                      "graph_captures": captures_summary(backend.last_captures)}
            with PowerSampler() as power:
                served = backend.replay(requests)
            extra["graph_captures"] = captures_summary(backend.last_captures)
            rec = replay_record(key=key, backend=backend, model=model, gpu=gpu, workload=workload, served=served,
                                extra={"engine_settings": backend.engine_settings(), "power": power.result(),
                                       "model_config": backend.config, **extra})
            if workload["kind"] == "burst":
                rec["derived"] = {"pure_decode_step_s": pure_decode_step_s(served),
                                  "decode_batch": workload["n"],
                                  "context_tok_mid": workload["prompt_tok"] + workload["output_tok"] / 2}
            if rec["power"].get("available"):
                tok = sum(r.prompt_tok + r.output_tok for r in served)
                rec["energy_per_token_j"] = rec["power"]["energy_j"] / tok
            if workload["kind"] == "capacity":
                capacity[model] = rec["summary"]["request_throughput_qps"]
            runlog.append(rec)
            row = _serve_row(rec)
            rows.append(row)
            log(f"serve {i + 1}/{len(items)} {key}: {row} ({time.perf_counter() - t:.1f} s)")
        except Exception as e:  # noqa: BLE001 - log, keep going
            log(f"serve {key} FAILED: {type(e).__name__}: {e}")
            traceback.print_exc()
            rows.append({"what": key, "result": f"FAILED {type(e).__name__}: {str(e)[:60]}"})
            if backend is not None:  # a failed engine may hold its memory: start afresh
                try:
                    backend.close()
                except Exception as close_err:  # noqa: BLE001
                    log(f"closing the engine failed too: {close_err}")
                backend = None
    if backend is not None:
        backend.close()
    return rows


def _workload(item: dict[str, Any], lengths: list[tuple[int, int]],
              capacity: dict[str, float]) -> tuple[dict[str, Any], list[ServeRequest]]:
    """The workload description (for the record and key) and its requests."""
    kind = item["kind"]
    if kind == "burst":
        w = {"kind": "burst", "n": item["n"], "prompt_tok": item["prompt_tok"], "output_tok": item["output_tok"]}
        return w, burst(item["n"], item["prompt_tok"], item["output_tok"])
    caps = {"max_prompt_tok": item["max_prompt_tok"], "max_output_tok": item["max_output_tok"]}
    warm = {"warm": True} if item.get("warm") else {}  # replayed once untimed first (steady state)
    src = {"lengths": TRACE_CSV.name, **caps, "seed": 0}
    if kind == "capacity":
        # A burst of trace-sampled requests: its request throughput is the saturated capacity
        # that the Poisson loads below are fractions of.
        reqs = [ServeRequest(0.0, r.prompt_tok, r.output_tok)
                for r in poisson_requests(1.0, item["n"], lengths, seed=0, **caps)]
        return {"kind": "capacity", "n": item["n"], **src, **warm}, reqs
    rate = round(item["load"] * capacity[item["model"]], 4)
    n = max(20, int(rate * item["duration_s"]))
    w = {"kind": "poisson", "load_fraction": item["load"], "rate_qps": rate, "num_requests": n, **src, "seed": 1, **warm}
    return w, poisson_requests(rate, n, lengths, seed=1, **caps)


# ----------------------------------------------------------------------------------- main
def print_table(rows: list[dict[str, Any]]) -> None:
    """Plain fixed-width tables on stdout, one per run of rows with the same columns (the
    device reply keeps only the output's tail, so it must be compact)."""
    if not rows:
        print("(no results)")
        return
    blocks: list[list[dict[str, Any]]] = []
    for r in rows:
        if blocks and list(blocks[-1][0]) == list(r):
            blocks[-1].append(r)
        else:
            blocks.append([r])
    for block in blocks:
        cols = list(block[0])
        widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in block)) for c in cols}
        print("  ".join(c.ljust(widths[c]) for c in cols))
        for r in block:
            print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))
        print()


def repeat_plan(tiny: bool = False) -> list:
    """A second, independent measurement of the held-out 8B set and four 1B fit points, with 10
    timed steps: the run-to-run spread is the noise floor any step-time prediction is judged
    against."""
    from calibrate.train import TrainRun

    if tiny:
        return [TrainRun("tiny-llama", "lora", 32, 1, c, 8, warmup_steps=1, timed_steps=3) for c in (False, True)]
    runs = [TrainRun(HELDOUT_MODEL, "lora", 2048, b, c, r, timed_steps=10)
            for r in (16, 64) for b in (1, 4) for c in (False, True)]
    runs += [TrainRun(FIT_MODEL, "lora", 2048, b, c, 16, timed_steps=10) for b in (1, 4) for c in (False, True)]
    return runs


def group_repeat(out: Path, budget_s: float, tiny: bool) -> list[dict[str, Any]]:
    return group_train(out, budget_s, tiny, plan=repeat_plan(tiny), log_name=LOG_NAMES["repeat"])


def host_plan(tiny: bool = False) -> list:
    """The second training pass (`train_host.jsonl`): every run records its host (launch) time
    beside its wall time, and QLoRA runs on an NF4 base join where bitsandbytes is present.
    Priority: the held-out 8B set (10 timed steps), QLoRA on 8B and 1B, then the whole 1B fit
    grid and the 3B points again — a second measurement of each key, from another machine start."""
    from calibrate.train import TrainRun

    if tiny:
        return [TrainRun("tiny-llama", m, 32, 1, c, 8, warmup_steps=1, timed_steps=2)
                for m in ("lora", "qlora") for c in (False, True)]
    runs = [TrainRun(HELDOUT_MODEL, "lora", 2048, b, c, r, timed_steps=10)
            for r in (16, 64) for b in (1, 4) for c in (False, True) if not (b == 4 and not c)]
    runs += [TrainRun(HELDOUT_MODEL, "qlora", 2048, b, c, 16, timed_steps=8) for b in (1, 4) for c in (False, True)]
    runs += [TrainRun(FIT_MODEL, "qlora", s, b, c, 16) for s in (1024, 2048, 4096) for b in (1, 4) for c in (False, True)]
    return runs + [r for r in train_plan() if r.model != HELDOUT_MODEL]


def group_host(out: Path, budget_s: float, tiny: bool) -> list[dict[str, Any]]:
    return group_train(out, budget_s, tiny, plan=host_plan(tiny), log_name=LOG_NAMES["host"])


def warm_plan(tiny: bool = False) -> list[dict[str, Any]]:
    """Steady-state serving (`serve_warm.jsonl`): each trace replay runs twice on one engine, the
    first pass untimed — it meets the batch shapes and the engine captures their CUDA graphs —
    the second recorded, with the captures of both passes timed. Loads as in `serve_plan`, at the
    capacities the first serving pass measured (`--capacity-log`), so the keys line up."""
    if tiny:
        return [{"model": "tiny-llama", "kind": "poisson", "load": 0.5, "duration_s": 1.0, "max_prompt_tok": 64,
                 "max_output_tok": 8, "warm": True}]
    caps = {"max_prompt_tok": 4096, "max_output_tok": 512, "warm": True}
    # priority: the loads whose cold replays missed most, each model once, then the rest
    order = ((FIT_MODEL, 0.25, 25.0), (FIT_MODEL, 0.9, 30.0), (FIT_MODEL, 0.5, 25.0), (HELDOUT_MODEL, 0.3, 25.0),
             (HELDOUT_MODEL, 0.9, 30.0), (MID_MODEL, 0.5, 25.0), (FIT_MODEL, 0.75, 25.0), (HELDOUT_MODEL, 0.7, 25.0))
    plan = [{"model": m, "kind": "poisson", "load": ld, "duration_s": d, **caps} for m, ld, d in order]
    plan += [{"model": m, "kind": "capacity", "n": 64, **caps} for m in (HELDOUT_MODEL, MID_MODEL, FIT_MODEL)]
    return plan


def group_warm(out: Path, budget_s: float, tiny: bool, capacity_log: str | None = None) -> list[dict[str, Any]]:
    return group_serve(out, budget_s, tiny, plan=warm_plan(tiny), log_name=LOG_NAMES["warm"], capacity_log=capacity_log)


def group_gemmgrid(out: Path, budget_s: float, tiny: bool) -> list[dict[str, Any]]:
    """Only the probe's GEMM grid (`calibrate.probe.gemm_grid`), into `gemm_grid.json`."""
    import torch

    from calibrate.probe import gemm_grid

    cuda = torch.cuda.is_available()
    grid = gemm_grid(torch.device("cuda" if cuda else "cpu"), torch.bfloat16 if cuda else torch.float32, tiny, log)
    write_atomic(out / LOG_NAMES["gemmgrid"], json.dumps(grid, indent=0))
    return [{"what": f"gemm M={g['m']} K={g['k']} N={g['n']}", "tflops": round(g["tflops"], 1)} for g in grid
            if g["k"] == g["n"] or g["n"] > 100000]


LOG_NAMES = {"check": "check.jsonl", "train": "train.jsonl", "serve": "serve.jsonl", "repeat": "train_repeat.jsonl",
             "host": "train_host.jsonl", "warm": "serve_warm.jsonl",
             "gemmgrid": "gemm_grid.json"}  # the log (or, for the grid, the file) each group writes
GROUPS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "check": group_check, "train": group_train, "serve": group_serve, "repeat": group_repeat, "host": group_host,
    "warm": group_warm, "gemmgrid": group_gemmgrid}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m calibrate.device_runs", description=__doc__.splitlines()[0])
    ap.add_argument("group", choices=sorted(GROUPS))
    ap.add_argument("--out", required=True, help="folder for the run log and JSON files")
    ap.add_argument("--budget-s", type=float, default=480.0, help="stop starting runs after this many seconds")
    ap.add_argument("--seed-log", help="an earlier log of this group to resume from")
    ap.add_argument("--tiny", action="store_true", help="tiny model on CPU: the same code path, in seconds")
    ap.add_argument("--capacity-log", help="a serving log whose capacity bursts set the Poisson rates (warm group)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.seed_log and Path(a.seed_log).is_file():
        shutil.copyfile(a.seed_log, out / LOG_NAMES[a.group])
        log(f"resuming from {a.seed_log}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    opts = {"capacity_log": a.capacity_log} if a.capacity_log and a.group in ("serve", "warm") else {}
    rows = GROUPS[a.group](out, a.budget_s, a.tiny, **opts)
    log(f"{a.group} done in {time.perf_counter() - _T0:.0f} s")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
