"""`lifecost train` and `lifecost cost`: the fine-tune's arithmetic and the lifetime cost per month.

Thin over `simulator.training.plan_training` and `simulator.cost.lifetime_cost`. Results go to
stdout (rich tables, or JSON with `--json`); the capacity simulation's progress goes to stderr.
Exit codes: 0 an answer; 1 the fine-tune does not fit (the verdict is the answer on stdout);
2 a user error (one line on stderr).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from models.errors import LifecostError
from planner_ui import output
from simulator.scenario import Scenario, load_scenario


def parse_range(text: str | None, flag: str) -> float | tuple[float, float] | None:
    """'0.4' → 0.4; '0.3:0.45' → (0.3, 0.45) (a low:high band)."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise LifecostError(f"cannot read {text!r} as a number or a low:high range", field=flag, fix="e.g. 0.4 or 0.3:0.45") from None
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return (values[0], values[1])
    raise LifecostError(f"{text!r} has {len(values)} parts", field=flag, fix="a number or low:high")


def _band(b: Any, fmt: str = "{:,.4g}") -> str:
    mid = fmt.format(b.mid)
    return mid if not b.is_range else f"{mid}  ({fmt.format(b.low)} – {fmt.format(b.high)})"


def _print_training(plan: Any) -> None:
    head = [
        ("scenario", plan.scenario),
        ("model", plan.model),
        ("method", plan.method),
        ("GPUs", f"{plan.num_gpus} × {plan.gpu}"),
        ("memory", plan.verdict),
        ("trainable parameters", plan.trainable_params),
        ("MFU", f"{_band(plan.mfu, '{:.3f}')} — {plan.mfu_source}"),
        ("price", f"{plan.price.label} ({plan.price.source})"),
    ]
    output.out.print(output.kv_table("fine-tune", head))
    t = Table(title="arithmetic", title_justify="left")
    t.add_column("quantity", style="bold")
    t.add_column("formula")
    t.add_column("value", justify="right")
    for s in plan.steps:
        value = s.text().rsplit(" = ", 1)[1]
        t.add_row(s.label, s.formula, value)
    output.out.print(t)
    m = Table(title="memory options (per GPU)", title_justify="left")
    for c in ("micro-batch", "grad ckpt", "needs GiB", "has GiB", "fits", "compute h"):
        m.add_column(c, justify="right")
    for o in plan.options:
        chosen = (o.micro_batch, o.grad_ckpt) == (plan.micro_batch, plan.grad_ckpt)
        m.add_row(str(o.micro_batch), "on" if o.grad_ckpt else "off", f"{o.needed_gib:,.1f}", f"{o.available_gib:,.1f}", ("yes" if o.fits else "no") + (" ←" if chosen else ""), f"{o.compute_s / 3600:,.3g}")
    output.out.print(m)
    ck = plan.checkpoints
    rows = [
        ("compute (failure-free)", _band(plan.compute_s * (1 / 3600), "{:,.3g} h")),
        ("wall-clock (expected)", _band(plan.wall_s * (1 / 3600), "{:,.3g} h")),
        (
            "checkpoint every",
            f"{ck.interval_s / 60:,.1f} min{' (once: the job is shorter than the optimum)' if ck.interval_s < ck.daly_interval_s else ''}; "
            f"optimum {ck.daly_interval_s / 60:,.1f} min (Daly 2006), {ck.young_interval_s / 60:,.1f} min (Young 1974); {ck.checkpoint_s:,.1f} s each",
        ),
        ("cluster MTBF", f"{ck.cluster_mtbf_s / 3600:,.0f} h → {ck.expected_failures:.3g} expected failures"),
        ("GPU-hours", _band(plan.gpu_hours, "{:,.4g}")),
        ("energy", _band(plan.energy_kwh, "{:,.4g} kWh")),
        ("cost (one run)", _band(plan.usd, "${:,.2f}")),
    ]
    if plan.expected_attempts != 1.0:
        rows.append(("cost incl. failed attempts", _band(plan.usd_expected, "${:,.2f}")))
    output.out.print(output.kv_table("time and money", rows))


