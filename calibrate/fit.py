"""Runs → Profile: fit the step-time coefficients, the training terms and the energy terms.

Reading guide: `fit_profile(records, ...)` is the entry point (run-log records in, a `FitResult`
with the versioned `models.profile.Profile` out); `load_runs(dir)` reads every `*.jsonl` run log
and the probe of a calibration folder. The three fits are independent:

1. **Step time** (`fit_step_time`). The simulator charges an engine iteration
       t = c0_s + c0_layer_s·num_layers + c0_seq_s·num_seqs + c1·linear_FLOPs/peak
             + c2·weight_bytes/BW + c3·attn_prefill_FLOPs/peak + c4·KV_bytes_read/BW    (DESIGN.md, predictor)
   which is linear in the coefficients. For the transformers CB engine (`attention_padding_of`:
   one masked attention over the whole step, buffers padded for CUDA graphs) the features are
   the padded sizes the engine computes and c3 prices its score matrix (`simulator.predictor.
   padded_attention`, `FittedPredictor._padded_lines`); c0_seq_s is its per-request host work. The feature of coefficient k for a step is therefore the time
   `FittedPredictor` itself predicts with the unit vector e_k as coefficients
   (`feature_matrix`): the fit and the simulator cannot disagree on a feature, whatever the
   predictor's bookkeeping (context conventions, prefill pairs, future terms). An *observation*
   is a measured time over one or more steps (features add up, so a multi-step span is the sum of
   its steps' rows). Observations come from:
   - vLLM per-step records (`steps`: the scheduler's own batch composition and the wall time of
     `engine.step()`), one observation per timed step;
   - bursts of N identical requests when the backend gives no per-step data (transformers CB,
     HTTP): the **decode** step at batch N is the mean token gap in the window where all N
     requests are decoding (between the last first token and the first finish, so no prefill
     chunk is mixed in), at the mean context of that window; the **prefill** at N = 1 is the
     TTFT, split into the chunks the step budget allows.
   Coefficients are non-negative (a negative inverse efficiency is unphysical), so the solver is
   `scipy.optimize.nnls` (Lawson & Hanson 1974). Rows are divided by the measured time, so the
   fit minimises *relative* error: a 2 ms decode step counts as much as a 200 ms prefill.

2. **Training** (`fit_training`), on the FIT model's runs only (never on held-out runs): the
   per-step model of `simulator.training.train_step_time_s` — FLOPs at an asymptotic MFU plus a
   fixed per-layer host overhead — fitted the same way (NNLS on relative error), one MFU per
   (method, gradient checkpointing) setup; and the memory beyond `training_memory_plan`'s
   analytic terms (the allocator's peak reserve minus the plan without its default overhead):
   the median over the fit runs, because the residual is a constant (CUDA/cuBLAS workspaces,
   allocator rounding) rather than a proportion.

3. **Energy** (`fit_energy`): a run's energy E = idle_w·duration + e_prefill·P + e_decode·D over
   the serving runs whose board power was sampled, idle_w being the probe's board power at rest
   (NNLS again: the per-token energies are ≥ 0).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from models.catalog import ModelCard, card_from_config, load_model
from models.errors import LifecostError
from models.gpus import GpuCard, load_gpu
from models.profile import (AttentionPadding, Ceilings, EnergyTerms, FitStats, Profile, ProfileEngine, ProfileGpu,
                            StepTimeCoeffs, TrainingTerms)
from simulator.predictor import FittedPredictor, StepFeatures

COEFF_NAMES = ("c0_s", "c0_layer_s", "c0_seq_s", "c1", "c2", "c3", "c4")
ENGINE_NAMES = {"transformers": "transformers-cb", "vllm": "vllm", "http": "openai-http", "openai-http": "openai-http"}


# ------------------------------------------------------------------------------------ inputs
@dataclass
class Runs:
    """Everything a calibration folder holds: run-log records by kind and the probe."""

    records: list[dict[str, Any]]
    probe: dict[str, Any] | None = None
    source: str = ""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]


def load_runs(path: str | Path) -> Runs:
    """Read every `*.jsonl` run log under `path` (or the one file) and the probe next to them.

    The probe is `probe.json` in the folder, its parent or grandparent (the layout of
    `models/profiles/<gpu>/`: `probe.json` beside `runs/` or beside `<engine>/runs/`), else a
    `kind: probe` record in a log.
    """
    from calibrate.runlog import RunLog

    p = Path(path)
    if not p.exists():
        raise LifecostError(f"{p} does not exist", field="--runs", fix="give a folder of calibration run logs (*.jsonl)")
    files = [p] if p.is_file() else sorted(p.rglob("*.jsonl"))
    if not files:
        raise LifecostError(f"no *.jsonl run logs under {p}", field="--runs",
                            fix="run `lifecost calibrate all` (or train/serve) first")
    by_key: dict[str, list[dict[str, Any]]] = {}
    records: list[dict[str, Any]] = []
    for f in files:
        for rec in RunLog(f).records():
            key = rec.get("key")
            if key is None:
                records.append(rec)
            elif key not in by_key:
                by_key[key] = [rec]
                records.append(rec)
            else:
                by_key[key].append(rec)
    # a measurement repeated in several logs: training runs pool their timed steps (another machine
    # start is another sample of the launch-bound steps' spread); anything else keeps the first
    records = [pool_train_records(by_key[r["key"]]) if r.get("key") in by_key and r.get("kind") == "train" else r
               for r in records]
    probe = None
    folder = p if p.is_dir() else p.parent
    for cand in (folder / "probe.json", folder.parent / "probe.json", folder.parent.parent / "probe.json"):
        if cand.is_file():
            probe = json.loads(cand.read_text(encoding="utf-8"))
            break
    if probe is None:
        probe = next((r for r in records if r.get("kind") == "probe"), None)
    return Runs(records, probe, str(p))


def pool_train_records(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """One training record from repeated measurements of one key: the first record, with step
    (and host) time the median over every timed step of every measurement that completed, and
    `measurements` saying how many were pooled. Why pool rather than keep one: launch-bound steps
    move ±15 % between machine starts (models/profiles/h100-sxm/README.md), and the median of all
    steps is the better estimate of what a user will see; compute-bound steps agree to < 1 %."""
    ok = [r for r in recs if r.get("step_time_s") and not r.get("error")]
    if len(ok) < 2:
        return ok[0] if ok else recs[0]

    def timed(r: dict[str, Any], name: str) -> list[float]:
        xs = r.get(name) or []
        return list(xs[int(r.get("warmup_steps") or 0):])

    steps = [t for r in ok for t in timed(r, "step_times_s")]
    if not steps:
        return ok[0]
    out = dict(ok[0])
    out["step_time_s"] = float(np.median(steps))
    out["tokens_per_s"] = out["tokens_per_step"] / out["step_time_s"] if out.get("tokens_per_step") else out.get("tokens_per_s")
    hosts = [t for r in ok for t in timed(r, "host_times_s")]
    if hosts:  # older logs did not record host time: the median over those that did
        out["host_time_s"] = float(np.median(hosts))
    out["measurements"] = len(ok)
    return out


def card_of(rec: dict[str, Any]) -> ModelCard:
    """The model card of a record: its embedded config, else the catalog entry of its name."""
    cfg = rec.get("model_config")
    if isinstance(cfg, dict) and cfg.get("model_type"):
        return card_from_config(cfg, name=str(rec.get("model", "custom")))
    return load_model(rec["model"])


TRAIN_GEMM_MIN_M, TRAIN_GEMM_MIN_SIDE = 2048, 2048  # the grid cells a training step's matmuls look like


def gemm_train_tflops(grid: list[dict[str, Any]] | None) -> float | None:
    """Median TFLOP/s of the probe's GEMM grid (`calibrate.probe.gemm_grid`) over training-sized
    shapes: ≥ 2048 tokens, both matrix sides ≥ 2048. On the H100 they span 626–763 TFLOP/s with
    no trend in width (1B- and 8B-sized matrices alike), so one rate prices them; None without a grid."""
    cells = [g["tflops"] for g in grid or () if g["m"] >= TRAIN_GEMM_MIN_M and min(g["k"], g["n"]) >= TRAIN_GEMM_MIN_SIDE]
    return float(np.median(cells)) if cells else None


def ceilings_from_probe(probe: dict[str, Any] | None) -> Ceilings:
    """Measured ceilings: the square GEMM rate (bf16 on a GPU, fp32 on a CPU), copy and host link."""
    if not probe:
        return Ceilings()
    sq = next((g for g in probe.get("gemm", []) if g.get("shape") == "square"), None)
    link = probe.get("host_link") or {}
    copy = probe.get("device_copy") or {}
    return Ceilings(
        gemm_bf16_tflops=sq["tflops"] if sq else None,
        gemm_train_tflops=gemm_train_tflops(probe.get("gemm_grid")),
        hbm_copy_tb_s=copy.get("tb_s_read_write"),
        h2d_gb_s=link.get("h2d_gb_s"),
        d2h_gb_s=link.get("d2h_gb_s"),
    )


def gpu_card_for(name: str, ceilings: Ceilings, probe: dict[str, Any] | None = None) -> GpuCard:
    """The catalog card of a measured GPU, or — for a CPU or an uncatalogued GPU — a card built
    from the probe's measurements (peaks = measured ceilings, efficiencies 1: a fitted predictor
    only ever divides by the Profile's ceilings)."""
    try:
        return load_gpu(name)
    except LifecostError:
        pass
    if not (ceilings.gemm_bf16_tflops and ceilings.hbm_copy_tb_s):
        raise LifecostError(f"{name!r} is not in the GPU catalog and the runs have no probe with ceilings",
                            field="--runs", fix="put the probe.json of this machine next to the run logs "
                                                "(`lifecost calibrate probe --json > probe.json`)")
    gpu_info = (probe or {}).get("gpu") or {}
    mem_gib = gpu_info.get("memory_total_gib") or 64.0
    return GpuCard(
        name=name, vendor="cpu" if name.startswith("cpu") else "unknown", hbm_gib=mem_gib,
        hbm_tb_s=ceilings.hbm_copy_tb_s, bf16_tflops=ceilings.gemm_bf16_tflops,
        host_link_gb_s=ceilings.h2d_gb_s or 1.0, nvlink_gb_s=0.0, tdp_w=gpu_info.get("power_limit_w") or 1.0,
        flops_efficiency=1.0, hbm_efficiency=1.0, mfu_training=0.5,
        source="built from this machine's probe (calibrate.fit.gpu_card_for)",
    )


