"""Replay measured runs in the simulator with a Profile and report the error: the fidelity report.

Reading guide: `validate(runs, profile)` returns a `Fidelity` (plain dicts, JSON-ready);
`write_fidelity(fidelity, folder)` writes `fidelity.md` (Markdown tables) and `fidelity.json`
atomically next to the Profile; `fidelity_table_rows` gives the compact per-set table the CLI
prints.

Serving (`replay_serving`): each `serve_replay` record is re-run through `simulator.simulate`
with the *same* requests (arrival times, prompt and output lengths, from the record), the same
engine settings (per-step token budget, max sequences, KV block size and block count — the
engine's own figures from the record) and the Profile's `FittedPredictor` (for the transformers CB
engine, requests submitted back-to-back enter it together: `engine_pickup_s`). The simulator's
scheduler is the engine's for these runs: transformers CB's FIFO scheduler also serves decoding
requests first, then prefilling ones, then waiting ones, splits the last prompt at the
`max_batch_tokens` budget and caps a batch at `max_requests_per_batch`; its extra limits (the KV
read budget of num_blocks × block_size tokens, the 15 % free-block safety margin) never bind in
the H100 runs (at most 60 % of the blocks held even if every request of a run were resident). Measured and
simulated per-request timestamps both go through `calibrate.serve_base.summarize`, so every
metric — throughput (output tok/s, total tok/s, req/s over the makespan), TTFT / TPOT / E2E p50
and p99 — has one definition on both sides.

Training (`check_training`): each non-OOM `train` record's step time and peak memory against
`simulator.training.train_step_time_s` / `train_peak_memory_gib` with the Profile's training
terms. An OOM record is checked as a feasibility verdict (did the model say it does not fit?).

Sets: a run is FIT when the Profile was fitted on it (serving: bursts of the Profile's
`step_time.fit_model`; training: runs of `training.fit_model`), HELD-OUT otherwise (other model
sizes, Poisson loads). A trace replay that was also measured on a warm engine (the same requests
replayed once untimed first, `calibrate.device_runs.warm_plan`) is COLD: its first pass over
each batch shape paid a CUDA-graph capture (tens of ms that stall the whole batch) that a server
in steady state does not pay and the simulator does not model; it is reported on its own, and
its warm twin — with the captures it still met timed in the record — is the held-out run.
Errors are signed relative errors (predicted − measured) / measured.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibrate.fit import Runs, card_of, engine_scenario, engine_shape, gpu_card_for, same_engine
from calibrate.serve_base import ServedRequest, served_from_record, summarize, workload_key
from models.catalog import list_models
from models.errors import LifecostError
from models.profile import Profile

SERVING_METRICS = ("output_throughput_tok_s", "total_throughput_tok_s", "request_throughput_qps",
                   "ttft_s_p50", "ttft_s_p99", "tpot_s_p50", "tpot_s_p99", "e2e_s_p50", "e2e_s_p99")
TRAINING_METRICS = ("step_time_s", "peak_memory_gib")
# What the targets are stated on (issue 5): throughput and TTFT/TPOT p50 held-out ≤ 15 %,
# held-out training step time and peak memory ≤ 10 %.
SERVING_TARGET = {"output_throughput_tok_s": 0.15, "ttft_s_p50": 0.15, "tpot_s_p50": 0.15}
TRAINING_TARGET = {"step_time_s": 0.10, "peak_memory_gib": 0.10}


def rel_error(predicted: float, measured: float) -> float:
    if measured is None or predicted is None or not (math.isfinite(measured) and math.isfinite(predicted)) or measured == 0:
        return math.nan
    return (predicted - measured) / measured


def _metric(measured: float, predicted: float) -> dict[str, float]:
    return {"measured": measured, "predicted": predicted, "error": rel_error(predicted, measured)}


# ------------------------------------------------------------------------------- serving
def _sim_model_name(rec: dict[str, Any], card, tmp: Path) -> str:
    """A name `load_model` resolves to this card: the catalog name, else the record's config
    written to a temporary file."""
    if rec.get("model") in list_models() and not rec.get("model_config"):
        return rec["model"]
    if rec.get("model") in list_models():
        from models.catalog import load_model

        if load_model(rec["model"]) == card:
            return rec["model"]
    path = tmp / f"{card.name}.json"
    path.write_text(json.dumps(rec["model_config"]), encoding="utf-8")
    return str(path)


# `calibrate.serve_transformers` submits a request without sleeping when it is due within 0.5 ms
SUBMIT_NO_SLEEP_S = 0.0005


def engine_pickup_s(arrival_s: np.ndarray, backend: str | None) -> np.ndarray:
    """When the engine can first schedule each request (sorted arrivals in, same order out).

    The transformers CB engine runs in a Python thread beside the submitting one. Requests due
    within `SUBMIT_NO_SLEEP_S` of each other are added in one tight loop that never releases the
    GIL, so the engine thread sees none of them until the loop ends (CPython hands the GIL over
    at most every `sys.getswitchinterval()`, 5 ms): such a chain enters the engine together, at
    its last arrival. On the H100 every burst's requests (added within 0.04–0.5 ms) got their
    first token at the same instant, in one prefill step. Other backends: the arrivals as recorded."""
    if backend != "transformers" or len(arrival_s) < 2:
        return arrival_s
    import sys

    out = arrival_s.copy()
    start = 0
    for i in range(1, len(arrival_s) + 1):
        if (i == len(arrival_s) or arrival_s[i] - arrival_s[i - 1] >= SUBMIT_NO_SLEEP_S
                or arrival_s[i] - arrival_s[start] >= sys.getswitchinterval()):
            out[start:i] = arrival_s[i - 1]
            start = i
    return out


def simulate_record(rec: dict[str, Any], profile: Profile, gpu) -> list[ServedRequest]:
    """Simulated ServedRequests of a serving record, in the record's request order."""
    from simulator.engine import simulate
    from simulator.kv_cache import blocks_for
    from simulator.predictor import FittedPredictor
    from simulator.workload import Requests

    served = served_from_record(rec)
    card = card_of(rec)
    shape = engine_shape(rec, card)
    order = sorted(range(len(served)), key=lambda i: served[i].arrival_s)
    arrival = np.array([max(served[i].arrival_s, 0.0) for i in order])
    prompt = np.array([served[i].prompt_tok for i in order], np.int64)
    output = np.array([served[i].output_tok for i in order], np.int64)
    n = len(order)
    pickup = engine_pickup_s(arrival, rec.get("backend"))
    reqs = Requests(arrival_s=pickup, prompt_tok=prompt, output_tok=output, class_id=np.zeros(n, np.int16),
                    priority=np.zeros(n, np.int16), prefix_id=np.full(n, -1, np.int64), prefix_tok=np.zeros(n, np.int64))
    bs = shape.block_size_tok
    max_len = int(max(16, blocks_for(int((prompt + output).max()) + 1, bs) * bs))
    kv_blocks = shape.kv_blocks or int(sum(blocks_for(int(p + o), bs) for p, o in zip(prompt, output)))
    kv_blocks = max(kv_blocks, blocks_for(max_len, bs))
    # simulate() reads the GPU card only to size the KV cache and pick a predictor; both are given
    # here, so any catalog card serves (a CPU has none).
    gpu_name = profile.gpu.catalog_name if _in_catalog(profile.gpu.catalog_name) else "H100-SXM"
    with tempfile.TemporaryDirectory(prefix="lifecost-validate-") as tmp:
        scenario = engine_scenario(rec, card, _sim_model_name(rec, card, Path(tmp)), max_len, gpu_name)
        predictor = FittedPredictor(profile, card, gpu, "bf16", "bf16")
        result = simulate(scenario, reqs, predictor=predictor, kv_blocks=kv_blocks)
    fr = result.requests
    first = fr["arrival_s"].to_numpy() + fr["ttft_s"].to_numpy()  # from the pickup; metrics count from the arrival
    finish = fr["finish_s"].to_numpy()
    out: list[ServedRequest | None] = [None] * n
    for j, i in enumerate(order):
        out[i] = ServedRequest(float(arrival[j]), int(prompt[j]), int(output[j]), float(first[j]), float(finish[j]))
    return out  # type: ignore[return-value]


