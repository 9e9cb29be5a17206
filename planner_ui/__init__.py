"""planner_ui — how people use lifecost. Thin over the library: every number comes from `simulator`.

The CLI: `cli.py` (the typer app; `LifecostError` → one line, exit 2) and its command groups
`cli_catalog.py` (models, gpus, fit), `cli_sim.py` (simulate), `cli_plan.py` (train, cost),
`cli_capacity.py` (capacity, report), `cli_calibrate.py` / `cli_calibrate_fit.py` (calibrate),
`cli_ui.py` (ui); `output.py` routes results to stdout and progress to stderr; `report.py`
builds the HTML/Markdown capacity report. The Streamlit planner: `app.py`, the sidebar
`ui_builder.py`, the pages `ui_overview.py`, `ui_run.py`, `ui_capacity.py`, `ui_compare.py`,
`ui_calibration.py`, and their helpers `ui_calls.py` (cached library calls), `ui_charts.py`,
`ui_uploads.py`.
"""