# ------------------------------------------------------------------------------- features
def _basis_profile(k: int, ceilings: Ceilings, padding: AttentionPadding | None = None) -> Profile:
    """A Profile with c0_s = 1 s and, for k ≥ 1, coefficient k = 1 (all others 0).

    The predictor refuses a step-time section with c0_s = c2 = 0 (a decode step would take no
    time), so the basis keeps c0_s = 1 in every member and the fit subtracts it back out."""
    coeffs = dict.fromkeys(COEFF_NAMES, 0.0)
    coeffs["c0_s"] = 1.0
    coeffs[COEFF_NAMES[k]] = 1.0
    return Profile(
        gpu=ProfileGpu(name="basis", catalog_name="basis"), engine=ProfileEngine(name="basis", version="0"),
        created_utc="1970-01-01T00:00:00Z", command="calibrate.fit basis", ceilings=ceilings,
        step_time=StepTimeCoeffs(**coeffs, fit=FitStats(n_points=1, r2=1.0, mape=0.0), attention_padding=padding),
    )


def basis_predictors(card: ModelCard, gpu: GpuCard, ceilings: Ceilings, quant: str = "bf16",
                     kv_dtype: str = "bf16", padding: AttentionPadding | None = None) -> list[FittedPredictor]:
    """One `FittedPredictor` per coefficient k: c0_s = 1 s plus coefficient k = 1 (with the
    engine's attention padding, so the features are the padded sizes the engine computes)."""
    return [FittedPredictor(_basis_profile(k, ceilings, padding), card, gpu, quant, kv_dtype) for k in range(len(COEFF_NAMES))]


