"""Capacity: how many GPUs meet the SLO at a peak rate, and how much headroom they leave.

The answer is `simulator.capacity.search` for the scenario's own configuration — the same call as
`lifecost capacity SCENARIO.yaml --peak-qps X --json` — verified by simulating the whole fleet
at N and N − 1 replicas. Below it: the headroom curve (SLO attainment and p99 latencies from a
quarter to 1.5× the peak, `headroom_curve`) and the GPUs needed at other peak rates
(`replicas_needed` at each rate). The report buttons build `lifecost report`'s HTML/Markdown.
When no configuration meets the SLO (an impossible SLO), the library's "closest configuration
and its miss" is shown next to the SLO inputs.
"""

from __future__ import annotations

import streamlit as st

from planner_ui import ui_calls
from planner_ui import ui_charts as ch
from planner_ui.ui_builder import Built

RATE_FRACTIONS = (0.25, 0.5, 1.0, 1.5, 2.0)  # peak rates for "GPUs needed vs peak rate", × the chosen peak


def default_peak_qps(s) -> float:
    from planner_ui.report import default_peak_qps as peak

    return peak(s)


def render(built: Built) -> None:
    s = ui_calls.need_scenario(built)
    if s is None:
        return
    if s.slo.ttft_p99_s is None and s.slo.tpot_p99_s is None and s.slo.e2e_p99_s is None:
        ui_calls.report_message("slo: no latency bound is set — set a p99 TTFT, TPOT or E2E bound", "slo", built)
        return
    from simulator.capacity import SEARCH_DIMENSIONS

    top = st.columns([1, 2])
    peak = top[0].number_input("Peak rate (req/s)", min_value=0.01, value=round(default_peak_qps(s), 2), step=1.0,
                               key=f"cap.peak_qps.{s.digest()}", help="Default: the horizon's first-month peak "
                               "(requests/day ÷ 86,400 × peak-to-mean)")
    dims = top[1].multiselect("Also search over", list(SEARCH_DIMENSIONS), key="cap.search",
                              help="Empty: only the sidebar's configuration. Each dimension tries its standard values "
                                   "(`lifecost capacity --search`); the cheapest configuration meeting the SLO wins.")
    spec = ",".join(dims)
    st.caption(f"`lifecost capacity SCENARIO.yaml --peak-qps {peak:g}{f' --search {spec}' if spec else ''} --json`")

    bar = st.progress(0.0, text="Capacity search…")
    answer = ui_calls.call(ui_calls.capacity_answer, s.digest(), s, float(peak), spec, built=built)
    if answer is None:
        bar.empty()
        return
    if not answer.meets:
        bar.empty()
        memory = (answer.miss or "").startswith("no configuration fits in memory")
        ui_calls.report_message(f"{'model' if memory else 'slo'}: no configuration meets the SLO at {peak:g} req/s — closest "
                                f"{', '.join(f'{k}={v}' for k, v in answer.config.items())}: {answer.miss}",
                                "model" if memory else "slo", built)
        return
    chosen = answer.scenario
    if spec:
        st.success("Cheapest configuration meeting the SLO: " + ", ".join(f"**{k}** = {v}" for k, v in answer.config.items()))
    c = st.columns(6)
    ch.card(c[0], "Replicas", ch.fmt_int(answer.replicas), f"{answer.gpus_per_replica} GPU(s) each")
    ch.card(c[1], "GPUs", ch.fmt_int(answer.total_gpus), chosen.gpu.name)
    ch.card(c[2], "Capacity / replica", ch.fmt_qps(answer.max_qps_per_replica), "within the SLO")
    ch.card(c[3], "$ / hour", ch.fmt_usd(answer.usd_per_hour), f"{ch.fmt_usd(answer.usd_per_gpu_hour)} per GPU-hour")
    ch.card(c[4], "$ / month", ch.fmt_usd(answer.usd_per_hour * 730.0), "730 h")
    ch.card(c[5], "Fleet-verified", "yes" if answer.verified else "no", "N meets, N−1 misses" if answer.verified else "not confirmed",
                ok=answer.verified)

    bar.progress(0.4, text="Headroom curve…")
    curve = ui_calls.call(ui_calls.headroom, chosen.digest(), chosen, answer.replicas, float(peak), built=built)
    if curve is not None:
        st.markdown(f"#### Headroom with {answer.replicas} replica(s)")
        st.plotly_chart(ch.headroom_chart(curve, answer.slo, peak), width="stretch", key="cap_headroom")

    rows = []
    for i, f in enumerate(RATE_FRACTIONS):
        bar.progress(0.6 + 0.4 * i / len(RATE_FRACTIONS), text=f"Replicas needed at {f:g}× the peak…")
        rate = peak * f
        n = answer.replicas if f == 1.0 else \
            ui_calls.call(ui_calls.replicas_at, chosen.digest(), chosen, float(rate), answer.max_qps_per_replica, built=built)
        if n is not None:
            rows.append({"peak_qps": rate, "replicas": n, "gpus": n * answer.gpus_per_replica})
    bar.empty()
    left, right = st.columns([3, 2])
    if rows:
        left.plotly_chart(ch.gpus_vs_rate(rows, peak), width="stretch", key="cap_gpus")
    if curve is not None:
        shown = curve[["rate_qps", "slo_attainment", "ttft_p99_s", "tpot_p99_s", "e2e_p99_s"]].copy()
        shown[["ttft_p99_s", "tpot_p99_s"]] *= 1e3
        right.dataframe(shown, hide_index=True, width="stretch", column_config={
            "rate_qps": st.column_config.NumberColumn("rate (req/s)", format="%.1f"),
            "slo_attainment": st.column_config.NumberColumn("attainment", format="percent"),
            "ttft_p99_s": st.column_config.NumberColumn("p99 TTFT (ms)", format="%.0f"),
            "tpot_p99_s": st.column_config.NumberColumn("p99 TPOT (ms)", format="%.1f"),
            "e2e_p99_s": st.column_config.NumberColumn("p99 E2E (s)", format="%.2f"),
        })

    if spec:
        from simulator.capacity import candidates_summary

        with st.expander(f"Configurations searched ({len(answer.candidates)})", expanded=True):
            st.dataframe(candidates_summary(answer.candidates), hide_index=True, width="stretch", column_config={
                "ceiling_qps": st.column_config.NumberColumn("ceiling (req/s)", format="%.1f"),
                "max_qps_per_replica": st.column_config.NumberColumn("max req/s per replica", format="%.2f"),
                "usd_per_hour": st.column_config.NumberColumn("$ / hour", format="$%.2f")})

    st.subheader("Capacity report")
    report_key = f"cap.report.{s.digest()}.{peak:g}.{spec}"
    if st.button("Build the report (HTML + Markdown)", icon=":material/description:", key="cap_build_report"):
        st.session_state[report_key] = True
    if st.session_state.get(report_key):
        files = ui_calls.call(ui_calls.report_files, s.digest(), s, float(peak), spec, built=built, status="Building the capacity report…")
        if files is not None:
            html, md = files
            d1, d2 = st.columns(2)
            d1.download_button("Download report.html", html, file_name=f"{s.name}-capacity.html", mime="text/html",
                               key="dl_report_html", width="stretch")
            d2.download_button("Download report.md", md, file_name=f"{s.name}-capacity.md", mime="text/markdown",
                               key="dl_report_md", width="stretch")