def _in_catalog(name: str) -> bool:
    from models.gpus import load_gpu

    try:
        load_gpu(name)
        return True
    except LifecostError:
        return False


def replay_serving(rec: dict[str, Any], profile: Profile, gpu) -> dict[str, Any]:
    """Per-metric measured / predicted / error of one serving record."""
    measured = summarize(served_from_record(rec))
    predicted = summarize(simulate_record(rec, profile, gpu))
    return {m: _metric(measured.get(m, math.nan), predicted.get(m, math.nan)) for m in SERVING_METRICS}


def _cold_twin_key(rec: dict[str, Any]) -> str:
    """The key the same trace replay has without the warm-up pass (`calibrate.device_runs.warm_plan`)."""
    w = {k: v for k, v in (rec.get("workload") or {}).items() if k != "warm"}
    key = str(rec.get("key", ""))
    return key.rsplit("/", 1)[0] + "/" + workload_key(w)


def describe_workload(rec: dict[str, Any]) -> str:
    w = rec.get("workload") or {}
    kind = w.get("kind", "replay")
    warm = ", warm engine" if w.get("warm") else ""
    if kind == "burst":
        return f"burst n={w.get('n')} prompt={w.get('prompt_tok')} out={w.get('output_tok')}"
    if kind == "poisson":
        load = w.get("load_fraction", w.get("load"))
        return f"poisson {w.get('rate_qps')} req/s" + (f" ({load:.0%} of capacity)" if load else "") + warm
    return f"{kind} n={w.get('n', len(rec.get('requests') or []))}{warm}"


