"""Calibration: which step-time Profile the scenario uses, its measured ceilings next to the
GPU card's datasheet, and the fit statistics (how well the fitted formula reproduced the runs).
With no Profile the simulator runs the roofline with the card's default efficiencies — said
plainly, because every latency on the other pages then carries datasheet uncertainty.
"""

from __future__ import annotations

import streamlit as st

from planner_ui import ui_calls, ui_charts
from planner_ui import ui_charts as ch
from planner_ui.ui_builder import Built


def render(built: Built) -> None:
    scenario = ui_calls.need_scenario(built)
    if scenario is None:
        return
    found = ui_calls.call(ui_calls.profile_in_use, scenario, built=built)
    gpu = ui_calls.call(ui_calls.gpu_card, scenario.gpu.name, built=built)
    if found is not None and gpu is not None:
        source, profile, measured = found
        if profile is None:
            datasheet = (f"{gpu.bf16_tflops:,.0f} TFLOP/s bf16 × {gpu.flops_efficiency:.0%} and "
                         f"{gpu.hbm_tb_s:,.2f} TB/s × {gpu.hbm_efficiency:.0%}")
            if measured is None:
                st.info(f"**roofline (uncalibrated)** — no measured Profile for {gpu.name} ({source}). Step times use the "
                        f"datasheet: {datasheet}; training MFU {gpu.mfu_training:.0%}. "
                        f"Run `lifecost calibrate` on the target GPU to replace them with measurements.")
            else:
                training = ("training uses its measured step model" if measured.training is not None
                            else f"training MFU {gpu.mfu_training:.0%}")
                st.info(f"**roofline (uncalibrated) serving steps** — {source}. Serving step times use the datasheet: "
                        f"{datasheet}; {training}. The Profile's measured ceilings are shown below.")
        else:
            st.success(f"Profile **{profile.key}** ({source}) — measured on {profile.gpu.name} with "
                       f"{profile.engine.name} {profile.engine.version}, {profile.created_utc}")
            st.caption(f"produced by `{profile.command}`")
        st.subheader("Hardware ceilings: measured vs datasheet")
        rows = ui_charts.ceiling_rows(gpu, measured)
        cols = st.columns(len(rows))
        for col, (label, measured, sheet, unit, fmt) in zip(cols, rows):
            if measured is None:
                ch.card(col, label, f"{sheet:{fmt}} {unit}", "datasheet (not measured)")
            else:
                ch.card(col, label, f"{measured:{fmt}} {unit}", f"{measured / sheet - 1:+.0%} vs datasheet {sheet:{fmt}}")
        curve = ui_calls.call(ui_calls.decode_step_curve, scenario.digest(), scenario, built=built)
        if curve is not None:
            st.plotly_chart(ch.decode_curve(*curve), width="stretch", key="cal_decode")
        if profile is not None:
            st.subheader("Fit quality")
            fit_rows = ui_charts.fit_rows(profile)
            if fit_rows:
                st.dataframe(fit_rows, hide_index=True, width="stretch")
            else:
                st.caption("This Profile is partial: it measured ceilings only (no step-time or training fit).")
            if profile.step_time is not None:
                st.plotly_chart(ui_charts.step_coeff_bar(profile), width="stretch")
            fidelity = ui_calls.call(ui_calls.fidelity_frame, scenario, profile, built=built)
            if fidelity is not None and len(fidelity):
                st.subheader("Fidelity: simulated vs measured")
                cols = st.columns(2)
                for col, kind in zip(cols, ("serving", "training")):
                    if (fidelity["kind"] == kind).any():
                        col.plotly_chart(ch.fidelity_scatter(fidelity, kind), width="stretch", key=f"cal_fid_{kind}")
                st.dataframe(fidelity, hide_index=True, width="stretch", column_config={
                    "error": st.column_config.NumberColumn("error (signed)", format="percent")})
            elif fidelity is None:
                st.caption("No fidelity report beside this Profile (`lifecost calibrate` writes fidelity.json after "
                           "replaying the measured runs).")
