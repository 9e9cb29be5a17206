"""`lifecost capacity` and `lifecost report`: SLA capacity planning from the command line.

Thin over `simulator.capacity` (the search) and `planner_ui.report` (the HTML/Markdown report).
Exit codes: 0 the SLO is met (answer on stdout), 1 no configuration meets it (the closest one
and its miss on stdout), 2 a user error (one line on stderr).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from models.errors import LifecostError
from planner_ui import output
from simulator.scenario import Scenario, load_scenario


def apply_slo_overrides(scenario: Scenario, *, ttft_p99_s: float | None, tpot_p99_s: float | None, e2e_p99_s: float | None, attainment: float | None, num_requests: int | None = None) -> Scenario:
    """The scenario with the SLO bounds given on the command line laid over its `slo:`."""
    changes: dict[str, Any] = {}
    for flag, dotted, value in (
        ("--slo-ttft-p99", "slo.ttft_p99_s", ttft_p99_s),
        ("--slo-tpot-p99", "slo.tpot_p99_s", tpot_p99_s),
        ("--slo-e2e-p99", "slo.e2e_p99_s", e2e_p99_s),
        ("--attainment", "slo.attainment", attainment),
        ("--requests", "workload.num_requests", num_requests),
    ):
        if value is None:
            continue
        limit_ok = 0 < value <= 1 if flag == "--attainment" else value > 0
        if not limit_ok:
            fix = "a fraction in (0, 1], e.g. 0.99" if flag == "--attainment" else "a positive number"
            raise LifecostError(f"got {value}", field=flag, fix=fix)
        changes[dotted] = value
    return scenario.with_changes(**changes) if changes else scenario


def _print_answer(answer: Any, headroom: Any) -> None:
    from rich.table import Table

    q = answer.slo
    slo_text = ", ".join(
        f"{name} ≤ {q[k]:g} s" for name, k in (("p99 TTFT", "ttft_p99_s"), ("p99 TPOT", "tpot_p99_s"), ("p99 E2E", "e2e_p99_s")) if q.get(k) is not None
    ) + f", attainment ≥ {q['attainment']:.0%}"
    config = ", ".join(f"{k}={v}" for k, v in answer.config.items())
    if answer.meets:
        rows = [
            ("peak", f"{answer.peak_qps:.4g} req/s"),
            ("SLO", slo_text),
            ("configuration", config),
            ("replicas", answer.replicas),
            ("GPUs per replica", answer.gpus_per_replica),
            ("total GPUs", answer.total_gpus),
            ("max req/s per replica", round(answer.max_qps_per_replica, 3)),
            ("$/GPU-hour", answer.usd_per_gpu_hour),
            ("$/hour", round(answer.usd_per_hour, 2)),
            ("$/month (730 h)", round(answer.usd_per_hour * 730, 0)),
            ("verified by fleet simulation", "yes (N meets, N−1 misses)" if answer.verified else "no"),
        ]
        output.out.print(output.kv_table("capacity answer", rows))
    else:
        output.out.print(output.kv_table("no configuration meets the SLO", [("peak", f"{answer.peak_qps:.4g} req/s"), ("SLO", slo_text), ("closest configuration", config), ("miss", answer.miss)]))
    output.out.print(candidates_table(answer.candidates))
    if headroom is not None:
        t = Table(title=f"headroom ({answer.replicas} replicas)", title_justify="left")
        hcols = [("rate_qps", "req/s"), ("slo_attainment", "attainment"), ("meets_slo", "meets"), ("ttft_p99_s", "p99 TTFT s"), ("tpot_p99_s", "p99 TPOT s"), ("e2e_p99_s", "p99 E2E s")]
        for _, label in hcols:
            t.add_column(label, justify="right")
        for _, r in headroom.iterrows():
            t.add_row(*(_cell(r[c]) for c, _ in hcols))
        output.out.print(t)


def _cell(v: Any) -> str:
    if isinstance(v, (bool,)) or type(v).__name__ == "bool_":
        return "yes" if v else "no"
    if isinstance(v, float):
        return "—" if v != v else f"{v:.3g}"
    return str(v)


def candidates_table(cand: Any) -> Any:
    """The searched configurations (`simulator.capacity.candidates_summary`) as a rich table."""
    from rich.table import Table

    from simulator.capacity import candidates_summary

    frame = candidates_summary(cand.head(20))
    t = Table(title="configurations searched (cheapest first)", title_justify="left")
    labels = {"ceiling_qps": "ceiling req/s", "max_qps_per_replica": "max req/s per replica", "usd_per_hour": "$/hour"}
    for c in frame.columns:
        t.add_column(labels.get(c, c), justify="left" if c == "note" else "right")
    for row in frame.itertuples(index=False):
        t.add_row(*(_cell(v) if v is not None else "—" for v in row))
    return t


# Options `capacity` and `report` share: where their simulations run and how many requests each has.
EXECUTOR_OPT = typer.Option("local", "--executor", help="local (processes) or ray.")
ADDRESS_OPT = typer.Option(None, "--address", help="Ray cluster address (default: start a local Ray).")
WORKERS_OPT = typer.Option(None, "--workers", help="Worker processes (local) or CPUs (local Ray); default: all cores.")
REQUESTS_OPT = typer.Option(None, "--requests", help="Requests per simulated replica (default: the scenario's workload.num_requests).")


def register(app: typer.Typer) -> None:
    @app.command("capacity")
    def capacity(
        scenario_path: Path = typer.Argument(..., metavar="SCENARIO.yaml", help="Scenario YAML."),
        peak_qps: float = typer.Option(..., "--peak-qps", help="Peak request rate to serve (req/s)."),
        slo_ttft_p99: float = typer.Option(None, "--slo-ttft-p99", help="p99 time to first token bound (s); default: the scenario's."),
        slo_tpot_p99: float = typer.Option(None, "--slo-tpot-p99", help="p99 time per output token bound (s)."),
        slo_e2e_p99: float = typer.Option(None, "--slo-e2e-p99", help="p99 end-to-end latency bound (s)."),
        attainment: float = typer.Option(None, "--attainment", help="Fraction of requests that must meet every bound, e.g. 0.99."),
        search_spec: str = typer.Option("", "--search", help="Dimensions to search, comma-separated: gpu, tp, max-num-seqs, max-num-batched-tokens, quant, kv-dtype, speculative, offload; each optionally with values, e.g. gpu=H100-SXM/L40S,tp=1/2,quant."),
        executor_kind: str = EXECUTOR_OPT,
        address: str = ADDRESS_OPT,
        workers: int = WORKERS_OPT,
        requests: int = REQUESTS_OPT,
        sweep_out: Path = typer.Option(None, "--sweep-out", help="Parquet file for the per-configuration table (resumable)."),
        headroom: bool = typer.Option(True, "--headroom/--no-headroom", help="Also simulate the headroom curve of the answer."),
        verify: bool = typer.Option(True, "--verify/--no-verify", help="Verify N and N−1 by simulating the whole fleet."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON to stdout."),
    ) -> None:
        """Fewest GPUs and cheapest configuration that meet the SLO at a peak rate."""
        from simulator.capacity import headroom_curve, headroom_rates, parse_search, search
        from simulator.sweep import make_executor

        scenario = apply_slo_overrides(load_scenario(scenario_path), ttft_p99_s=slo_ttft_p99, tpot_p99_s=slo_tpot_p99, e2e_p99_s=slo_e2e_p99, attainment=attainment, num_requests=requests)
        if scenario.slo.ttft_p99_s is None and scenario.slo.tpot_p99_s is None and scenario.slo.e2e_p99_s is None:
            raise LifecostError("no SLO bound is set", field="slo", fix="pass --slo-ttft-p99 and/or --slo-tpot-p99")
        space = parse_search(search_spec, scenario)
        executor = make_executor(executor_kind, workers=workers, address=address)
        try:
            answer = search(scenario, peak_qps, space, executor=executor, out_parquet=sweep_out, verify=verify, progress=True)
            curve = headroom_curve(answer.scenario, answer.replicas, headroom_rates(peak_qps), executor=executor) if headroom and answer.meets else None
        finally:
            executor.close()
        if as_json:
            data = answer.summary()
            data["headroom"] = curve.to_dict(orient="records") if curve is not None else None
            output.print_json(data)
        else:
            _print_answer(answer, curve)
        if not answer.meets:
            raise typer.Exit(1)

    @app.command("report")
    def report(
        scenario_path: Path = typer.Argument(..., metavar="SCENARIO.yaml", help="Scenario YAML."),
        out: Path = typer.Option(..., "-o", "--output", help="report.html (self-contained) or report.md."),
        peak_qps: float = typer.Option(None, "--peak-qps", help="Peak rate for the capacity answer (default: the horizon's first-month peak)."),
        search_spec: str = typer.Option("", "--search", help="Capacity search dimensions, as for `lifecost capacity` (default: the scenario's configuration only)."),
        executor_kind: str = EXECUTOR_OPT,
        address: str = ADDRESS_OPT,
        workers: int = WORKERS_OPT,
        requests: int = REQUESTS_OPT,
    ) -> None:
        """Capacity report: training arithmetic, lifetime cost, capacity answer, headroom, latencies."""
        from planner_ui.report import build_report, write_report
        from simulator.sweep import make_executor

        suffix = out.suffix.lower()
        if suffix not in {".html", ".htm", ".md", ".markdown"}:
            raise LifecostError(f"unknown report format {out.suffix!r}", field="-o", fix="name the output report.html or report.md")
        scenario = apply_slo_overrides(load_scenario(scenario_path), ttft_p99_s=None, tpot_p99_s=None, e2e_p99_s=None, attainment=None, num_requests=requests)
        executor = make_executor(executor_kind, workers=workers, address=address)
        try:
            rep = build_report(scenario, peak_qps=peak_qps, search_spec=search_spec, executor=executor, progress=True)
        finally:
            executor.close()
        write_report(rep, out)
        output.err.print(f"wrote {out}")