# attention implementations of transformers CB that run one masked SDPA/eager attention over the
# concatenated batch (`continuous_batching.utils.attn_mask_is_needed`); flash kernels do not
MASKED_BATCH_ATTENTION = ("paged|sdpa", "paged|eager", "sdpa", "eager")


def attention_padding_of(rec: dict[str, Any]) -> AttentionPadding | None:
    """The attention padding rule of a serving record's engine, from its recorded settings.

    transformers CB with a masked attention (`paged|sdpa`, `paged|eager`) scores every query of a
    step against every key it read (`AttentionPadding`); with CUDA graphs or torch.compile the
    engine pads the query count to `q_padding_interval_size` (≤ `max_batch_tokens`) and the cached
    keys read to `kv_padding_interval_size` (`model_runner.maybe_pad_inputs`, `pad_inputs =
    cuda_graph or compile`). The KV cap (the pool's size) is left out: it differs per record and
    binds only when the padded read exceeds the whole pool. vLLM and flash kernels: None."""
    if rec.get("backend") != "transformers":
        return None
    es = rec.get("engine_settings") or {}
    cb = es.get("continuous_batching_config") or {}
    if es.get("attn_implementation") not in MASKED_BATCH_ATTENTION:
        return None
    graphs = cb.get("use_cuda_graph")
    padded = any(graphs) if isinstance(graphs, (list, tuple)) else bool(graphs)
    padded = padded or bool(cb.get("varlen_compile_config") or cb.get("decode_compile_config"))
    max_q = int(cb["max_batch_tokens"]) if cb.get("max_batch_tokens") else None
    if not padded:
        return AttentionPadding(q_interval_tok=1, kv_interval_tok=1, max_q_tok=max_q)
    return AttentionPadding(q_interval_tok=int(cb.get("q_padding_interval_size") or 64),
                            kv_interval_tok=int(cb.get("kv_padding_interval_size") or 16384), max_q_tok=max_q)


def feature_row(basis: list[FittedPredictor], steps: Iterable[StepFeatures]) -> np.ndarray:
    """Σ over the steps of each coefficient's feature — the row whose dot product with the
    coefficients is the predicted time of those steps (the predictor is linear in them).
    Feature 0 is the number of steps (c0_s's seconds); feature k ≥ 1 is basis k's step time minus
    basis 0's."""
    row = np.zeros(len(basis))
    for f in steps:
        t = [p.step_time_s(f) for p in basis]
        row[0] += t[0]
        row[1:] += np.subtract(t[1:], t[0])
    return row


def feature_matrix(basis: list[FittedPredictor], observations: list["StepObservation"]) -> np.ndarray:
    return np.array([feature_row(basis, o.steps) for o in observations]).reshape(len(observations), len(basis))


# ---------------------------------------------------------------------------- observations
@dataclass
class StepObservation:
    """A measured time over one or more engine steps whose compositions are known."""

    steps: tuple[StepFeatures, ...]
    time_s: float
    source: str  # "step" (per-step record), "decode" (burst window), "prefill" (TTFT at N = 1)
    record_key: str = ""
    model: str = ""  # card name: which basis prices these steps


@dataclass(frozen=True)
class EngineShape:
    """The engine settings a replay must reproduce, read from a record."""

    block_size_tok: int
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_blocks: int | None  # None: the record does not say; size so KV never binds


