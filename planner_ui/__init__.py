"""planner_ui — how people use lifecost: the `lifecost` CLI (`cli.py` and its `cli_*.py`
command groups; `output.py` routes results to stdout and progress to stderr) and the
Streamlit planner (`app.py`). Thin over the library: every number comes from `simulator`.
"""
