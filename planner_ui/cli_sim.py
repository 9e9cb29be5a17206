"""`lifecost simulate`: run the serving simulator on a Scenario.

Thin over `simulator.engine.simulate`. Stdout: a rich summary table, or the summary as JSON with
`--json`. `--out DIR` also writes the per-request and per-step frames (`requests.parquet`,
`steps.parquet`, `summary.json`), each atomically (temp file + rename). Progress goes to stderr.
Exit codes: 0 simulated; 2 a user error (one line on stderr).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import typer

from models.errors import LifecostError
from planner_ui import output
from simulator.scenario import load_scenario

PROGRESS_MIN_REQUESTS = 20_000  # below this a run takes well under a few seconds: no bar


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(result, out_dir: Path) -> list[Path]:
    """Write requests/steps parquet and the summary JSON under `out_dir`, each atomically."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LifecostError(f"cannot create {out_dir} ({e.strerror})", field="--out", fix="give a writable directory") from None
    paths = [out_dir / "requests.parquet", out_dir / "steps.parquet", out_dir / "summary.json"]
    _atomic_write(paths[0], lambda p: result.requests.to_parquet(p, index=False))
    _atomic_write(paths[1], lambda p: result.steps.to_parquet(p, index=False))
    summary = json.dumps(output._clean(result.summary()), indent=2) + "\n"
    _atomic_write(paths[2], lambda p: Path(p).write_text(summary, encoding="utf-8"))
    return paths


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    ms = lambda d, k: round(d[k] * 1e3, 2) if d[k] == d[k] else "—"  # noqa: E731
    rows: list[tuple[str, Any]] = [
        ("requests finished", summary["finished"]),
        ("simulated time s", round(summary["makespan_s"], 2)),
        ("throughput tok/s", round(summary["throughput_tok_s"], 1)),
        ("throughput req/s", round(summary["throughput_req_s"], 3)),
    ]
    for name, key in (("TTFT", "ttft_s"), ("TPOT", "tpot_s"), ("ITL", "itl_s"), ("E2E", "e2e_s")):
        d = summary[key]
        rows.append((f"{name} ms p50 / p90 / p99", f"{ms(d, 'p50')} / {ms(d, 'p90')} / {ms(d, 'p99')}"))
    rows += [
        ("KV cache peak / mean", f"{summary['kv_peak_frac']:.1%} / {summary['kv_mean_frac']:.1%}"),
        ("preemptions", summary["preemptions"]),
        ("prefix-cache hit (of prompt tokens)", f"{summary['prefix_hit_frac']:.1%}"),
        ("SLO attainment", f"{summary['slo_attainment']:.1%}"),
        ("goodput req/s", round(summary["goodput_req_s"], 3)),
        ("GPU-seconds", round(summary["gpu_seconds"], 1)),
        ("step-time model", summary["predictor"]),
        ("wall time s", round(summary["sim_wall_s"], 2)),
    ]
    if "reasoning" in summary:  # simulator/result.py: latency split by reasoning on/off
        for label in ("on", "off"):
            part = summary["reasoning"][label]
            rows.append((f"reasoning {label}: requests, TPOT / E2E ms p99", f"{part['num_requests']}, {ms(part['tpot_s'], 'p99')} / {ms(part['e2e_s'], 'p99')}"))
        rows.append(("answer tok/s (output minus thinking)", round(summary["answer_tok_s"], 1)))
    if "cluster" in summary:  # simulator/cluster.py: many replicas, autoscaling, disaggregation
        c = summary["cluster"]
        pools = [("prefill", c["prefill"]), ("decode", c["decode"])] if "prefill" in c else [("replicas", c)]
        rows.append(("router", c["router"]))
        for name, pool in pools:
            util = pool["replica_utilisation"]
            rows.append((f"{name}: provisioned, utilisation min–max", f"{pool['replicas_provisioned']}, {min(util, default=0):.0%}–{max(util, default=0):.0%}"))
        rows.append(("GPU-hours provisioned", round(c["gpu_seconds_provisioned"] / 3600.0, 3)))
        if "kv_transfer_s" in c:
            rows.append(("KV transfer ms p50 / p99", f"{ms(c['kv_transfer_s'], 'p50')} / {ms(c['kv_transfer_s'], 'p99')}"))
    if "offload" in summary:  # simulator/offload.py: tiered KV offload
        o = summary["offload"]
        rows.append(("prefix hit by tier (of prompt tokens)", " / ".join([f"hbm {o['hbm_hit_frac']:.1%}"] + [f"{t} {o[t + '_hit_frac']:.1%}" for t in o["tiers"]])))
        rows.append(("offload GB up / down", f"{o['bytes_up'] / 1e9:.1f} / {o['bytes_down'] / 1e9:.1f}"))
        rows.append(("offload loads / recomputed, prefill s saved", f"{o['loads']} / {o['recompute_decisions']}, {o['prefill_saved_s']:.2f}"))
    if "speculative" in summary:  # simulator/speculative.py
        sp = summary["speculative"]
        rows.append(("speculative: method, k, tokens per target step", f"{sp['method']}, {sp['num_draft_tok']}, {sp['tok_per_target_step']:.2f}"))
    return rows


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_cmd(
        scenario_path: Path = typer.Argument(None, metavar="SCENARIO.yaml", help="Scenario YAML (default: the embedded default scenario)."),
        requests: int = typer.Option(None, "--requests", help="Number of requests (overrides workload.num_requests)."),
        qps: float = typer.Option(None, "--qps", help="Arrival rate, requests/s (overrides workload.arrival.rate_qps)."),
        seed: int = typer.Option(None, "--seed", help="Random seed (overrides the scenario's seed)."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON to stdout."),
        out: Path = typer.Option(None, "--out", help="Also write requests.parquet, steps.parquet and summary.json here."),
    ) -> None:
        """Simulate the scenario's serving: one vLLM-style replica, or the cluster its `cluster:` section describes."""
        from simulator.engine import simulate

        if requests is not None and requests < 1:
            raise LifecostError(f"got {requests}", field="--requests", fix="ask for at least one request")
        if qps is not None and not qps > 0:
            raise LifecostError(f"got {qps}", field="--qps", fix="give a positive arrival rate in requests/s")
        scenario = load_scenario(scenario_path)
        total = requests or scenario.workload.num_requests
        if total >= PROGRESS_MIN_REQUESTS:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=output.err, transient=True) as bar:
                task = bar.add_task("simulate", total=total)
                result = simulate(scenario, num_requests=requests, rate_qps=qps, seed=seed, progress=lambda done, n: bar.update(task, completed=done, total=n))
        else:
            result = simulate(scenario, num_requests=requests, rate_qps=qps, seed=seed)
        summary = result.summary()
        if out is not None:
            paths = write_result(result, out)
            output.err.print(f"wrote {', '.join(str(p) for p in paths)}")
        if as_json:
            output.print_json(summary)
        else:
            output.out.print(output.kv_table(f"simulate: {scenario.name} ({scenario.model.name} on {scenario.gpu.name})", summary_rows(summary)))