def engine_shape(rec: dict[str, Any], card) -> EngineShape:
    """Engine settings from a record: transformers CB (`continuous_batching_config`) or vLLM."""
    from models.memory import GIB, kv_bytes_per_token

    es = rec.get("engine_settings") or {}
    cb = es.get("continuous_batching_config")
    if cb:
        bs = int(cb.get("page_size") or cb.get("block_size") or 256)
        return EngineShape(bs, int(cb.get("max_requests_per_batch") or 256), int(cb.get("max_batch_tokens") or 8192),
                           int(cb["num_blocks"]) if cb.get("num_blocks") else None)
    bs = int(es.get("block_size_tok") or es.get("block_size") or 16)
    blocks = es.get("num_gpu_blocks")
    if not blocks and es.get("device") == "cpu" and es.get("kv_cache_space_gib"):
        # the CPU build sizes its cache from VLLM_CPU_KVCACHE_SPACE (GiB)
        blocks = int(es["kv_cache_space_gib"] * GIB // (kv_bytes_per_token(card, "bf16") * bs))
    return EngineShape(bs, int(es.get("max_num_seqs") or 256), int(es.get("max_num_batched_tokens") or 8192),
                       int(blocks) if blocks else None)


def engine_scenario(rec: dict[str, Any], card, model_name: str, max_len_tok: int, gpu_name: str = "H100-SXM"):
    """A Scenario whose engine is the record's: step budget, max sequences, KV block size, no prefix
    caching (every calibration prompt is distinct), chunked prefill."""
    from simulator.scenario import Scenario

    shape = engine_shape(rec, card)
    return Scenario().with_changes(**{
        "name": f"replay {rec.get('key', '')}",
        "model.name": model_name,
        "gpu.name": gpu_name,
        "engine.block_size_tok": shape.block_size_tok,
        "engine.max_num_seqs": shape.max_num_seqs,
        "engine.max_num_batched_tokens": max(shape.max_num_batched_tokens, shape.max_num_seqs),
        "engine.max_model_len_tok": max_len_tok,
        "engine.enable_prefix_caching": False,
        "engine.enable_chunked_prefill": True,
        "engine.profile": "roofline",
    })


def burst_steps(rec: dict[str, Any], card) -> tuple[list[StepFeatures], int]:
    """The steps the simulator's scheduler makes for a burst record (every request at t = 0), and
    how many of them it takes until the last request has its first token. A burst's schedule does
    not depend on step times (nothing arrives later), so these compositions are exact for the fit."""
    from simulator.kv_cache import KVCacheManager, blocks_for
    from simulator.scheduler import RequestState, Scheduler
    from simulator.workload import Requests

    reqs = rec.get("requests") or []
    n = len(reqs)
    prompt = np.array([r["prompt_tok"] for r in reqs], np.int64)
    output = np.array([r["output_tok"] for r in reqs], np.int64)
    shape = engine_shape(rec, card)
    bs = shape.block_size_tok
    max_len = int(blocks_for(int((prompt + output).max()) + 1, bs) * bs)
    blocks = max(shape.kv_blocks or 0, int(sum(blocks_for(int(p + o), bs) for p, o in zip(prompt, output))), blocks_for(max_len, bs))
    engine = engine_scenario(rec, card, card.name, max(16, max_len)).engine
    requests = Requests(arrival_s=np.zeros(n), prompt_tok=prompt, output_tok=output, class_id=np.zeros(n, np.int16),
                        priority=np.zeros(n, np.int16), prefix_id=np.full(n, -1, np.int64), prefix_tok=np.zeros(n, np.int64))
    sched = Scheduler(requests, output, engine, KVCacheManager(blocks, bs, False), RequestState(n))
    for rid in range(n):
        sched.add_request(rid)
    steps: list[StepFeatures] = []
    firsts = finished = 0
    last_first = 0
    while finished < n:
        plan = sched.schedule()
        steps.append(plan.features)
        first, done = sched.update(plan)
        firsts += len(first)
        finished += len(done)
        if firsts == n and not last_first:
            last_first = len(steps)
    return steps, last_first


_VOLATILE_SETTINGS = {"num_blocks", "num_gpu_blocks", "startup_s", "torch_threads", "model_dir", "env", "params_total",
                      "kv_cache_space_gib", "max_model_len_tok", "max_memory_percent", "device"}


def engine_settings_of(rec: dict[str, Any]) -> dict[str, Any]:
    """The engine settings of a serving record that change step times, flattened (the KV pool size,
    model length and start-up figures excluded): two records with equal settings and engine version
    measured the same engine."""
    es = dict(rec.get("engine_settings") or {})
    cb = es.pop("continuous_batching_config", None)
    flat = {k: v for k, v in es.items() if k not in _VOLATILE_SETTINGS}
    if isinstance(cb, dict):
        flat.update({f"cb.{k}": v for k, v in cb.items() if k not in _VOLATILE_SETTINGS})
    return json.loads(json.dumps(flat, sort_keys=True, default=str))


def same_engine(records: list[dict[str, Any]], version: str, settings: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The records measured with this engine version and these settings (all of them when the
    Profile does not say which settings it was fitted with)."""
    return [r for r in records if str(r.get("engine_version")) == version
            and (settings is None or engine_settings_of(r) == settings)]


def vllm_step_features(s: dict[str, Any]) -> StepFeatures:
    """StepFeatures of one vLLM step record (`calibrate.serve_vllm._Observed` + time).

    The record has Σ over prefill chunks of p·(c + p) (`prefill_ctx_tok2`) and the total context
    of all scheduled sequences. Causal prefill pairs are Σ (p·c + p(p+1)/2) = Σ p·(c+p) − Σ p(p−1)/2:
    exact with the record's Σ p² (`prefill_sq_tok2`) or for one chunk; for k > 1 chunks in older
    records Σ p² is taken as P²/k (equal chunks). Only the sum of decode and prefill
    context enters the step time, so the split between them needs no estimate.
    """
    p_tok, d_tok = int(s["num_prefill_tok"]), int(s["num_decode_tok"])
    k = int(s.get("num_prefill_seqs") or (1 if p_tok else 0))
    sum_p2 = s.get("prefill_sq_tok2")  # Σ p² when the backend records it (exact pairs)
    if sum_p2 is None:
        sum_p2 = p_tok * p_tok / k if k else 0.0
    pairs = int(round(s.get("prefill_ctx_tok2", 0) - (sum_p2 - p_tok) / 2)) if p_tok else 0
    prefill_ctx = int(round(s.get("prefill_ctx_tok2", 0) / p_tok * k)) if p_tok else 0
    ctx = int(s["context_tok"])
    prefill_ctx = min(prefill_ctx, ctx)
    return StepFeatures(prefill_tok=p_tok, decode_tok=d_tok, decode_ctx_tok=ctx - prefill_ctx, prefill_ctx_tok=prefill_ctx,
                        prefill_attn_pairs=max(pairs, 0), num_seqs=int(s["num_seqs"]))


def burst_observations(rec: dict[str, Any]) -> list[StepObservation]:
    """Decode (and, at N = 1, prefill) observations of a burst record without per-step data."""
    from calibrate.serve_base import served_from_record

    served = served_from_record(rec)
    if not served:
        return []
    n = len(served)
    key = rec.get("key", "")
    obs: list[StepObservation] = []
    lo = max(r.first_token_s for r in served)
    hi = min(r.finish_s for r in served)
    if all(r.token_times_s for r in served) and hi > lo:
        # every request decodes in [lo, hi]: the window's steps are pure decode steps at batch n
        per_req_gap, ctx_sum = [], 0.0
        for r in served:
            ts = np.asarray(r.token_times_s)
            k_lo = int(np.searchsorted(ts, lo, side="right"))  # tokens generated by lo
            k_hi = int(np.searchsorted(ts, hi, side="right"))
            if k_hi - k_lo < 1:
                continue
            per_req_gap.append((ts[k_hi - 1] - ts[k_lo - 1]) / (k_hi - k_lo))
            # a request with k tokens attends prompt + k keys in the step that makes token k + 1
            ctx_sum += r.prompt_tok + (k_lo + k_hi - 1) / 2.0
        if per_req_gap:
            f = StepFeatures(decode_tok=n, decode_ctx_tok=int(round(ctx_sum * n / len(per_req_gap))), num_seqs=n)
            obs.append(StepObservation((f,), float(np.median(per_req_gap)), "decode", key))
    elif n == 1 and served[0].output_tok > 1:
        r = served[0]
        tpot = (r.finish_s - r.first_token_s) / (r.output_tok - 1)
        f = StepFeatures(decode_tok=1, decode_ctx_tok=int(r.prompt_tok + r.output_tok / 2), num_seqs=1)
        obs.append(StepObservation((f,), tpot, "decode", key))
    # the prefill phase: every step until the last request has its first token (at N = 1 its TTFT)
    steps, last_first = burst_steps(rec, card_of(rec))
    ttft_last = max(r.first_token_s for r in served) - min(r.arrival_s for r in served)
    if last_first and ttft_last > 0:
        obs.append(StepObservation(tuple(steps[:last_first]), ttft_last, "prefill", key))
    return obs


STEP_WINDOW = 8  # consecutive per-step records summed into one observation


def step_windows(steps: list[dict[str, Any]], key: str = "", window: int = STEP_WINDOW) -> list[StepObservation]:
    """Per-step records summed over runs of up to `window` consecutive timed steps of one kind
    (with prefill / decode only). A sum of steps is still linear in the coefficients, and it
    averages out the host's scheduling noise: on a busy CPU one decode step's wall time varies
    tenfold, and a relative-error fit on single steps is pulled towards the fastest ones."""
    out: list[StepObservation] = []
    cur: list[StepFeatures] = []
    cur_t, cur_kind = 0.0, None
    for s in steps:
        if not s.get("step_time_s") or not s.get("num_seqs"):
            continue  # untimed (async scheduling) or empty
        f = vllm_step_features(s)
        kind = "step-prefill" if f.prefill_tok else "step-decode"
        if cur and (kind != cur_kind or len(cur) >= window):
            out.append(StepObservation(tuple(cur), cur_t, cur_kind, key))
            cur, cur_t = [], 0.0
        cur.append(f)
        cur_t += float(s["step_time_s"])
        cur_kind = kind
    if cur:
        out.append(StepObservation(tuple(cur), cur_t, cur_kind, key))
    return out


def record_observations(rec: dict[str, Any]) -> list[StepObservation]:
    """All step observations a serving record offers: its per-step data when it has some, else
    the burst-derived decode/prefill points."""
    steps = rec.get("steps")
    if steps:
        obs = step_windows(steps, rec.get("key", ""))
    elif (rec.get("workload") or {}).get("kind") == "burst":
        obs = burst_observations(rec)
    else:
        obs = []
    for o in obs:
        o.model = str(rec.get("model", ""))
    return obs


# ----------------------------------------------------------------------------------- fits
def nnls_relative(a: np.ndarray, y: np.ndarray, lower: np.ndarray | None = None, scale: np.ndarray | None = None,
                  free: np.ndarray | None = None) -> np.ndarray:
    """x ≥ `lower` (default 0) minimising Σ ((a·x − y)/scale)² (scale = y by default: relative
    error): NNLS on rows divided by the scale for the excess x − lower, each column scaled to unit
    norm first so seconds-sized and microsecond-sized features are solved alike. Columns with
    `free` False stay at their lower bound."""
    from scipy.optimize import nnls

    lower = np.zeros(a.shape[1]) if lower is None else np.asarray(lower, float)
    s = y if scale is None else scale
    w = a / s[:, None]
    wf = w * (np.ones(a.shape[1]) if free is None else np.asarray(free, float))
    norms = np.linalg.norm(wf, axis=0)
    norms[norms == 0] = 1.0
    u, _ = nnls(wf / norms, y / s - w @ lower, maxiter=50 * a.shape[1])
    return lower + u / norms


def fit_stats(pred: np.ndarray, y: np.ndarray) -> FitStats:
    """n, R² (on the measured values) and mean absolute percentage error (fraction)."""
    ss_res = float(np.sum((pred - y) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    exact = ss_res <= 1e-20 * float(np.sum(y**2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 and not exact else (1.0 if exact else 0.0)
    return FitStats(n_points=len(y), r2=min(r2, 1.0), mape=float(np.mean(np.abs(pred - y) / y)))


@dataclass
class StepTimeFit:
    coeffs: dict[str, float]
    stats: FitStats
    by_source: dict[str, FitStats]
    observations: list[StepObservation] = field(repr=False)
    predicted_s: np.ndarray = field(repr=False)


def fit_step_time(observations: list[StepObservation], basis: list[FittedPredictor] | dict[str, list[FittedPredictor]],
                  lower: dict[str, float] | None = None) -> StepTimeFit:
    """NNLS of the DESIGN.md step-time coefficients on `observations` (relative error).

    `basis`: one model's basis predictors, or {card name: basis} when the observations span models.
    `lower`: floors for coefficients, e.g. {"c1": 1, "c2": 1} on a GPU — a GEMM cannot beat the
    measured GEMM ceiling, nor can the weights stream faster than the measured copy bandwidth.

    One model's runs cannot tell apart the three per-step constants — c0_s, c0_layer_s·layers and
    c2·weights/BW are the same every step. The floor puts the physically required weight
    streaming in c2, and the rest goes per layer (c0_s = 0): on the H100 the transformers CB
    engine's batch-1 decode step grew with depth (Llama 1B/3B/8B, 16/28/32 layers: 11.2/25.8/
    34.6 ms) far more than with weight bytes, as per-layer host work does. Runs of two depths fit
    both constants.
    """
    obs = [o for o in observations if o.time_s > 0 and math.isfinite(o.time_s)]
    if len(obs) < 2:
        raise LifecostError(f"{len(obs)} usable step observations; the step-time fit needs several",
                            field="--runs", fix="include a serving sweep (bursts at several batch sizes and prompt lengths)")
    if isinstance(basis, dict):
        a = np.array([feature_row(basis[o.model], o.steps) for o in obs])
    else:
        a = feature_matrix(basis, obs)
    y = np.array([o.time_s for o in obs])
    free = np.ones(len(COEFF_NAMES), bool)
    if len({round(float(r[1] / r[0]), 6) for r in a if r[0] > 0}) <= 1:
        # one model: c0_s, c0_layer_s and c2 are the same column (constant every step); c2 stays
        # at its floor and the rest goes per layer
        free[COEFF_NAMES.index("c0_s")] = free[COEFF_NAMES.index("c2")] = False
    x = nnls_relative(a, y, np.array([(lower or {}).get(k, 0.0) for k in COEFF_NAMES]), free=free)
    pred = a @ x
    by_source = {}
    for src in sorted({o.source for o in obs}):
        idx = [i for i, o in enumerate(obs) if o.source == src]
        by_source[src] = fit_stats(pred[idx], y[idx])
    return StepTimeFit(dict(zip(COEFF_NAMES, (float(v) for v in x))), fit_stats(pred, y), by_source, obs, pred)


def fit_energy(records: list[dict[str, Any]], idle_w: float | None = None) -> EnergyTerms | None:
    """J per prefill / decode token (and idle W) from serving runs with sampled board power.

    E_run = idle_w·duration + e_prefill·P + e_decode·D. With the idle power measured (the probe's
    board power at rest) only the two per-token energies are fitted, on the energy above idle;
    without it all three are (NNLS, ≥ 0) — then a busy engine's time-proportional draw may land in
    `idle_w`."""
    rows, y, dur = [], [], []
    for rec in records:
        power = rec.get("power") or {}
        if not power.get("available") or not power.get("energy_j") or not power.get("duration_s"):
            continue
        reqs = rec.get("requests") or []
        rows.append([sum(r["prompt_tok"] for r in reqs), sum(r["output_tok"] for r in reqs)])
        dur.append(power["duration_s"])
        y.append(power["energy_j"])
    if len(rows) < 3:
        return None
    a, y_, d = np.array(rows, float), np.array(y, float), np.array(dur, float)
    if idle_w is not None:
        x = nnls_relative(a, y_ - idle_w * d, scale=y_)
        return EnergyTerms(idle_w=float(idle_w), prefill_j_per_tok=float(x[0]), decode_j_per_tok=float(x[1]))
    x = nnls_relative(np.column_stack([d, a]), y_)
    return EnergyTerms(idle_w=float(x[0]), prefill_j_per_tok=float(x[1]), decode_j_per_tok=float(x[2]))


def setup_key(rec: dict[str, Any]) -> str:
    """"<method>/ckpt<0|1>": the training setups that get their own MFU."""
    return f"{rec['method']}/ckpt{int(bool(rec['grad_ckpt']))}"


def _train_kwargs(rec: dict[str, Any]) -> dict[str, Any]:
    return dict(method=rec["method"], seq_len_tok=int(rec["seq_len_tok"]), micro_batch=int(rec["micro_batch"]),
                grad_ckpt=bool(rec["grad_ckpt"]), lora_r=int(rec.get("lora_r") or 16),
                lora_targets=rec.get("lora_targets") or "all-linear")


def _memory_setup(rec: dict[str, Any]) -> dict[str, Any]:
    """The run's precision setup for the memory plan (pure-bf16 full fine-tunes: no fp32 master
    copy and bf16 AdamW states, as `calibrate.train` records them)."""
    pure_bf16 = rec.get("method") == "full" and rec.get("optimizer_state_dtype") in ("bfloat16", "float16")
    return {"master_weights": bool(rec.get("master_weights", True)), "optimizer_state_bytes": 2.0 if pure_bf16 else None}


@dataclass
class TrainingFit:
    terms: TrainingTerms
    runs: list[dict[str, Any]] = field(repr=False)
    predicted_s: np.ndarray = field(repr=False)


LAUNCH_BOUND = 0.97  # host time ≥ this share of the wall time: the GPU waited for the launches
MIN_GPU_BOUND_RUNS = 4  # fewer GPU-bound runs than this: no separate host model (e.g. on a CPU)


def launch_bound(rec: dict[str, Any]) -> bool | None:
    """Whether a GPU training run was launch-bound (its host time ≈ its wall time); None when the
    record has no host time or ran on a CPU (host and device are one: the split means nothing)."""
    h, t = rec.get("host_time_s"), rec.get("step_time_s")
    if h is None or not t or rec.get("device") not in (None, "cuda"):
        return None
    return h >= LAUNCH_BOUND * t


def fit_training(records: list[dict[str, Any]], fit_model: str, gpu: GpuCard, ceilings: Ceilings | None = None,
                 intercept: str = "step") -> TrainingFit | None:
    """The `TrainingTerms` step-time coefficients and memory overhead from the FIT model's runs.

    With host times (GPU runs of `calibrate.train` record them) the step is t = max(G, H):
    - FLOPs at the probe's GEMM rate for training-sized shapes (`Ceilings.gemm_train_tflops`) when
      the probe measured its grid, else at a fitted MFU;
    - H, per setup "<method>/ckpt<0|1>": the median wall time per decoder layer of the fit runs
      that were launch-bound (host time ≥ 97 % of wall time) — the host's launch rate;
    - G, fitted on the runs that were GPU-bound: linear in (FLOPs/peak → 1/mfu unless pinned, adapter elements
      → adapter_bytes_per_elem, adapter FLOPs → adapter_flops_factor, NF4 weight passes →
      dequant_bytes_per_weight, 1 → gpu_fixed_s), one NNLS on relative error. One model size
      cannot tell whether the zero-token intercept grows with depth; it is kept per step
      (`intercept="layer"` fits it per decoder layer instead, into layer_overhead_s /
      layer_overhead_ckpt_s — `benchmarks/calibration_fidelity.py` prints what that changes).
    Without host times (older logs, CPU runs) the additive form of earlier Profiles:
    G + num_layers · layer_overhead(ckpt), fitted on all runs.
    The FLOP term cannot run faster than the GEMM ceiling the probe measured, so 1/mfu ≥
    datasheet peak / measured GEMM rate: we solve for the excess u ≥ 0 in 1/mfu = lower bound + u.
    Memory: the median of (measured peak reserved − analytic plan), ≥ 0 — the caching allocator's
    slack and the CUDA workspaces beyond the plan's default overhead.
    """
    from models.memory import TRAIN_OVERHEAD_GIB
    from simulator.training import (_train_memory_terms, adapter_elems, adapter_flops, dequant_passes_weights,
                                    train_step_flops)

    if intercept not in ("step", "layer"):
        raise ValueError(f"intercept must be 'step' or 'layer', got {intercept!r}")
    runs = [r for r in records if r.get("kind") == "train" and r.get("model") == fit_model and not r.get("error")
            and r.get("step_time_s")]
    if not runs:
        return None
    peak, bw = gpu.bf16_tflops * 1e12, gpu.hbm_tb_s * 1e12
    lower = 1.0
    if ceilings is not None and ceilings.gemm_bf16_tflops:
        lower = max(1.0, gpu.bf16_tflops / ceilings.gemm_bf16_tflops)
    # the GEMM rate measured at training shapes, when the probe has a grid: FLOPs are priced at it
    # rather than fitted — on one model size FLOPs and activation traffic both grow with tokens,
    # and a fitted rate trades one for the other (the split then extrapolates wrongly in width)
    gemm_pinned = bool(ceilings is not None and ceilings.gemm_train_tflops)
    if gemm_pinned:
        lower = max(1.0, gpu.bf16_tflops / ceilings.gemm_train_tflops)
    # columns: 1/mfu, adapter B/elem, layer overhead ckpt off / on, adapter FLOP factor, dequant B/weight, fixed s
    a = np.zeros((len(runs), 7))
    y = np.array([float(r["step_time_s"]) for r in runs])
    for i, r in enumerate(runs):
        card, kw = card_of(r), _train_kwargs(r)
        a[i, 0] = train_step_flops(card, **kw) / peak
        a[i, 1] = adapter_elems(card, **kw) / bw
        a[i, 2 + int(kw["grad_ckpt"])] = card.num_layers
        a[i, 4] = adapter_flops(card, **kw) / peak
        a[i, 5] = dequant_passes_weights(card, method=kw["method"], grad_ckpt=kw["grad_ckpt"]) / bw
        a[i, 6] = 1.0
    bound = [launch_bound(r) for r in runs]
    gpu_rows = [i for i, b in enumerate(bound) if b is False]
    host_layer: dict[str, float] = {}
    if len(gpu_rows) >= MIN_GPU_BOUND_RUNS:
        per_layer = intercept == "layer"
        free = np.array([not gemm_pinned, True, per_layer, per_layer, True, True, not per_layer])
        x = nnls_relative(a[gpu_rows], y[gpu_rows], np.array([lower, 0, 0, 0, 0, 0, 0.0]), free=free)
        for setup in sorted({setup_key(r) for r, b in zip(runs, bound) if b}):
            layer_s = [float(r["step_time_s"]) / card_of(r).num_layers for r, b in zip(runs, bound) if b and setup_key(r) == setup]
            host_layer[setup] = float(np.median(layer_s))
        host = np.array([card_of(r).num_layers * host_layer.get(setup_key(r), 0.0) for r in runs])
        pred = np.maximum(a @ x, host)
    else:
        free = np.array([True, True, True, True, True, True, False])
        x = nnls_relative(a, y, np.array([lower, 0, 0, 0, 0, 0, 0.0]), free=free)
        pred = a @ x
    effective = {}
    for s in sorted({setup_key(r) for r in runs}):
        idx = [i for i, r in enumerate(runs) if setup_key(r) == s]
        effective[s] = float(np.mean(a[idx, 0] / y[idx]))
    mem_runs = [r for r in runs if r.get("max_reserved_gib")]
    overhead, mem_stats = TRAIN_OVERHEAD_GIB, None
    if mem_runs:
        base = np.array([_train_memory_terms(card_of(r), gpu, **_train_kwargs(r), **_memory_setup(r)) for r in mem_runs])
        measured = np.array([float(r["max_reserved_gib"]) for r in mem_runs])
        base = base + TRAIN_OVERHEAD_GIB  # the plan's default overhead; the Profile adds what it misses
        overhead = float(max(0.0, np.median(measured - base)))
        mem_stats = fit_stats(base + overhead, measured)
    terms = TrainingTerms(mfu=float(min(1.0, 1.0 / x[0])), memory_overhead_gib=overhead, fit=fit_stats(pred, y),
                          adapter_bytes_per_elem=float(x[1]), layer_overhead_s=float(x[2]), layer_overhead_ckpt_s=float(x[3]),
                          adapter_flops_factor=float(x[4]),
                          dequant_bytes_per_weight=float(x[5]) if a[:, 5].any() else None,
                          gpu_fixed_s=float(x[6]), host_layer_s=host_layer,
                          effective_mfu=effective, memory_fit=mem_stats, fit_model=fit_model)
    return TrainingFit(terms, runs, pred)


# ------------------------------------------------------------------------------- the Profile
@dataclass
class FitResult:
    profile: Profile
    step_fit: StepTimeFit | None
    training_fit: TrainingFit | None
    serve_fit_model: str | None
    train_fit_model: str | None


def _smallest_model(records: list[dict[str, Any]]) -> str | None:
    sizes: dict[str, float] = {}
    for r in records:
        if r.get("model") and r["model"] not in sizes:
            try:
                from models.params import params_total

                sizes[r["model"]] = params_total(card_of(r))
            except LifecostError:
                continue
    return min(sizes, key=sizes.get) if sizes else None


def serve_fit_records(runs: Runs, fit_model: str) -> list[dict[str, Any]]:
    """The serving records the step-time fit uses: the FIT model's bursts (the sweep)."""
    return [r for r in runs.of("serve_replay") if r.get("model") == fit_model and (r.get("workload") or {}).get("kind") == "burst"]


