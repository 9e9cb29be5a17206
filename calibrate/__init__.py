"""calibrate — what lifecost measures on real hardware.

`runlog.py` (append-only measurement log; resume support) is shared by every step:
`probe` (GPU identity and ceilings), `train` (short LoRA/QLoRA/full runs), `serve` (vLLM,
OpenAI-compatible HTTP, transformers continuous batching), `fit` (runs → Profile) and
`validate` (replay runs in the simulator → fidelity report).
"""
