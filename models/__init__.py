"""models — what lifecost knows: catalog data and the exact analytic math derived from it.

Start with `catalog.py` (LLM architecture cards read from HF `config.json`), then `params.py`,
`flops.py`, `lora.py` and `memory.py` (pure functions, each citing its formula's source), then
`gpus.py` / `prices.py` (GPU cards and the dated price sheet) and `profile.py` (the schema of
measured calibration Profiles stored under `profiles/`). `errors.py` holds the one-line
user-facing error every package raises. This package imports nothing else of lifecost's.
"""