def _identity(runs: Runs) -> tuple[str, str]:
    """(device name as measured, catalog name) of the machine the runs were taken on."""
    names = [r.get("gpu") for r in runs.records if r.get("kind") in ("train", "serve_replay") and r.get("gpu")]
    probe_gpu = ((runs.probe or {}).get("gpu") or {}).get("name")
    name = probe_gpu or (names[0] if names else None)
    if name is None or name == "cpu":
        from calibrate.serve_vllm import cpu_slug

        name = next((n for n in names if n and n.startswith("cpu-")), None) or cpu_slug()
    try:
        return name, load_gpu(name).name
    except LifecostError:
        return name, name


def fit_profile(runs: Runs, *, command: str, serve_fit_model: str | None = None, train_fit_model: str | None = None,
                progress=None) -> FitResult:
    """Fit every section the runs support and assemble the versioned Profile."""
    say = progress or (lambda msg: None)
    ceilings = ceilings_from_probe(runs.probe)
    device_name, catalog_name = _identity(runs)
    gpu = gpu_card_for(catalog_name, ceilings, runs.probe)
    serve = runs.of("serve_replay")
    serve_fit_model = serve_fit_model or _smallest_model(serve)
    step_fit, engine, energy, padding = None, None, None, None
    if serve and serve_fit_model:
        fit_recs = serve_fit_records(runs, serve_fit_model)
        if not fit_recs:
            raise LifecostError(f"no serving bursts of {serve_fit_model!r} in the runs", field="--model-fit",
                                fix="name a model whose serving sweep is in the runs: " + ", ".join(sorted({r['model'] for r in serve})))
        # A Profile describes one engine configuration: fit the largest group of bursts measured
        # with the same engine version and settings (a check run with other settings stays out).
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in fit_recs:
            groups.setdefault(json.dumps([str(r.get("engine_version")), engine_settings_of(r)], sort_keys=True), []).append(r)
        fit_recs = max(groups.values(), key=lambda g: (len(g), max(r.get("ts", 0) for r in g)))
        if len(groups) > 1:
            say(f"step-time fit: {len(groups)} engine configurations among the bursts; fitting the largest ({len(fit_recs)} bursts)")
        card = card_of(fit_recs[0])
        padding = attention_padding_of(fit_recs[0])
        basis = basis_predictors(card, gpu, ceilings, padding=padding)
        obs = [o for r in fit_recs for o in record_observations(r)]
        say(f"step-time fit: {len(obs)} observations from {len(fit_recs)} {serve_fit_model} bursts")
        # On a GPU no term can beat the probe's ceilings (c1…c4 ≥ 1). A CPU gets no floors: a small
        # model's weights sit in its last-level cache, faster than the DRAM copy the probe measures.
        floors = {} if gpu.vendor == "cpu" else dict.fromkeys(("c1", "c2", "c3", "c4"), 1.0)
        step_fit = fit_step_time(obs, {serve_fit_model: basis}, lower=floors)
        backend = fit_recs[0].get("backend", "vllm")
        engine = ProfileEngine(name=ENGINE_NAMES.get(backend, backend), version=str(fit_recs[0].get("engine_version", "unknown")),
                               settings=engine_settings_of(fit_recs[0]))
        energy = fit_energy(fit_recs, ((runs.probe or {}).get("gpu") or {}).get("power_now_w"))
    train = runs.of("train")
    train_fit_model = train_fit_model or _smallest_model([r for r in train if not r.get("error")])
    training_fit = fit_training(train, train_fit_model, gpu, ceilings) if train_fit_model else None
    if training_fit:
        say(f"training fit: {len(training_fit.runs)} {train_fit_model} runs")
    if engine is None:
        versions = next((r.get("versions") for r in train if r.get("versions")), {}) or {}
        engine = ProfileEngine(name="transformers-cb", version=f"transformers {versions.get('transformers', 'unknown')}")
    gpu_info = (runs.probe or {}).get("gpu") or {}
    st = None
    if step_fit is not None:
        st = StepTimeCoeffs(**step_fit.coeffs, fit=step_fit.stats, fit_model=serve_fit_model,
                            attention_padding=padding)
    profile = Profile(
        gpu=ProfileGpu(name=device_name, catalog_name=catalog_name, memory_gib=gpu_info.get("memory_total_gib"),
                       driver=gpu_info.get("driver_version"), cuda=gpu_info.get("cuda_driver_version")),
        engine=engine,
        created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        command=command,
        ceilings=ceilings,
        step_time=st,
        training=training_fit.terms if training_fit else None,
        energy=energy,
    )
    return FitResult(profile, step_fit, training_fit, serve_fit_model if step_fit else None,
                     train_fit_model if training_fit else None)