MONTH_COLUMNS = (
    ("requests_per_day", "req/day", "{:,.0f}"),
    ("replicas_peak", "replicas@peak", "{:,}"),
    ("gpu_hours", "GPU-h", "{:,.0f}"),
    ("training_usd", "training $", "{:,.0f}"),
    ("failed_attempts_usd", "failed runs $", "{:,.0f}"),
    ("serving_usd", "serving $", "{:,.0f}"),
    ("idle_usd", "of which idle $", "{:,.0f}"),
    ("energy_kwh", "energy kWh", "{:,.0f}"),
    ("energy_usd", "energy $", "{:,.0f}"),
    ("total_usd", "total $", "{:,.0f}"),
    ("usd_per_1m_tok", "$/1M tok", "{:,.4f}"),
)


def _print_cost(cost: Any) -> None:
    f = cost.frame
    t = Table(title=f"{cost.scenario}: cost per month ({cost.price.label})", title_justify="left")
    t.add_column("month", justify="right")
    for _, label, _ in MONTH_COLUMNS:
        t.add_column(label, justify="right")
    for month, row in f.iterrows():
        t.add_row(str(month), *(fmt.format(int(row[c]) if fmt == "{:,}" else row[c]) for c, _, fmt in MONTH_COLUMNS))
    output.out.print(t)
    tot = cost.totals
    be = tot["break_even_month"]
    rows = [
        ("capacity", f"{tot['capacity_qps_per_replica']:,.3g} req/s per replica of {tot['gpus_per_replica']} GPU ({tot['capacity_source']})"),
        ("provisioning", "autoscaled hourly" if tot["autoscale"] else "fixed for the peak (or committed)"),
        ("GPUs at peak", tot["gpus_peak"]),
        ("training (all runs)", f"${tot['training_usd']:,.0f}"),
        ("serving", f"${tot['serving_usd']:,.0f} (idle ${tot['idle_usd']:,.0f})"),
        ("energy", f"{tot['energy_kwh']:,.0f} kWh" + (f", ${tot['energy_usd']:,.0f}" if tot["energy_usd"] else " (in the rental price)")),
        ("total", f"${tot['total_usd']:,.0f} over {tot['months']} months"),
        ("tokens served", f"{tot['tokens']:,.4g}"),
        ("$/1M tokens", f"${tot['usd_per_1m_tok']:,.4f} all-in, ${tot['serving_usd_per_1m_tok']:,.4f} serving only" if tot["usd_per_1m_tok"] is not None else "—"),
        ("break-even month", f"month {be}: cumulative serving passes training" if be else "serving never passes training in the horizon"),
    ]
    output.out.print(output.kv_table(f"{cost.scenario}: totals", rows))


def _capacity(scenario: Scenario, qps: float | None, gpus_per_replica: int | None, requests: int | None) -> Any:
    from simulator.cost import ReplicaCapacity, capacity_from_simulation

    if qps is not None:
        return ReplicaCapacity(qps, gpus_per_replica or scenario.gpu.tensor_parallel, source="--capacity-qps")
    with output.err.status(f"[{scenario.name}] simulating one replica to find its capacity within the SLO…"):
        return capacity_from_simulation(scenario, num_requests=requests)


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _failures(mtbf_gpu_h: float | None, attempt_failure_prob: float | None, restart_s: float | None) -> Any:
    from simulator.failures import FailureModel

    defaults = FailureModel()
    return FailureModel(
        mtbf_gpu_h=defaults.mtbf_gpu_h if mtbf_gpu_h is None else mtbf_gpu_h,
        restart_s=defaults.restart_s if restart_s is None else restart_s,
        attempt_failure_prob=defaults.attempt_failure_prob if attempt_failure_prob is None else attempt_failure_prob,
    )