# ------------------------------------------------------------------------------ training
def check_training(rec: dict[str, Any], profile: Profile, gpu) -> dict[str, Any]:
    """Step time and peak memory of one training record against the training-job model."""
    from simulator.training import train_peak_memory_gib, train_step_time_s

    card = card_of(rec)
    kw = dict(method=rec["method"], seq_len_tok=int(rec["seq_len_tok"]), micro_batch=int(rec["micro_batch"]),
              grad_ckpt=bool(rec["grad_ckpt"]), lora_r=int(rec.get("lora_r") or 16),
              lora_targets=rec.get("lora_targets") or "all-linear")
    terms = profile.training
    mem = train_peak_memory_gib(card, gpu, terms=terms, master_weights=bool(rec.get("master_weights", True)),
                                optimizer_state_bytes=_state_bytes(rec), **kw)
    if rec.get("error"):
        return {"oom": bool(rec.get("oom")), "predicted_fits": mem <= (profile.gpu.memory_gib or gpu.hbm_gib),
                "predicted_peak_memory_gib": mem}
    measured_mem = rec.get("max_reserved_gib")
    return {
        "step_time_s": _metric(float(rec["step_time_s"]), train_step_time_s(card, gpu, terms=terms, **kw)),
        "peak_memory_gib": _metric(float(measured_mem) if measured_mem is not None else math.nan, mem),
    }


def _state_bytes(rec: dict[str, Any]) -> float | None:
    """Bytes per optimizer-state element the run used, when it says (pure-bf16 full fine-tunes keep
    AdamW's m and v in bf16); None → the plan's default (fp32 states)."""
    dt = rec.get("optimizer_state_dtype")
    if rec.get("method") == "full" and dt in ("bfloat16", "float16"):
        return 2.0
    return None


def describe_training(rec: dict[str, Any]) -> str:
    adapter = {"lora": f"LoRA r{rec.get('lora_r')}", "qlora": f"QLoRA r{rec.get('lora_r')}"}.get(rec.get("method"), str(rec.get("method")))
    pooled = f", {rec['measurements']} measurements pooled" if rec.get("measurements") else ""
    return f"{adapter} seq {rec['seq_len_tok']} mb {rec['micro_batch']} ckpt {'on' if rec['grad_ckpt'] else 'off'}{pooled}"


