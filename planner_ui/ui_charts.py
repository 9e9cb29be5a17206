"""Plotly figures and small display tables for the planner pages.

Presentation only: every value plotted here comes from a library result passed in (a Result's
frames, a cost plan, a capacity curve, a Profile). One template and palette for all charts, so the
dashboard reads as one product; units are in every axis title.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

TEMPLATE = "plotly_white"
PALETTE = ["#2563eb", "#f97316", "#10b981", "#8b5cf6", "#ef4444", "#0ea5e9", "#eab308"]
HEIGHT = 360


def style(fig: go.Figure, *, title: str | None = None, x: str | None = None, y: str | None = None,
          height: int = HEIGHT) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE, height=height, colorway=PALETTE, title=title,
        margin=dict(l=10, r=10, t=60 if title else 30, b=10),
        legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0),
        font=dict(family="Inter, Segoe UI, Helvetica, Arial, sans-serif", size=13),
    )
    if x:
        fig.update_xaxes(title_text=x)
    if y:
        fig.update_yaxes(title_text=y)
    return fig


# --------------------------------------------------------------------------- calibration


def ceiling_rows(gpu, profile) -> list[tuple[str, float | None, float, str, str]]:
    """(label, measured or None, datasheet, unit, number format) for each hardware ceiling."""
    ceil = profile.ceilings if profile is not None else None
    return [
        ("bf16 GEMM", getattr(ceil, "gemm_bf16_tflops", None), gpu.bf16_tflops, "TFLOP/s", ",.0f"),
        ("HBM copy", getattr(ceil, "hbm_copy_tb_s", None), gpu.hbm_tb_s, "TB/s", ",.2f"),
        ("Host → device", getattr(ceil, "h2d_gb_s", None), gpu.host_link_gb_s, "GB/s", ",.0f"),
    ]


def fit_rows(profile) -> list[dict[str, Any]]:
    rows = []
    if profile.step_time is not None:
        f = profile.step_time.fit
        rows.append({"fit": "step time (serving)", "points": f.n_points, "R²": round(f.r2, 4), "MAPE": f"{f.mape:.1%}",
                     "fitted on": profile.step_time.fit_model or "—"})
    if profile.training is not None and profile.training.fit is not None:
        f = profile.training.fit
        rows.append({"fit": f"training (MFU {profile.training.mfu:.1%})", "points": f.n_points, "R²": round(f.r2, 4),
                     "MAPE": f"{f.mape:.1%}", "fitted on": profile.training.fit_model or "—"})
    return rows


def step_coeff_bar(profile) -> go.Figure:
    """The fitted inverse efficiencies c1..c4 (1.0 = the measured ceiling is reached)."""
    st_ = profile.step_time
    names = ["c1 GEMM FLOPs", "c2 weight bytes", "c3 prefill attention", "c4 KV reads"]
    fig = go.Figure(go.Bar(x=names, y=[st_.c1, st_.c2, st_.c3, st_.c4], marker_color=PALETTE[0],
                           text=[f"{v:.2f}" for v in (st_.c1, st_.c2, st_.c3, st_.c4)], textposition="outside"))
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="at measured ceiling")
    return style(fig, title=f"Step-time coefficients (c0 = {st_.c0_s * 1e3:.2f} ms per step)", y="inverse efficiency (×)")


def fidelity_scatter(frame, kind: str) -> go.Figure:
    """Predicted vs measured, one point per (run, metric), log-log with the y = x line: a point
    on the line is a perfect prediction; ±15 % bands show the issue's held-out target."""
    import numpy as np

    f = frame[(frame["kind"] == kind) & (frame["measured"] > 0) & (frame["predicted"] > 0)]
    fig = go.Figure()
    for i, (metric, g) in enumerate(f.groupby("metric", sort=True)):
        fig.add_trace(go.Scatter(
            x=g["measured"], y=g["predicted"], mode="markers", name=metric,
            marker=dict(size=10, color=PALETTE[i % len(PALETTE)], symbol=[{"fit": "circle", "cold": "x-thin-open"}.get(s, "diamond-open") for s in g["set"]],
                        line=dict(width=2)),
            customdata=np.stack([g["model"], g["run"], g["set"], g["error"].astype(float)], axis=1),
            hovertemplate="%{customdata[0]} %{customdata[1]} (%{customdata[2]})<br>measured %{x:.4g}, predicted %{y:.4g}"
                          "<br>error %{customdata[3]:+.1%}<extra>" + metric + "</extra>"))
    if len(f):
        lo, hi = float(min(f["measured"].min(), f["predicted"].min())) / 1.3, float(max(f["measured"].max(), f["predicted"].max())) * 1.3
        for k, dash in ((1.0, "solid"), (1.15, "dot"), (1 / 1.15, "dot")):
            fig.add_trace(go.Scatter(x=[lo, hi], y=[lo * k, hi * k], mode="lines", showlegend=False, hoverinfo="skip",
                                     line=dict(color="#94a3b8", dash=dash, width=1)))
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    cold = ", × cold engine" if (f["set"] == "cold").any() else ""
    return style(fig, title=f"{kind.capitalize()}: simulated vs measured (● fitted runs, ◇ held-out{cold}; dotted ±15 %)",
                 x="measured (metric's own unit)", y="predicted by lifecost", height=420)