MTBF_HELP = "Hours between failures of one GPU (default ≈ 50,700: Llama 3's 419 interruptions on 16,384 GPUs in 54 days)."
REDO_HELP = "Probability a finished run is unusable and must be redone (default 0)."
RESTART_HELP = "Seconds to restart after a failure: requeue, start, load the checkpoint (default 600)."
# The failure-model options `train` and `cost` share (one declaration each, as typer allows).
MTBF_OPT = typer.Option(None, "--mtbf-gpu-h", help=MTBF_HELP)
REDO_OPT = typer.Option(None, "--attempt-failure-prob", help=REDO_HELP)
RESTART_OPT = typer.Option(None, "--restart-s", help=RESTART_HELP)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        scenario_path: Path = typer.Argument(None, metavar="[SCENARIO.yaml]", help="Scenario YAML (default: the embedded default scenario)."),
        mfu: str = typer.Option(None, "--mfu", help="Model FLOPs utilisation, or a low:high range (default: Profile, else GPU card)."),
        mean_tokens: str = typer.Option(None, "--mean-tokens", help="Mean tokens per sample, or low:high."),
        epochs: str = typer.Option(None, "--epochs", help="Epochs, or low:high."),
        num_gpus: int = typer.Option(None, "--num-gpus", help="Data-parallel GPUs (default: training.num_gpus)."),
        mtbf_gpu_h: float = MTBF_OPT,
        attempt_failure_prob: float = REDO_OPT,
        restart_s: float = RESTART_OPT,
        as_json: bool = typer.Option(False, "--json", help="Print JSON to stdout."),
    ) -> None:
        """The fine-tune's arithmetic, memory verdict, hours, energy and dollars."""
        from simulator.training import plan_training

        scenario = load_scenario(scenario_path)
        if num_gpus is not None:
            if num_gpus < 1:
                raise LifecostError(f"got {num_gpus}", field="--num-gpus", fix="at least 1")
            scenario = scenario.with_changes(**{"training.num_gpus": num_gpus})
        plan = plan_training(
            scenario,
            mfu=parse_range(mfu, "--mfu"),
            mean_tokens=parse_range(mean_tokens, "--mean-tokens"),
            epochs=parse_range(epochs, "--epochs"),
            failures=_failures(mtbf_gpu_h, attempt_failure_prob, restart_s),
        )
        if as_json:
            output.print_json(plan.summary())
        else:
            _print_training(plan)
        if not plan.fits:
            raise typer.Exit(1)

    @app.command("cost")
    def cost(
        scenario_paths: list[Path] = typer.Argument(None, metavar="[SCENARIO.yaml ...]", help="One or more scenario YAMLs (default: the embedded default)."),
        months: int = typer.Option(None, "--months", help="Horizon in months (default: each scenario's horizon.months)."),
        capacity_qps: float = typer.Option(None, "--capacity-qps", help="Req/s one replica sustains within the SLO; skips the simulation."),
        gpus_per_replica: int = typer.Option(None, "--gpus-per-replica", help="GPUs per replica with --capacity-qps (default: gpu.tensor_parallel)."),
        requests: int = typer.Option(None, "--requests", help="Requests per capacity simulation (default: workload.num_requests)."),
        mtbf_gpu_h: float = MTBF_OPT,
        attempt_failure_prob: float = REDO_OPT,
        restart_s: float = RESTART_OPT,
        as_json: bool = typer.Option(False, "--json", help="Print JSON to stdout."),
    ) -> None:
        """Lifetime cost per month (training, serving, idle, energy), totals, and a comparison."""
        from simulator.cost import compare, lifetime_cost

        if months is not None and months < 1:
            raise LifecostError(f"must be ≥ 1, got {months}", field="--months", fix="plan at least one month")
        scenarios = [load_scenario(p) for p in (scenario_paths or [None])]
        failures = _failures(mtbf_gpu_h, attempt_failure_prob, restart_s)
        costs = [lifetime_cost(s, _capacity(s, capacity_qps, gpus_per_replica, requests), months=months, failures=failures) for s in scenarios]
        if as_json:
            data: dict[str, Any] = {
                "scenarios": [
                    {"totals": c.totals, "months": c.frame.reset_index().to_dict(orient="records"), "training": c.training.summary() if c.training else None}
                    for c in costs
                ]
            }
            if len(costs) > 1:
                data["compare"] = compare(costs).to_dict()
            output.print_json(data)
            return
        for c in costs:
            _print_cost(c)
        if len(costs) > 1:
            table = compare(costs)
            t = Table(title="comparison", title_justify="left")
            t.add_column("", style="bold")
            for name in table.columns:
                t.add_column(str(name), justify="right")
            for key, row in table.iterrows():
                t.add_row(str(key), *(_cell(v) for v in row))
            output.out.print(t)
