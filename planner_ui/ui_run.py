"""Inside one run: the pictures that explain the headline numbers of one simulated replica —
KV-cache occupancy and batch size over time (why latency rises: the cache fills, admission
stalls, sequences get preempted), and the TTFT / TPOT distributions against the SLO bounds.
The run is the Overview's (same cached `simulate` call, keyed by the scenario digest).
"""

from __future__ import annotations

import streamlit as st

from planner_ui import ui_calls
from planner_ui import ui_charts as ch
from planner_ui.ui_builder import Built


def render(built: Built) -> None:
    s = ui_calls.need_scenario(built)
    if s is None:
        return
    result = ui_calls.call(ui_calls.simulation, s.digest(), s, built=built, status=f"Simulating {s.workload.num_requests:,} requests…")
    if result is None:
        return
    summary, meta = result.summary(), result.meta
    c = st.columns(6)
    ch.card(c[0], "Requests", ch.fmt_int(summary["finished"]), f"over {ch.fmt_s(summary['makespan_s'])}")
    ch.card(c[1], "Engine steps", ch.fmt_int(summary["num_steps"]), f"{len(result.steps):,} batched runs")
    ch.card(c[2], "KV cache mean", ch.fmt_pct(summary["kv_mean_frac"]), f"peak {ch.fmt_pct(summary['kv_peak_frac'])}")
    ch.card(c[3], "Preemptions", ch.fmt_int(summary["preemptions"]), f"prefix hits {ch.fmt_pct(summary['prefix_hit_frac'])}")
    ch.card(c[4], "GPU busy", ch.fmt_pct(summary["busy_frac"]), f"predictor: {summary['predictor']}")
    ch.card(c[5], "Simulated in", ch.fmt_s(summary["sim_wall_s"]), f"{meta.get('kv_capacity_blocks', 0):,} KV blocks")

    if len(result.steps):
        st.plotly_chart(ch.kv_and_batch(result.steps, meta["kv_capacity_blocks"] * meta.get("num_replicas", 1)),
                        width="stretch", key="run_kv")
    left, right = st.columns(2)
    left.plotly_chart(ch.cdf(result.requests["ttft_s"], name="TTFT", bound_s=s.slo.ttft_p99_s), width="stretch", key="run_ttft")
    right.plotly_chart(ch.cdf(result.requests["tpot_s"], name="TPOT", bound_s=s.slo.tpot_p99_s), width="stretch", key="run_tpot")
    with st.expander("Per-request frame (first 1,000 rows)"):
        st.dataframe(result.requests.head(1000), width="stretch")
        st.download_button("Download requests.csv", result.requests.to_csv(index=False), file_name=f"{s.name}-requests.csv",
                           mime="text/csv", key="dl_requests_csv")