def decode_curve(frame, ctx_tok: int, predictor: str) -> go.Figure:
    """Decode step time and throughput vs batch size: flat while weights dominate (memory-bound),
    then rising with the KV reads and FLOPs — where batching stops paying."""
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=frame["batch"], y=frame["step_s"] * 1e3, mode="lines+markers", name="step time (ms)",
                             line=dict(color=PALETTE[0], width=3)), secondary_y=False)
    fig.add_trace(go.Scatter(x=frame["batch"], y=frame["tok_s"], mode="lines+markers", name="decode throughput (tok/s)",
                             line=dict(color=PALETTE[1], width=3, dash="dash")), secondary_y=True)
    fig.update_xaxes(type="log", title_text="sequences in the batch (log scale)")
    fig.update_yaxes(title_text="ms per decode step", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="tokens / s", rangemode="tozero", secondary_y=True, showgrid=False)
    return style(fig, title=f"Predicted decode step ({predictor}), {ctx_tok:,} tokens of context per sequence", height=380)


# --------------------------------------------------------------------------- number formats
# One formatter per unit, used by every page and by the tests that compare with the CLI's JSON.


def fmt_usd(x: float | None) -> str:
    if x is None or x != x:
        return "—"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"${x / div:,.2f}{suffix}"
    if 0 < abs(x) < 1:
        return f"${x:.3g}"  # $/1M tokens is often cents: keep three significant digits
    return f"${x:,.2f}"


def fmt_ms(x_s: float | None) -> str:
    if x_s is None or x_s != x_s:
        return "—"
    ms = x_s * 1e3
    return f"{ms:,.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def fmt_s(x_s: float | None) -> str:
    return "—" if x_s is None or x_s != x_s else f"{x_s:,.2f} s"


def fmt_pct(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x:.1%}"


def fmt_qps(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x:,.2f} req/s"


def fmt_tok_s(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x:,.0f} tok/s"


def fmt_gib(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x:,.1f} GiB"


def fmt_int(x: float | None) -> str:
    return "—" if x is None or x != x else f"{int(round(x)):,}"


# --------------------------------------------------------------------------- cost

COST_PARTS = (  # (label, how to get it from a LifetimeCost.frame, colour)
    ("training", lambda f: f["training_usd"] + f["failed_attempts_usd"], PALETTE[3]),
    ("serving (busy)", lambda f: f["serving_usd"] - f["idle_usd"], PALETTE[0]),
    ("idle / over-provisioning", lambda f: f["idle_usd"], "#93c5fd"),
    ("energy", lambda f: f["energy_usd"], PALETTE[6]),
)


