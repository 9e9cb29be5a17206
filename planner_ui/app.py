"""lifecost planner — the Streamlit what-if dashboard (`lifecost ui`).

Reading guide: the sidebar is the scenario builder (`ui_builder.py`, uploads in
`ui_uploads.py`); each view is one small module over the same Scenario — `ui_overview.py` (the
headline numbers), `ui_compare.py` (2–4 scenarios' lifetime cost), `ui_capacity.py` (headroom
curve, GPUs vs peak rate), `ui_run.py` (inside one simulated run: KV cache, batch, latency CDFs)
and `ui_calibration.py` (the Profile in use). Views call the library through `ui_calls.py`
(digest-keyed caches, one-line errors); charts come from `ui_charts.py`. The UI computes nothing
itself: every number is the same library call the CLI makes.

Why a view selector instead of `st.navigation`: the builder must run on every rerun before the
view, and the selector keeps the whole app one script (testable end to end with AppTest).
"""

from __future__ import annotations

import streamlit as st

from planner_ui import ui_builder, ui_calibration, ui_capacity, ui_compare, ui_overview, ui_run

VIEWS = {
    "Overview": (":material/dashboard:", ui_overview.render),
    "Compare": (":material/compare_arrows:", ui_compare.render),
    "Capacity": (":material/speed:", ui_capacity.render),
    "Inside one run": (":material/monitoring:", ui_run.render),
    "Calibration": (":material/tune:", ui_calibration.render),
}

st.set_page_config(page_title="lifecost planner", page_icon="💰", layout="wide", initial_sidebar_state="expanded")
st.markdown(
    """<style>
    [data-testid="stMetric"] {background: #f8fafc;}
    [data-testid="stMetricLabel"] p {font-size: 0.82rem; color: #475569; font-weight: 600; text-transform: uppercase; letter-spacing: .03em;}
    [data-testid="stMetricValue"] {font-size: 1.65rem;}
    [data-testid="stMetricDelta"] {font-size: 0.8rem;}
    .block-container {padding-top: 2.2rem;}
    </style>""",
    unsafe_allow_html=True,
)

st.session_state["_errors_this_run"] = set()  # ui_calls.report() shows each distinct error once per run
built = ui_builder.render_sidebar()
st.session_state["scenario"] = built.scenario  # the validated scenario of this run (None while inputs are invalid)

head, pick = st.columns([1, 2], vertical_alignment="center")
head.markdown("## lifecost planner")
head.caption("Whole-life cost and capacity of fine-tuning and serving an LLM")
view = pick.segmented_control("View", list(VIEWS), default="Overview", key="view", label_visibility="collapsed", required=True,
                              format_func=lambda v: f"{VIEWS[v][0]} {v}")
VIEWS[view or "Overview"][1](built)
