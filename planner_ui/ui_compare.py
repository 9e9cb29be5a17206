"""Compare: 2–4 scenarios side by side — lifetime cost stacked by month, cumulative cost with
the break-even month, $/1M tokens and GPUs at peak, and the rollup's comparison table
(`simulator.cost.compare`, what `lifecost cost A.yaml B.yaml --json` prints).

The set lives in session state as Scenario YAML texts (validated again with `parse_scenario`
when read), filled from the sidebar's current scenario, uploaded YAML files, or one-click
variants of the current scenario (each a `with_changes` of it).
"""

from __future__ import annotations

import streamlit as st

from planner_ui import ui_calls
from planner_ui import ui_charts as ch
from planner_ui.ui_builder import Built
from planner_ui.ui_uploads import short_error
from simulator.scenario import MAX_SCENARIO_BYTES, Scenario, parse_scenario, scenario_to_yaml

MAX_SCENARIOS = 4
KEY = "compare.set"

# One-click variants of the current scenario: (button label, name suffix, dotted changes).
VARIANTS = (
    ("int4 weights (AWQ)", "int4-awq", {"model.quant": "int4-awq"}),
    ("fp8 KV cache", "kv-fp8", {"model.kv_dtype": "fp8"}),
    ("no fine-tune, 70B base", "70B-base", {"model.name": "Llama-3.1-70B", "training.method": "none", "gpu.tensor_parallel": 4}),
    ("reserved 1-year pricing", "reserved-1y", {"prices.pricing": "reserved_1y"}),
)


def _label(s: Scenario) -> str:
    return f"{s.name} · {s.digest()[:6]}"


def _add(s: Scenario) -> str | None:
    items: list[str] = st.session_state.setdefault(KEY, [])
    text = scenario_to_yaml(s)
    if text in items:
        return f"{_label(s)} is already in the comparison"
    if len(items) >= MAX_SCENARIOS:
        return f"at most {MAX_SCENARIOS} scenarios side by side — remove one first"
    items.append(text)
    return None


def _controls(current: Scenario | None) -> None:
    c1, c2 = st.columns([2, 3])
    with c1:
        if current is not None and st.button("Add the sidebar scenario", icon=":material/add:", key="cmp_add_current",
                                             width="stretch"):
            if msg := _add(current):
                st.warning(msg)
        if current is not None:
            st.caption("…or a variant of it:")
            cols = st.columns(2)
            for i, (label, suffix, changes) in enumerate(VARIANTS):
                if cols[i % 2].button(label, key=f"cmp_variant_{suffix}", width="stretch"):
                    try:
                        variant = current.with_changes(name=f"{current.name}-{suffix}", **changes)
                    except Exception as e:  # noqa: BLE001 — shown as one line
                        st.error(short_error(e))
                    else:
                        if msg := _add(variant):
                            st.warning(msg)
    with c2:
        files = st.file_uploader("Add scenario YAML files", type=["yaml", "yml"], accept_multiple_files=True, key="up.compare")
        for f in files or []:
            seen = st.session_state.setdefault("compare.seen", set())
            if f.file_id in seen:
                continue
            seen.add(f.file_id)
            try:
                if f.size > MAX_SCENARIO_BYTES:
                    raise ValueError(f"{f.name} is larger than {MAX_SCENARIO_BYTES:,} bytes")
                s = parse_scenario(f.getvalue().decode("utf-8", errors="replace"), source=f.name)
            except Exception as e:  # noqa: BLE001 — one line next to the uploader
                st.session_state.setdefault("compare.errors", {})[f.file_id] = short_error(e)
            else:
                if msg := _add(s):
                    st.warning(msg)
        for msg in st.session_state.get("compare.errors", {}).values():
            st.error(msg)


def _current_set() -> list[Scenario]:
    return [parse_scenario(t, source="comparison") for t in st.session_state.get(KEY, [])]


def render(built: Built) -> None:
    _controls(built.scenario)
    scenarios = _current_set()
    if not scenarios:
        st.info("Add 2–4 scenarios: the sidebar's, a one-click variant of it, or uploaded YAML files.")
        return
    keep = st.multiselect("Scenarios compared", [_label(s) for s in scenarios], default=[_label(s) for s in scenarios],
                          key=f"cmp_keep_{len(scenarios)}_{'_'.join(s.digest()[:4] for s in scenarios)}")
    if len(keep) < len(scenarios):
        st.session_state[KEY] = [scenario_to_yaml(s) for s in scenarios if _label(s) in keep]
        st.rerun()

    costs = []
    bar = st.progress(0.0, text="Lifetime cost of each scenario…")
    for i, s in enumerate(scenarios):
        bar.progress(i / len(scenarios), text=f"Lifetime cost of {_label(s)} ({i + 1}/{len(scenarios)})…")
        try:
            costs.append((_label(s), ui_calls.lifetime(s.digest(), s)))
        except Exception as e:  # noqa: BLE001 — one line naming the scenario, the others still compare
            st.error(f"{_label(s)}: {short_error(e)}")
    bar.empty()
    if not costs:
        return

    names = [n for n, _ in costs]
    cards = st.columns(len(costs))
    for col, (name, cost) in zip(cards, costs):
        t = cost.totals
        with col.container(border=True):
            st.markdown(f"**{name}**")
            a, b = st.columns(2)
            ch.card(a, "Lifetime cost", ch.fmt_usd(t["total_usd"]), f"{t['months']} months")
            ch.card(b, "$ / 1M tokens", ch.fmt_usd(t["usd_per_1m_tok"]), "all-in")
            ch.card(a, "GPUs at peak", ch.fmt_int(t["gpus_peak"]), t["gpu"])
            be = t["break_even_month"]
            ch.card(b, "Break-even", "—" if be is None else f"month {be}", "serving ≥ training")

    st.plotly_chart(ch.cost_by_month(costs), width="stretch", key="cmp_stack")
    left, right = st.columns([3, 2])
    left.plotly_chart(ch.cumulative_cost(costs), width="stretch", key="cmp_cum")
    with right:
        st.plotly_chart(ch.bars(names, [c.totals["usd_per_1m_tok"] or 0.0 for _, c in costs], title="$ per 1M tokens (all-in)",
                                y="USD / 1M tokens", text=[ch.fmt_usd(c.totals["usd_per_1m_tok"]) for _, c in costs]),
                        width="stretch", key="cmp_per_tok")
        st.plotly_chart(ch.bars(names, [c.totals["gpus_peak"] for _, c in costs], title="GPUs needed at peak", y="GPUs",
                                text=[ch.fmt_int(c.totals["gpus_peak"]) for _, c in costs]), width="stretch", key="cmp_gpus")
    from simulator.cost import compare

    table = ui_calls.call(compare, [c for _, c in costs])
    if table is not None:
        table.columns = names
        st.dataframe(table.apply(lambda row: row.map(lambda v: _cell(str(row.name), v)), axis=1), width="stretch")


def _cell(row: str, v) -> str:
    """The comparison table in the page's units: dollars as money, rates as req/s, counts as integers."""
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    if row.endswith("_usd") or "usd_per" in row:
        return ch.fmt_usd(v)
    if "qps" in row:
        return ch.fmt_qps(v)
    if row.endswith("_kwh"):
        return f"{v:,.0f} kWh"
    if row == "break_even_month":
        return f"month {int(v)}"
    return f"{v:,.0f}" if float(v).is_integer() or abs(v) >= 1000 else f"{v:,.4g}"