# ---------------------------------------------------------------------------------- report
@dataclass
class Fidelity:
    profile_key: str
    profile_command: str
    created_utc: str
    serving: list[dict[str, Any]] = field(default_factory=list)
    training: list[dict[str, Any]] = field(default_factory=list)
    skipped_serving: int = 0  # serving runs of another engine configuration (not this Profile's)

    def as_dict(self) -> dict[str, Any]:
        return {"profile": self.profile_key, "profile_command": self.profile_command, "created_utc": self.created_utc,
                "summary": self.summary(), "serving": self.serving, "training": self.training,
                "skipped_serving_runs": self.skipped_serving}

    def summary(self) -> dict[str, Any]:
        """Per set (fit / held-out, and held-out per model): mean and max |error| of each metric,
        and whether the held-out targets are met."""
        out: dict[str, Any] = {}
        for kind, rows, metrics, targets in (("serving", self.serving, SERVING_METRICS, SERVING_TARGET),
                                             ("training", self.training, TRAINING_METRICS, TRAINING_TARGET)):
            groups: list[tuple[str, str, str | None]] = [(f"{kind} fit", "fit", None), (f"{kind} held-out", "held-out", None),
                                                         (f"{kind} cold engine", "cold", None)]
            held = [r for r in rows if r["set"] == "held-out" and "metrics" in r]
            methods = {r.get("method") for r in held}

            def label(r: dict[str, Any]) -> str:  # per model, and per training method when several
                return r["model"] + (f" {r['method']}" if len(methods) > 1 and r.get("method") else "")

            held_models = sorted({label(r) for r in held})
            if len(held_models) > 1:
                groups += [(f"{kind} held-out {m}", "held-out", m) for m in held_models]
            for name, s, model in groups:
                sel = [r for r in rows if r["set"] == s and "metrics" in r and (model is None or label(r) == model)]
                if not sel:
                    continue
                stats = {}
                for m in metrics:
                    errs = [abs(r["metrics"][m]["error"]) for r in sel
                            if m in r["metrics"] and r["metrics"][m]["error"] is not None and math.isfinite(r["metrics"][m]["error"])]
                    if errs:
                        stats[m] = {"n": len(errs), "mean_abs_error": float(np.mean(errs)), "max_abs_error": float(np.max(errs))}
                block: dict[str, Any] = {"runs": len(sel), "metrics": stats}
                if s == "held-out":
                    block["targets"] = {m: {"target": t, "met": stats[m]["mean_abs_error"] <= t} for m, t in targets.items() if m in stats}
                out[name] = block
        return out


def validate(runs: Runs, profile: Profile, progress=None) -> Fidelity:
    """Replay every serving and training record of `runs` with `profile` (see the module docstring)."""
    from calibrate.fit import ceilings_from_probe

    say = progress or (lambda msg: None)
    fid = Fidelity(profile.key, profile.command, profile.created_utc)
    ceilings = profile.ceilings if profile.ceilings.gemm_bf16_tflops else ceilings_from_probe(runs.probe)
    gpu_name = profile.gpu.catalog_name
    gpu = gpu_card_for(gpu_name, ceilings, runs.probe)
    st = profile.step_time
    serve = [r for r in runs.of("serve_replay") if r.get("requests")]
    if st is not None:
        matching = same_engine(serve, profile.engine.version, profile.engine.settings)
        if len(matching) < len(serve):
            say(f"{len(serve) - len(matching)} serving runs measured another engine configuration: not replayed")
        fid.skipped_serving = len(serve) - len(matching)
        serve = matching
        warm_twins = {_cold_twin_key(r) for r in serve if (r.get("workload") or {}).get("warm")}
        for i, rec in enumerate(serve):
            is_fit = rec.get("model") == st.fit_model and (rec.get("workload") or {}).get("kind") == "burst"
            cold = not is_fit and rec.get("key") in warm_twins
            say(f"replay {i + 1}/{len(serve)}: {rec.get('model')} {describe_workload(rec)}")
            row = {"key": rec.get("key"), "model": rec.get("model"), "workload": describe_workload(rec),
                   "set": "fit" if is_fit else ("cold" if cold else "held-out"), "metrics": replay_serving(rec, profile, gpu)}
            if rec.get("graph_captures") is not None:
                row["graph_captures"] = {k: rec["graph_captures"][k] for k in ("count", "total_s")}
            fid.serving.append(row)
    if profile.training is not None:
        for rec in runs.of("train"):
            res = check_training(rec, profile, gpu)
            row = {"key": rec.get("key"), "model": rec.get("model"), "method": rec.get("method"), "run": describe_training(rec),
                   "set": "fit" if rec.get("model") == profile.training.fit_model else "held-out"}
            if "oom" in res:
                row["oom_check"] = res
            else:
                row["metrics"] = res
            fid.training.append(row)
    return fid


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 100:+.1f} %"


