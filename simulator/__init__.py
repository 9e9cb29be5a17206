"""simulator — what lifecost predicts.

Start with `scenario.py` (the validated input), then `workload.py`/`traces.py` (requests),
`kv_cache.py` and `scheduler.py` (what a vLLM-v1-style engine decides each step),
`predictor.py` (how long a step takes), `engine.py` (the SimPy loop that joins them) and
`result.py` (frames and summary). Planning sits on top: `training.py`, `cost.py`,
`capacity.py`. Never imports `calibrate` or `planner_ui`.
"""
