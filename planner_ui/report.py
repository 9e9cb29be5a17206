"""The capacity report: one scenario's training arithmetic, lifetime cost, SLA capacity answer,
headroom curve and latency percentiles, as self-contained HTML or as Markdown.

Build once (`build_report` → `Report`: titled sections of paragraphs, tables and plotly
figures), render twice (`to_html`, `to_markdown`), so both formats carry the same numbers.
The HTML inlines plotly.js once (the first figure, `include_plotlyjs=True`; later figures reuse
it), so the file opens offline. `write_report` writes via temp file + rename.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from simulator.scenario import Scenario


@dataclass
class Table:
    caption: str
    frame: pd.DataFrame


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Any] = field(default_factory=list)  # plotly Figures (HTML only; Markdown shows their tables)


@dataclass
class Report:
    title: str
    sections: list[Section]
    data: dict[str, Any] = field(default_factory=dict)  # the raw answers, for --json-like reuse and tests


# --- sections ---------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else ("yes" if v else "no")
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "—"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def predictor_section(scenario: Scenario) -> Section:
    """Which step-time model the numbers come from: a calibration Profile (with its fit quality)
    or the datasheet roofline."""
    from simulator.predictor import make_predictor

    pred = make_predictor(scenario)
    sec = Section("Step-time model in use")
    profile = getattr(pred, "profile", None)
    if profile is None:
        why = "engine.profile = 'roofline' asks for it" if scenario.engine.profile == "roofline" else f"no calibration Profile with step-time coefficients for {scenario.gpu.name}"
        sec.paragraphs.append(
            f"Roofline ({why}): max(compute, memory) time at the GPU card's datasheet peaks × its default efficiencies. "
            "Run `lifecost calibrate` on the target GPU to replace it with measured coefficients."
        )
        return sec
    st = profile.step_time
    sec.paragraphs.append(f"Calibrated Profile {profile.key}, created {profile.created_utc} by `{profile.command}`.")
    rows = [("c0_s", st.c0_s), ("c1", st.c1), ("c2", st.c2), ("c3", st.c3), ("c4", st.c4), ("fit points", st.fit.n_points), ("fit R²", st.fit.r2), ("fit MAPE", st.fit.mape), ("fitted on", st.fit_model or "—")]
    sec.tables.append(Table("fitted step-time coefficients and fit quality", pd.DataFrame(rows, columns=["term", "value"])))
    fidelity = fidelity_summary(scenario, profile)
    if fidelity is None:
        sec.paragraphs.append("No fidelity report beside this Profile (`lifecost calibrate` writes fidelity.json when it validates).")
    else:
        sec.paragraphs.append(
            "Fidelity: the calibration runs replayed in the simulator with this Profile; errors are (predicted − measured) ÷ measured. "
            "'fit' runs were used to fit the Profile, 'held-out' runs were not."
        )
        sec.tables.append(Table("fidelity (mean and max |error| per metric)", fidelity))
    return sec


FIDELITY_FILE = "fidelity.json"  # `calibrate.validate.write_fidelity`'s default, next to the Profile


def read_fidelity(scenario: Scenario, profile: Any) -> dict[str, Any] | None:
    """The `fidelity.json` that `calibrate.validate.write_fidelity` wrote beside the Profile in
    use (the Profile file the scenario names, else the stored `<gpu>/<engine>` one), or None when
    no validation was written. The one reader of that file for the report and the planner."""
    import json

    from models.profile import profile_path

    choice = scenario.engine.profile
    folder = Path(choice).parent if choice not in ("auto", "roofline") and Path(choice).is_file() else profile_path(profile.gpu.catalog_name, profile.engine.name).parent
    path = folder / FIDELITY_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def fidelity_summary(scenario: Scenario, profile: Any) -> pd.DataFrame | None:
    """The fidelity report's summary (set, metric, runs, mean and max |relative error|) from
    `fidelity.json` beside the Profile in use, or None when no validation was written."""
    data = read_fidelity(scenario, profile)
    if data is None:
        return None
    rows = [
        {"set": name, "metric": metric, "runs": v.get("n"), "mean_abs_error": v.get("mean_abs_error"), "max_abs_error": v.get("max_abs_error")}
        for name, block in (data.get("summary") or {}).items()
        for metric, v in (block.get("metrics") or {}).items()
    ]
    return pd.DataFrame(rows, columns=["set", "metric", "runs", "mean_abs_error", "max_abs_error"])


def training_section(scenario: Scenario) -> tuple[Section, dict[str, Any]]:
    from simulator.training import plan_training

    sec = Section("Training")
    if scenario.training.method == "none":
        sec.paragraphs.append("No fine-tune in this scenario (training.method = none).")
        return sec, {}
    plan = plan_training(scenario)
    sec.paragraphs.append(f"{plan.method} fine-tune of {plan.model} on {plan.num_gpus} × {plan.gpu}: {plan.verdict}.")
    sec.paragraphs.append(f"MFU {plan.mfu.fmt()} ({plan.mfu_source}); price {plan.price.label} ({plan.price.source}).")
    steps = pd.DataFrame([{"quantity": s.label, "arithmetic": s.formula, "value": s.value, "unit": s.unit} for s in plan.steps])
    sec.tables.append(Table("the arithmetic", steps))
    opts = pd.DataFrame([o.__dict__ for o in plan.options])
    if not opts.empty:
        sec.tables.append(Table("memory options (micro-batch × gradient checkpointing)", opts))
    return sec, plan.summary()


def cost_section(scenario: Scenario, capacity: Any) -> tuple[Section, dict[str, Any]]:
    """Lifetime cost per month from `simulator.cost.lifetime_cost`, with the capacity found here."""
    import plotly.graph_objects as go

    from simulator.cost import lifetime_cost

    plan = lifetime_cost(scenario, capacity)
    frame = plan.frame.reset_index()
    t = plan.totals
    sec = Section("Lifetime cost")
    be = t.get("break_even_month")
    sec.paragraphs.append(
        f"{t['months']} months at {t['price']}: ${t['total_usd']:,.0f} in total (training ${t['training_usd']:,.0f}, serving "
        f"${t['serving_usd']:,.0f} of which idle ${t['idle_usd']:,.0f}); "
        + (f"${t['usd_per_1m_tok']:,.3f} per 1M tokens; " if t.get("usd_per_1m_tok") is not None else "")
        + (f"cumulative serving passes training in month {be}." if be else "cumulative serving does not pass training within the horizon.")
    )
    totals = [(k, v) for k, v in t.items()]
    sec.tables.append(Table("totals", pd.DataFrame(totals, columns=["quantity", "value"])))
    sec.tables.append(Table("per month", frame))
    fig = go.Figure()
    for col in ("training_usd", "failed_attempts_usd", "serving_usd", "energy_usd"):
        if col in frame and frame[col].any():
            fig.add_bar(x=frame["month"], y=frame[col], name=col.removesuffix("_usd").replace("_", " "))
    fig.update_layout(barmode="stack", title="cost per month (USD)", xaxis_title="month", yaxis_title="USD", height=380)
    sec.figures.append(fig)
    return sec, dict(t)


def capacity_sections(answer: Any, curve: pd.DataFrame | None) -> list[Section]:
    import plotly.graph_objects as go

    q = answer.slo
    bounds = ", ".join(f"{n} ≤ {q[k]:g} s" for n, k in (("p99 TTFT", "ttft_p99_s"), ("p99 TPOT", "tpot_p99_s"), ("p99 E2E", "e2e_p99_s")) if q.get(k) is not None)
    sec = Section("Capacity for the SLA")
    config = ", ".join(f"{k} = {v}" for k, v in answer.config.items())
    if answer.meets:
        sec.paragraphs.append(
            f"For {answer.peak_qps:.4g} req/s peak with {bounds} (≥ {q['attainment']:.0%} of requests): "
            f"{answer.replicas} replica(s) × {answer.gpus_per_replica} GPU = {answer.total_gpus} × {answer.scenario.gpu.name} "
            f"with {config}, ${answer.usd_per_hour:,.2f}/hour. "
            + ("Verified by simulating the whole fleet at the peak: N meets the SLO and N − 1 does not." if answer.verified else "Not verified by fleet simulation.")
        )
    else:
        sec.paragraphs.append(f"No configuration meets {bounds} at ≥ {q['attainment']:.0%} attainment. Closest: {config}; {answer.miss}.")
    rows = [(k, v) for k, v in answer.summary().items() if not isinstance(v, (dict, list))]
    sec.tables.append(Table("answer", pd.DataFrame(rows, columns=["quantity", "value"])))
    ver = [(name, c["attainment"], c["n_replicas"], c["meets"], c["miss_ratio"]) for name, c in answer.verification.items() if c]
    if ver:
        sec.tables.append(Table("verification by fleet simulation (random routing)", pd.DataFrame(ver, columns=["fleet", "attainment", "replicas", "meets", "worst quantile ÷ bound"])))
    from simulator.capacity import candidates_summary

    sec.tables.append(
        Table(
            "configurations searched (cheapest first; simulated = replica count searched by simulation, estimate = ⌈peak ÷ max rate⌉, "
            "pruned = never bisected because its throughput ceiling bounds its cost above the answer)",
            candidates_summary(answer.candidates),
        )
    )
    out = [sec]
    if curve is not None and not curve.empty:
        head = Section("Headroom")
        head.paragraphs.append(f"SLO attainment and latency vs offered rate for {answer.replicas} replica(s) of the chosen configuration.")
        fig = go.Figure()
        fig.add_scatter(x=curve["rate_qps"], y=curve["slo_attainment"], mode="lines+markers", name="SLO attainment")
        fig.add_hline(y=q["attainment"], line_dash="dash", annotation_text="target")
        fig.add_vline(x=answer.peak_qps, line_dash="dot", annotation_text="peak")
        fig.update_layout(title="headroom: SLO attainment vs rate", xaxis_title="req/s (fleet)", yaxis_title="attainment", height=380)
        head.figures.append(fig)
        head.tables.append(Table("headroom curve", curve))
        out.append(head)
        lat = Section("Latency percentiles")
        fig2 = go.Figure()
        for col in ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "e2e_p99_s"):
            if col in curve:
                fig2.add_scatter(x=curve["rate_qps"], y=curve[col], mode="lines+markers", name=col)
        fig2.update_layout(title="latency vs rate", xaxis_title="req/s (fleet)", yaxis_title="seconds", yaxis_type="log", height=380)
        lat.figures.append(fig2)
        at_peak = curve.iloc[(curve["rate_qps"] - answer.peak_qps).abs().argmin()]
        pct = [(m, at_peak.get(f"{m}_p50_s"), at_peak.get(f"{m}_p90_s"), at_peak.get(f"{m}_p99_s")) for m in ("ttft", "tpot", "e2e")]
        lat.tables.append(Table(f"at the peak ({at_peak['rate_qps']:g} req/s, seconds)", pd.DataFrame(pct, columns=["metric", "p50", "p90", "p99"])))
        out.append(lat)
    return out


def default_peak_qps(scenario: Scenario) -> float:
    """The busiest hour of the horizon (`simulator.cost`'s traffic model): the largest month's
    requests/day ÷ 86,400 s × the daily shape's peak multiplier."""
    from simulator.cost import requests_per_day_by_month, scenario_daily_shape

    rpd = requests_per_day_by_month(scenario, scenario.horizon.months)
    return float(rpd.max() / 86_400.0 * scenario_daily_shape(scenario).max())


def build_report(
    scenario: Scenario,
    *,
    peak_qps: float | None = None,
    search_spec: str = "",
    executor: Any = None,
    num_requests: int | None = None,
    progress: bool = False,
) -> Report:
    """Run everything the report shows (capacity search, headroom, training and cost plans)."""
    from simulator.capacity import headroom_curve, headroom_rates, parse_search, search
    from simulator.cost import ReplicaCapacity

    peak = peak_qps if peak_qps is not None else default_peak_qps(scenario)
    if progress:
        import sys

        how = "given" if peak_qps is not None else "the horizon's busiest hour"
        print(f"capacity at {peak:.4g} req/s peak ({how})", file=sys.stderr, flush=True)
    answer = search(scenario, peak, parse_search(search_spec, scenario), executor=executor, num_requests=num_requests, progress=progress)
    curve = headroom_curve(answer.scenario, answer.replicas, headroom_rates(peak), executor=executor, num_requests=num_requests) if answer.meets else None
    chosen = answer.scenario
    head = Section("Scenario")
    head.paragraphs.append(
        f"{chosen.name} (digest {chosen.digest()}): {chosen.model.name} ({chosen.model.quant}, KV {chosen.model.kv_dtype}) "
        f"on {chosen.gpu.name} × TP {chosen.gpu.tensor_parallel}; max_num_seqs {chosen.engine.max_num_seqs}, "
        f"max_num_batched_tokens {chosen.engine.max_num_batched_tokens}; prices {chosen.prices.provider} {chosen.prices.pricing}."
    )
    sections = [head, predictor_section(chosen)]
    train_sec, train_data = training_section(chosen)
    sections.append(train_sec)
    sections += capacity_sections(answer, curve)
    cost_data: dict[str, Any] = {}
    if answer.meets:
        cost_sec, cost_data = cost_section(chosen, ReplicaCapacity(answer.max_qps_per_replica, answer.gpus_per_replica, source="capacity search (this report)"))
        sections.insert(3, cost_sec)
    else:
        sections.insert(3, Section("Lifetime cost", ["Not computed: no configuration meets the SLO, so there is no serving fleet to cost."]))
    data = {"capacity": answer.summary(), "headroom": None if curve is None else curve.to_dict(orient="records"), "training": train_data, "cost": cost_data}
    return Report(f"lifecost capacity report — {scenario.name}", sections, data)


# --- rendering --------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f5f5f5}.scroll{overflow-x:auto}td:first-child,th:first-child{text-align:left}caption{text-align:left;font-weight:600;padding:.3em 0}
"""


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in t.frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in t.frame.itertuples(index=False, name=None))
    return f"<div class='scroll'><table><caption>{html.escape(t.caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def to_html(report: Report) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>"]
    parts.append(f"<h1>{html.escape(report.title)}</h1>")
    first_figure = True
    for sec in report.sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in sec.paragraphs]
        for fig in sec.figures:
            parts.append(fig.to_html(full_html=False, include_plotlyjs=first_figure))
            first_figure = False
        parts += [_html_table(t) for t in sec.tables]
    parts.append("</body></html>")
    return "\n".join(parts)


def _md_cell(v: Any) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report) -> str:
    lines = [f"# {report.title}", ""]
    for sec in report.sections:
        lines += [f"## {sec.title}", ""]
        for p in sec.paragraphs:
            lines += [p, ""]
        for t in sec.tables:
            cols = list(t.frame.columns)
            lines += [f"**{t.caption}**", "", "| " + " | ".join(_md_cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
            lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in t.frame.itertuples(index=False, name=None)]
            lines.append("")
    return "\n".join(lines)


def write_report(report: Report, path: str | Path) -> Path:
    """HTML for .html/.htm, Markdown for .md/.markdown; written via temp file + rename."""
    import os

    path = Path(path)
    text = to_markdown(report) if path.suffix.lower() in {".md", ".markdown"} else to_html(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