def _val(x: float, metric: str) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    if metric.endswith(("_tok_s", "_qps")):  # rates, not durations
        return f"{x:,.2f}"
    if metric.endswith("_s") or "_s_p" in metric:
        return f"{x * 1e3:,.1f} ms" if x < 10 else f"{x:,.2f} s"
    if metric.endswith("_gib"):
        return f"{x:,.2f} GiB"
    return f"{x:,.2f}"


def fidelity_markdown(fid: Fidelity) -> str:
    """The report as Markdown: a summary per set, then one table per run kind and set."""
    s = fid.summary()
    lines = [f"# Fidelity of Profile `{fid.profile_key}`", "",
             f"Profile command: `{fid.profile_command}`  ", f"Profile created: {fid.created_utc}", "",
             "Errors are (predicted − measured) / measured. FIT runs were used to fit the Profile; "
             "HELD-OUT runs were not (other model sizes, other loads). COLD runs are trace replays on a freshly "
             "started engine whose warm twin (same requests, replayed once untimed first) is in the HELD-OUT set: "
             "their first pass paid the engine's CUDA-graph captures, which a server in steady state does not.", "", "## Summary (mean |error|, max |error|)", ""]
    for name, block in s.items():
        lines += [f"### {name} ({block['runs']} runs)", "", "| metric | mean abs error | max abs error | target |",
                  "|---|---:|---:|---|"]
        for m, st in block["metrics"].items():
            tgt = block.get("targets", {}).get(m)
            tgt_text = "" if tgt is None else f"≤ {tgt['target']:.0%}: {'met' if tgt['met'] else 'MISSED'}"
            lines.append(f"| {m} | {st['mean_abs_error'] * 100:.1f} % | {st['max_abs_error'] * 100:.1f} % | {tgt_text} |")
        lines.append("")
    for title, rows, metrics, label in (("Serving replays", fid.serving, SERVING_METRICS, "workload"),
                                        ("Training runs", fid.training, TRAINING_METRICS, "run")):
        for set_name in ("fit", "held-out", "cold"):
            sel = [r for r in rows if r["set"] == set_name and "metrics" in r]
            if not sel:
                continue
            lines += [f"## {title}: {set_name.upper()}", ""]
            lines += ["| model | " + label + " | " + " | ".join(metrics) + " |", "|---|---|" + "---:|" * len(metrics)]
            for r in sel:
                cells = [f"{_val(r['metrics'][m]['measured'], m)} → {_val(r['metrics'][m]['predicted'], m)} ({_pct(r['metrics'][m]['error'])})"
                         for m in metrics]
                what = r[label] + (f" ({r['graph_captures']['count']} graph captures, {r['graph_captures']['total_s'] * 1e3:,.0f} ms)"
                                   if r.get("graph_captures") else "")
                lines.append(f"| {r['model']} | {what} | " + " | ".join(cells) + " |")
            lines.append("")
    ooms = [r for r in fid.training if "oom_check" in r]
    if ooms:
        lines += ["## Training runs that failed (OOM is the feasibility boundary)", "",
                  "| model | run | measured | predicted peak | model says |", "|---|---|---|---:|---|"]
        for r in ooms:
            c = r["oom_check"]
            lines.append(f"| {r['model']} | {r['run']} | {'OOM' if c['oom'] else 'error'} | "
                         f"{c['predicted_peak_memory_gib']:,.1f} GiB | {'fits' if c['predicted_fits'] else 'does not fit'} |")
        lines.append("")
    return "\n".join(lines)


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_fidelity(fid: Fidelity, folder: str | Path, stem: str = "fidelity") -> tuple[Path, Path]:
    """`<stem>.md` and `<stem>.json` in `folder`, each written atomically."""
    from calibrate.runlog import write_atomic

    folder = Path(folder)
    md, js = folder / f"{stem}.md", folder / f"{stem}.json"
    write_atomic(md, fidelity_markdown(fid) + "\n")
    write_atomic(js, json.dumps(_clean(fid.as_dict()), indent=2) + "\n")
    return md, js


def fidelity_table_rows(fid: Fidelity) -> list[tuple[str, str, str, str]]:
    """(set, metric, mean |error|, max |error|) rows for the CLI's table."""
    rows = []
    for name, block in fid.summary().items():
        for m, st in block["metrics"].items():
            rows.append((name, m, f"{st['mean_abs_error'] * 100:.1f} %", f"{st['max_abs_error'] * 100:.1f} %"))
    return rows