def cost_by_month(costs: list[tuple[str, Any]]) -> go.Figure:
    """Stacked monthly cost, one panel per scenario (shared y axis)."""
    from plotly.subplots import make_subplots

    n = len(costs)
    fig = make_subplots(rows=1, cols=n, shared_yaxes=True, subplot_titles=[name for name, _ in costs] if n > 1 else None,
                        horizontal_spacing=0.03)
    for i, (_, cost) in enumerate(costs, start=1):
        f = cost.frame
        for label, part, colour in COST_PARTS:
            fig.add_trace(go.Bar(x=f.index, y=part(f), name=label, marker_color=colour, legendgroup=label,
                                 showlegend=i == 1, hovertemplate="month %{x}: $%{y:,.0f}<extra>" + label + "</extra>"),
                          row=1, col=i)
        fig.update_xaxes(title_text="month", row=1, col=i)
    fig.update_layout(barmode="stack")
    return style(fig, title="Lifetime cost by month", y="USD per month")


def cumulative_cost(costs: list[tuple[str, Any]]) -> go.Figure:
    """Cumulative total cost per scenario; dotted: cumulative training; ◆: the break-even month
    (cumulative serving reaches cumulative training), as the cost rollup reports it."""
    fig = go.Figure()
    for i, (name, cost) in enumerate(costs):
        f, colour = cost.frame, PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=f.index, y=f["total_usd"].cumsum(), name=name, mode="lines+markers",
                                 line=dict(color=colour, width=3)))
        fig.add_trace(go.Scatter(x=f.index, y=f["cum_serving_usd"], name=f"{name}: serving", mode="lines",
                                 line=dict(color=colour, dash="dash"), showlegend=False,
                                 hovertemplate="cumulative serving $%{y:,.0f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=f.index, y=f["cum_training_usd"], name=f"{name}: training", mode="lines",
                                 line=dict(color=colour, dash="dot"), showlegend=False,
                                 hovertemplate="cumulative training $%{y:,.0f}<extra></extra>"))
        month = cost.totals.get("break_even_month")
        if month is not None:
            fig.add_trace(go.Scatter(x=[month], y=[f.loc[month, "cum_serving_usd"]], mode="markers+text",
                                     marker=dict(symbol="diamond", size=13, color=colour, line=dict(color="white", width=1)),
                                     text=[f"break-even: month {month}"], textposition="top right", showlegend=False,
                                     hovertemplate="break-even: month %{x}<extra>" + name + "</extra>"))
    return style(fig, title="Cumulative cost (— total, - - serving, ··· training)", x="month", y="USD (cumulative)")


def bars(names: list[str], values: list[float], *, title: str, y: str, text: list[str]) -> go.Figure:
    fig = go.Figure(go.Bar(x=names, y=values, text=text, textposition="outside", cliponaxis=False,
                           marker_color=[PALETTE[i % len(PALETTE)] for i in range(len(names))]))
    fig.update_yaxes(range=[0, max([v for v in values if v == v] + [0]) * 1.18 or 1])
    return style(fig, title=title, y=y, height=300)


# --------------------------------------------------------------------------- one run


