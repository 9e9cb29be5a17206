"""calibrate — what lifecost measures on real hardware.

`runlog.py` (append-only measurement log; resume support) is shared by every step. On the GPU
machine (torch/transformers/peft, no pydantic): `probe.py` (identity and ceilings), `power.py`
(energy), `model_build.py` (random-weight models from a config; NF4 for QLoRA), `train.py`
(short LoRA/QLoRA/full runs, wall and host time per step), `serve_base.py` (the backend contract and metrics) with `serve_transformers.py`, all
driven by `device_runs.py`. Other backends: `serve_vllm.py` (in-process vLLM), `serve_http.py`
(OpenAI-compatible endpoint), `tiny_model.py` (a tiny model dir for tests). Then on any
machine: `fit.py` (runs → Profile), `validate.py` (replay runs in the simulator → fidelity
report) and `pipeline.py` (all of it, resumable: `lifecost calibrate all`).
"""
