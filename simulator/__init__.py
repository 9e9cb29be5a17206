"""simulator — what lifecost predicts.

Start with `scenario.py` (the validated input), then `workload.py`/`traces.py` (requests),
`kv_cache.py` and `scheduler.py` (what a vLLM-v1-style engine decides each step),
`predictor.py` (how long a step takes), `engine.py` (the SimPy loop that joins them) and
`result.py` (frames and summary). Many replicas: `cluster.py` (pools of those replicas behind
`router.py`'s policies; `disagg.py` prefill/decode pools joined by KV transfers; `autoscale.py`),
which `engine.simulate()` hands a Scenario whose `cluster` asks for it. Inside a replica, two
optional features plug into the same scheduler, block manager and predictor: `offload.py`
(tiered KV offload) and `speculative.py` (speculative decoding). Planning sits on top:
`training.py` (the fine-tune, with `failures.py` for checkpoints and restarts), `cost.py`
(lifetime cost per month), `capacity.py` (SLA capacity search), all running their simulations
through `sweep.py`'s executors (local processes or Ray). Never imports `calibrate` or
`planner_ui`.
"""
