"""Overview: the headline answer for the scenario in the sidebar.

Three rows of metric cards — serving (one simulated replica: `lifecost simulate --json`),
plan (SLO capacity per replica, GPUs at peak, lifetime cost, $/1M tokens, break-even:
`lifecost cost --json`) and fine-tune (`lifecost train --json`) — then the two pictures that
explain them: the month-by-month cost and the latency distributions. Each block is computed by
its own cached call, so a slow one (the capacity bisection) never hides a fast one.
"""

from __future__ import annotations

import streamlit as st

from planner_ui import ui_calls
from planner_ui import ui_charts as ch
from planner_ui.ui_builder import Built
from simulator.scenario import Scenario, scenario_to_yaml


def describe(s: Scenario) -> str:
    a = s.workload.arrival
    rate = f"{a.rate_qps:g} req/s {a.kind}" if a.rate_qps is not None else "trace timestamps"
    slo = ", ".join(f"p99 {n} ≤ {ch.fmt_ms(v)}" for n, v in (("TTFT", s.slo.ttft_p99_s), ("TPOT", s.slo.tpot_p99_s)) if v)
    return (f"**{s.name}** · {s.model.name} ({s.model.quant}, KV {s.model.kv_dtype}) on {s.gpu.name} × TP {s.gpu.tensor_parallel} · "
            f"{rate} · {slo or 'no latency SLO'} · {s.horizon.months} months")


def serving_cards(summary: dict, s: Scenario) -> None:
    c = st.columns(6)
    ch.card(c[0], "Throughput", ch.fmt_tok_s(summary["throughput_tok_s"]), f"{ch.fmt_qps(summary['throughput_req_s'])}")
    ch.card(c[1], "TTFT p99", ch.fmt_ms(summary["ttft_s"]["p99"]),
                f"SLO {ch.fmt_ms(s.slo.ttft_p99_s)}" if s.slo.ttft_p99_s else "no SLO")
    ch.card(c[2], "TPOT p99", ch.fmt_ms(summary["tpot_s"]["p99"]),
                f"SLO {ch.fmt_ms(s.slo.tpot_p99_s)}" if s.slo.tpot_p99_s else "no SLO")
    ch.card(c[3], "E2E p99", ch.fmt_s(summary["e2e_s"]["p99"]), f"p50 {ch.fmt_s(summary['e2e_s']['p50'])}")
    ch.card(c[4], "SLO attainment", ch.fmt_pct(summary["slo_attainment"]), f"target {ch.fmt_pct(s.slo.attainment)}",
                ok=summary["slo_attainment"] >= s.slo.attainment)
    ch.card(c[5], "KV cache peak", ch.fmt_pct(summary["kv_peak_frac"]), f"{summary['preemptions']:,} preemptions")


def plan_cards(totals: dict) -> None:
    c = st.columns(6)
    ch.card(c[0], "Capacity / replica", ch.fmt_qps(totals["capacity_qps_per_replica"]), "within the SLO")
    ch.card(c[1], "GPUs at peak", ch.fmt_int(totals["gpus_peak"]), f"{totals['gpus_per_replica']} per replica · {totals['gpu']}")
    ch.card(c[2], "Lifetime cost", ch.fmt_usd(totals["total_usd"]), f"{totals['months']} months")
    ch.card(c[3], "$ / 1M tokens", ch.fmt_usd(totals["usd_per_1m_tok"]), f"serving only {ch.fmt_usd(totals['serving_usd_per_1m_tok'])}")
    ch.card(c[4], "Training (all runs)", ch.fmt_usd(totals["training_usd"]), f"idle {ch.fmt_usd(totals['idle_usd'])}")
    be = totals["break_even_month"]
    ch.card(c[5], "Break-even month", "—" if be is None else f"month {be}", "serving passes training")


def training_cards(plan) -> None:
    t = plan.summary()
    c = st.columns(6)
    ch.card(c[0], "Fine-tune", t["method"], "fits" if t["fits"] else "does not fit", ok=t["fits"])
    ch.card(c[1], "Trainable params", f"{t['trainable_params'] / 1e6:,.1f} M", f"{t['num_gpus']} GPU(s)")
    ch.card(c[2], "Memory / GPU", ch.fmt_gib(t["needed_gib"]), f"of {ch.fmt_gib(t['available_gib'])}")
    ch.card(c[3], "Wall-clock / run", f"{t['wall_h']['mid']:,.1f} h", f"MFU {t['mfu']['mid']:.0%}")
    ch.card(c[4], "GPU-hours / run", f"{t['gpu_hours']['mid']:,.1f}", t["price"])
    ch.card(c[5], "Cost / run", ch.fmt_usd(t["usd_expected"]["mid"]), f"× {t['expected_attempts']:.2f} attempts")


def render(built: Built) -> None:
    s = ui_calls.need_scenario(built)
    if s is None:
        return
    st.markdown(describe(s))

    st.markdown("#### Serving — one replica")
    result = ui_calls.call(ui_calls.simulation, s.digest(), s, built=built,
                           status=f"Simulating {s.workload.num_requests:,} requests…")
    if result is not None:
        serving_cards(result.summary(), s)

    st.markdown("#### Lifetime plan")
    cost = ui_calls.call(ui_calls.lifetime, s.digest(), s, built=built,
                         status="Finding the SLO capacity per replica and rolling up the lifetime cost…")
    if cost is not None:
        plan_cards(cost.totals)

    left, right = st.columns([3, 2])
    if cost is not None:
        left.plotly_chart(ch.cost_by_month([(s.name, cost)]), width="stretch", key="ov_cost")
    if result is not None:
        right.plotly_chart(ch.cdf(result.requests["ttft_s"], name="TTFT", bound_s=s.slo.ttft_p99_s), width="stretch", key="ov_ttft")

    plan = ui_calls.call(ui_calls.training_plan, s.digest(), s, built=built)
    if plan is not None:
        st.markdown("#### Fine-tune (per run)")
        training_cards(plan)
        with st.expander("The arithmetic"):
            st.dataframe([{"step": x.label, "formula": x.formula, "value": x.value, "unit": x.unit} for x in plan.steps],
                         hide_index=True, width="stretch")
    mem = ui_calls.call(ui_calls.memory_plan, s.digest(), s, built=built)
    if mem is not None:
        st.plotly_chart(ch.memory_bar(mem), width="stretch", key="ov_mem")
    st.download_button("Download scenario YAML", scenario_to_yaml(s), file_name=f"{s.name}.yaml", mime="application/x-yaml",
                       key="dl_scenario_overview")