def _thin(frame, max_points: int = 4000):
    """Every k-th row so a browser draws at most `max_points` (the shape is kept, not the detail)."""
    k = max(1, len(frame) // max_points)
    return frame.iloc[::k]


def kv_and_batch(steps, kv_capacity_blocks: int, max_replicas: int = 8) -> go.Figure:
    """KV-cache occupancy (share of a replica's blocks) and running batch size over time, one
    line per replica (the first `max_replicas` of a cluster run)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("KV-cache occupancy", "Batch size (sequences per step)"))
    groups = list(steps.groupby("replica", sort=True)) if "replica" in steps else [(0, steps)]
    single = len(groups) == 1
    for i, (replica, g) in enumerate(groups[:max_replicas]):
        g = _thin(g, 4000 // min(len(groups), max_replicas))
        colour = PALETTE[0] if single else PALETTE[i % len(PALETTE)]
        name = "KV used" if single else f"replica {int(replica)}"
        fig.add_trace(go.Scatter(x=g["start_s"], y=g["kv_blocks_used"] / kv_capacity_blocks, mode="lines", name=name,
                                 legendgroup=name, line=dict(color=colour, width=1.5), fill="tozeroy" if single else None),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=g["start_s"], y=g["batch_size"], mode="lines", name="batch" if single else name,
                                 legendgroup=name, showlegend=single,
                                 line=dict(color=PALETTE[1] if single else colour, width=1.5)), row=2, col=1)
    fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=1, col=1, title_text="of a replica's KV blocks")
    fig.update_yaxes(rangemode="tozero", row=2, col=1, title_text="sequences")
    fig.update_xaxes(title_text="simulated time (s)", row=2, col=1)
    return style(fig, height=480)


def tier_traffic(offload: dict) -> go.Figure:
    """Per offload tier: bytes written down (evictions) and read back up (prefix hits loaded)."""
    names = list(offload["tiers"])
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=[offload["tiers"][n]["bytes_down"] / 1e9 for n in names], name="written down (evicted)",
                         marker_color=PALETTE[3]))
    fig.add_trace(go.Bar(x=names, y=[offload["tiers"][n]["bytes_up"] / 1e9 for n in names], name="read back (hits loaded)",
                         marker_color=PALETTE[2]))
    fig.update_layout(barmode="group")
    return style(fig, title="KV offload tier traffic", y="GB", height=320)


def spec_tokens_hist(tok_per_step, expected: float, k: int) -> go.Figure:
    """Tokens emitted per target (verification) step, per request, against the analytic mean
    (1 − α^(k+1)) / (1 − α) of Leviathan et al. (2023)."""
    fig = go.Figure(go.Histogram(x=tok_per_step, nbinsx=40, marker_color=PALETTE[0], name="requests"))
    fig.add_vline(x=expected, line_dash="dash", line_color=PALETTE[4], annotation_text=f"analytic {expected:.2f}")
    fig.update_xaxes(range=[1, k + 1])
    return style(fig, title="Speculative decoding: tokens per target step (per request)", x="tokens per target step",
                 y="requests", height=320)


def cdf_by(frame, column: str, by: str, labels: dict, *, name: str, bound_s: float | None) -> go.Figure:
    """Empirical CDFs of one latency column for each group of `by` (e.g. reasoning on / off)."""
    import numpy as np

    fig = go.Figure()
    for i, (value, label) in enumerate(labels.items()):
        v = np.sort(frame.loc[frame[by] == value, column].to_numpy(dtype=float))
        v = v[np.isfinite(v) & (v > 0)]
        if not len(v):
            continue
        k = max(1, len(v) // 2000)
        fig.add_trace(go.Scatter(x=v[::k], y=(np.arange(1, len(v) + 1) / len(v))[::k], mode="lines", name=label,
                                 line=dict(color=PALETTE[i % len(PALETTE)], width=2.5)))
    if bound_s is not None:
        fig.add_trace(go.Scatter(x=[bound_s] * 2, y=[0, 1], mode="lines", name="p99 SLO bound",
                                 line=dict(color=PALETTE[4], dash="dash", width=2)))
    fig.update_yaxes(tickformat=".0%", range=[0, 1.01])
    fig.update_xaxes(type="log")
    return style(fig, title=f"{name} by group (CDF)", x=f"{name} (s, log scale)", y="share of requests", height=340)


def cdf(values_s, *, name: str, bound_s: float | None, unit_ms: bool = True) -> go.Figure:
    """Empirical CDF of a latency, with the SLO's p99 bound as a vertical line."""
    import numpy as np

    v = np.sort(np.asarray(values_s, dtype=float))
    v = v[np.isfinite(v) & (v > 0)]
    k = max(1, len(v) // 2000)
    scale = 1e3 if unit_ms else 1.0
    y = (np.arange(1, len(v) + 1) / len(v))[::k]
    fig = go.Figure(go.Scatter(x=v[::k] * scale, y=y, mode="lines", line=dict(color=PALETTE[0], width=2.5), name=name))
    if bound_s is not None:  # a trace, not add_vline: shapes on a log axis take log10 coordinates
        fig.add_trace(go.Scatter(x=[bound_s * scale] * 2, y=[0, 1], mode="lines", name="p99 SLO bound",
                                 line=dict(color=PALETTE[4], dash="dash", width=2)))
    fig.add_hline(y=0.99, line_dash="dot", line_color="#94a3b8")
    fig.update_yaxes(tickformat=".0%", range=[0, 1.01])
    fig.update_xaxes(type="log")  # latencies span decades (queueing tails): a log axis shows body and tail
    return style(fig, title=f"{name} distribution (CDF)", x=f"{name} ({'ms' if unit_ms else 's'}, log scale)", y="share of requests",
                 height=340)


def memory_bar(plan) -> go.Figure:
    """Where one GPU's HBM goes: weights, activation reserve, KV cache, and what is held back."""
    parts = [("weights", plan.weights_gib, PALETTE[3]), ("activations", plan.activation_reserve_gib, PALETTE[1]),
             ("KV cache", plan.kv_gib, PALETTE[0]), ("not used (utilization cap)", max(plan.gpu_total_gib - plan.usable_gib, 0.0), "#cbd5e1")]
    fig = go.Figure()
    for label, gib, colour in parts:
        fig.add_trace(go.Bar(y=["HBM"], x=[gib], name=label, orientation="h", marker_color=colour,
                             text=[f"{gib:,.1f}"], textposition="inside", hovertemplate=f"{label}: %{{x:,.1f}} GiB<extra></extra>"))
    fig.update_layout(barmode="stack")
    style(fig, title=f"Memory per GPU ({plan.gpu_total_gib:,.0f} GiB)", x="GiB", height=250)
    return fig.update_layout(legend=dict(y=-0.75))


# --------------------------------------------------------------------------- capacity


def headroom_chart(curve, slo: dict[str, Any], peak_qps: float) -> go.Figure:
    """SLO attainment (left) and p99 latencies (right, vs their bounds) against the fleet's rate."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("SLO attainment vs offered rate", "latency percentiles ÷ the p99 bound"),
                        horizontal_spacing=0.1)
    fig.add_trace(go.Scatter(x=curve["rate_qps"], y=curve["slo_attainment"], mode="lines+markers", name="attainment",
                             line=dict(color=PALETTE[0], width=3)), row=1, col=1)
    fig.add_hline(y=slo.get("attainment", 0.99), line_dash="dash", line_color=PALETTE[4], row=1, col=1)
    for i, (metric, key) in enumerate((("TTFT", "ttft"), ("TPOT", "tpot"), ("E2E", "e2e"))):
        bound = slo.get(f"{key}_p99_s")
        col = f"{key}_p99_s"
        if bound is None or col not in curve:
            continue
        colour = PALETTE[(i + 1) % len(PALETTE)]
        fig.add_trace(go.Scatter(x=curve["rate_qps"], y=curve[col] / bound, mode="lines+markers", name=f"{metric} p99",
                                 line=dict(color=colour, width=2.5)), row=1, col=2)
        if f"{key}_p50_s" in curve:
            fig.add_trace(go.Scatter(x=curve["rate_qps"], y=curve[f"{key}_p50_s"] / bound, mode="lines", name=f"{metric} p50",
                                     line=dict(color=colour, width=1.5, dash="dot")), row=1, col=2)
    fig.add_hline(y=1.0, line_dash="dash", line_color=PALETTE[4], row=1, col=2)
    for c in (1, 2):
        fig.add_vline(x=peak_qps, line_dash="dot", line_color="#64748b", row=1, col=c,
                      annotation_text="peak", annotation_position="bottom right")
        fig.update_xaxes(title_text="fleet request rate (req/s)", row=1, col=c)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="× of the bound (≤ 1 meets)", row=1, col=2)
    return style(fig, height=380)


def gpus_vs_rate(rows: list[dict[str, Any]], peak_qps: float) -> go.Figure:
    fig = go.Figure(go.Scatter(x=[r["peak_qps"] for r in rows], y=[r["gpus"] for r in rows], mode="lines+markers",
                               line=dict(shape="hv", color=PALETTE[0], width=3), name="GPUs"))
    fig.add_vline(x=peak_qps, line_dash="dot", line_color="#64748b", annotation_text="chosen peak")
    fig.update_yaxes(rangemode="tozero")
    return style(fig, title="GPUs needed vs peak rate", x="peak request rate (req/s)", y="GPUs", height=340)


def card(where: Any, label: str, value: str, note: str | None = None, ok: bool | None = None) -> None:
    """One metric card: the value, a grey note under it, or a green/red verdict when `ok` is set."""
    if ok is None:
        where.metric(label, value, note, delta_color="off", delta_arrow="off", border=True)
    else:
        where.metric(label, value, note, delta_color="normal" if ok else "inverse", delta_arrow="up" if ok else "down", border=True)
