"""models — what lifecost knows: catalog data and the exact analytic math derived from it.

Reading order: `catalog.py` (LLM cards from HF `config.json`), `params.py` (exact parameter
counts and the shapes of every matrix), `lora.py` (LoRA counts and peft's target modules),
`flops.py` (FLOPs per token; `train_flop_terms` is the one training-FLOPs formula), `memory.py`
(weight/KV bytes, serving and training memory plans), then `gpus.py` (GPU cards), `prices.py`
(dated price sheet → `GpuHourPrice`) and `profile.py` (the measured calibration Profile schema,
lookup and writer). `errors.py` holds the one-line user-facing error every package raises.
`catalog`, `params`, `lora`, `flops` and `errors` need no pydantic (the GPU machine imports
them); this package imports nothing else of lifecost's.
"""
