"""Where does a transformers continuous-batching step spend its time, per engine setting?

Why: on an H100 the first check measured a 1B model's decode step at ~80 ms for a batch of 16
with the GPU drawing ~140 W — far from the ~3 ms that the weight bytes / HBM bandwidth predict,
so the step is host-bound. Before calibrating on that engine we compare its settings (CUDA
graphs, async double-buffering, KV padding) on one burst and print the top operators of a torch
profile, so the serving sweep runs the engine in its best available configuration and the
Profile documents why transformers CB steps cost what they cost.

Run on the GPU machine:  python3 benchmarks/transformers_cb_engine.py [--model Llama-3.2-1B]
CPU (same code path, tiny model):  python benchmarks/transformers_cb_engine.py --tiny
Prints, per variant: warm-up seconds, pure-decode step ms (batch N), TPOT p50, TTFT p50; then
the profiler's top operators for the first variant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from calibrate.serve_base import burst, pure_decode_step_s, summarize  # noqa: E402
from calibrate.serve_transformers import TransformersBackend  # noqa: E402

VARIANTS = {
    "default": {},
    "cuda_graph": {"use_cuda_graph": True},
    "async": {"use_async_batching": True},
    "async+graph": {"use_async_batching": True, "use_cuda_graph": True},
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="Llama-3.2-1B")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--prompt-tok", type=int, default=512)
    ap.add_argument("--output-tok", type=int, default=64)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--profile", action="store_true", help="torch.profiler top ops of the first variant")
    ap.add_argument("--tiny", action="store_true")
    a = ap.parse_args()
    model = "tiny-llama" if a.tiny else a.model
    dtype = torch.float32 if a.tiny else torch.bfloat16
    rows = []
    for i, name in enumerate(a.variants.split(",")):
        opts = VARIANTS[name]
        t = time.perf_counter()
        try:
            b = TransformersBackend(model, dtype=dtype, device="cpu" if a.tiny else None,
                                    kv_cache_tok=8192 if a.tiny else None, engine_options=opts)
            b.replay(burst(4, 64, 8))
            setup_s = time.perf_counter() - t
            served = b.replay(burst(a.n, a.prompt_tok, a.output_tok))
            s = summarize(served)
            rows.append({"variant": name, "setup_s": round(setup_s, 1),
                         "decode_step_ms": round(pure_decode_step_s(served) * 1e3, 2),
                         "tpot_p50_ms": round(s["tpot_s_p50"] * 1e3, 2), "ttft_p50_ms": round(s["ttft_s_p50"] * 1e3, 1),
                         "resolved": {k: v for k, v in b.engine_settings()["continuous_batching_config"].items()
                                      if k in ("use_cuda_graph", "use_async_batching", "max_batch_tokens",
                                               "num_blocks", "kv_padding_interval_size", "q_padding_interval_size")}})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            if a.profile and i == 0:
                from torch.profiler import ProfilerActivity, profile

                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
                with profile(activities=acts) as prof:
                    b.replay(burst(a.n, a.prompt_tok, 16))
                sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
                print(prof.key_averages().table(sort_by=sort, row_limit=12, max_name_column_width=40))
                print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=40))
            b.close()
        except Exception as e:  # noqa: BLE001 - one failing variant must not hide the others
            rows.append({"variant": name, "error": f"{type(e).__name__}: {str(e)[:120]}"})
            print(rows[-1], file=sys.stderr, flush=True)
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
