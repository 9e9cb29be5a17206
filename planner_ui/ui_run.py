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


def cluster_cards(cluster: dict, s) -> None:
    """Replicas, provisioned GPU-hours and utilisation of a cluster run (colocated or disaggregated)."""
    pools = [cluster[k] for k in ("prefill", "decode") if k in cluster] or [cluster]
    util = [u for p in pools for u in p.get("replica_utilisation") or []]
    per = [n for p in pools for n in p.get("requests_per_replica") or []]
    c = st.columns(4)
    split = " + ".join(f"{len(p.get('replica_utilisation') or [])} {k}" for k, p in cluster.items() if k in ("prefill", "decode"))
    ch.card(c[0], "Replicas used", ch.fmt_int(len(util)), split or f"router: {s.cluster.router}")
    ch.card(c[1], "GPU-hours provisioned", f"{cluster['gpu_seconds_provisioned'] / 3600:,.2f}", "∫ replicas × TP dt")
    ch.card(c[2], "Utilisation (mean)", ch.fmt_pct(sum(util) / len(util) if util else None),
            f"min {ch.fmt_pct(min(util)) if util else '—'} · max {ch.fmt_pct(max(util)) if util else '—'}")
    if "kv_moved_gb" in cluster:
        ch.card(c[3], "KV moved", f"{cluster['kv_moved_gb']:,.1f} GB",
                f"p99 transfer {ch.fmt_ms(cluster['kv_transfer_s']['p99'])} over {cluster['link']}")
    else:
        ch.card(c[3], "Requests / replica", f"{min(per):,}–{max(per):,}" if per else "—", "routing balance")


def offload_block(where, offload: dict) -> None:
    """Tiered KV offload: where prefix hits came from, what moved, and the prefill time saved."""
    with where:
        tiers = [n for n in offload["tiers"]]
        c = st.columns(3)
        ch.card(c[0], "Prefix hits in HBM", ch.fmt_pct(offload["hbm_hit_frac"]), "of prompt tokens")
        ch.card(c[1], "Hits from tiers", ch.fmt_pct(sum(offload[f"{n}_hit_frac"] for n in tiers)),
                " · ".join(f"{n} {ch.fmt_pct(offload[f'{n}_hit_frac'])}" for n in tiers))
        ch.card(c[2], "Prefill saved", ch.fmt_s(offload["prefill_saved_s"]),
                f"{offload['loads']:,} loads · {offload['recompute_decisions']:,} recomputes")
        st.plotly_chart(ch.tier_traffic(offload), width="stretch", key="run_offload")


def spec_block(where, spec: dict, requests, s) -> None:
    """Speculative decoding: realised tokens per target step against the analytic expectation."""
    from simulator.speculative import expected_tok_per_step

    with where:
        done = requests["spec_target_steps"] > 0
        per_req = requests.loc[done, "output_tok"] / requests.loc[done, "spec_target_steps"]
        realised = float(requests.loc[done, "output_tok"].sum() / requests.loc[done, "spec_target_steps"].sum())
        k, alpha = spec["num_draft_tok"], s.speculative.acceptance_rate
        expected = expected_tok_per_step(alpha, k)
        c = st.columns(3)
        ch.card(c[0], "Tokens / target step", f"{realised:.2f}", f"analytic {expected:.2f} (α {alpha:.2f}, k {k})")
        ch.card(c[1], "Target steps", ch.fmt_int(spec["target_steps"]), f"method {spec['method']}")
        ch.card(c[2], "Accepted drafts / step", f"{realised - 1:.2f} of {k}", "the +1 is the verifier's own token")
        st.plotly_chart(ch.spec_tokens_hist(per_req, expected, k), width="stretch", key="run_spec")


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

    cluster = summary.get("cluster")
    if cluster:
        cluster_cards(cluster, s)
    if len(result.steps):
        st.plotly_chart(ch.kv_and_batch(result.steps, meta["kv_capacity_blocks"]), width="stretch", key="run_kv")
    left, right = st.columns(2)
    left.plotly_chart(ch.cdf(result.requests["ttft_s"], name="TTFT", bound_s=s.slo.ttft_p99_s), width="stretch", key="run_ttft")
    right.plotly_chart(ch.cdf(result.requests["tpot_s"], name="TPOT", bound_s=s.slo.tpot_p99_s), width="stretch", key="run_tpot")
    offload = summary.get("offload")
    spec = summary.get("speculative")
    if offload or spec:
        st.markdown("#### Serving levers")
        left, right = st.columns(2)
        if offload:
            offload_block(left, offload)
        if spec:
            spec_block(right if offload else left, spec, result.requests, s)

    reasoning = summary.get("reasoning")
    if reasoning:
        st.markdown("#### Reasoning on vs off")
        rows = [{"requests": k, "count": v["num_requests"], "thinking tok (mean)": v["thinking_tok_mean"],
                 "TTFT p99 (ms)": v["ttft_s"]["p99"] * 1e3, "TPOT p99 (ms)": v["tpot_s"]["p99"] * 1e3,
                 "E2E p99 (s)": v["e2e_s"]["p99"], "SLO attainment": v["slo_attainment"]} for k, v in reasoning.items()]
        left, right = st.columns([2, 3])
        left.dataframe(rows, hide_index=True, width="stretch", column_config={
            "thinking tok (mean)": st.column_config.NumberColumn(format="%.0f"),
            "TTFT p99 (ms)": st.column_config.NumberColumn(format="%.0f"),
            "TPOT p99 (ms)": st.column_config.NumberColumn(format="%.1f"),
            "E2E p99 (s)": st.column_config.NumberColumn(format="%.2f"),
            "SLO attainment": st.column_config.NumberColumn(format="percent")})
        right.plotly_chart(ch.cdf_by(result.requests, "e2e_s", "reasoning_on", {True: "reasoning on", False: "reasoning off"},
                                     name="E2E latency", bound_s=s.slo.e2e_p99_s), width="stretch", key="run_reasoning")
    with st.expander("Per-request frame (first 1,000 rows)"):
        st.dataframe(result.requests.head(1000), width="stretch")
        st.download_button("Download requests.csv", result.requests.to_csv(index=False), file_name=f"{s.name}-requests.csv",
                           mime="text/csv", key="dl_requests_csv")
