"""Where does a GPU-bound LoRA training step spend its GPU time? A kernel-level breakdown.

Why: the training step model (`models.profile.TrainingTerms`) fits, from one model size, a GPU
time that is linear in the step's work plus a zero-token intercept (≈ 48 ms on the H100 from
Llama-3.2-1B runs). One model size cannot say whether that intercept is per step or per decoder
layer, and the two extrapolate to Llama-3.1-8B very differently (3 % vs 18 % error). This
profiles one step per model with `torch.profiler` and sums the CUDA kernel time by kind (GEMM,
attention, elementwise / reductions, optimizer, other) and how much of the wall time the GPU sat
idle — evidence about what the intercept is, not a fit (nothing here feeds the Profile).

Run on the GPU machine:  python3 benchmarks/train_step_profile.py --out DIR [--models Llama-3.2-1B,Llama-3.1-8B]
CPU (same code path, tiny model, no CUDA kernels to sum):  python benchmarks/train_step_profile.py --tiny --out DIR
Writes DIR/train_step_profile.json and prints one table row per (model, setup).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from calibrate.train import TrainRun, TrainSession  # noqa: E402

# kernel-name fragments → kind (CUTLASS / cuBLAS / nvjet GEMMs, flash / efficient attention, the
# fused AdamW foreach kernels); everything else is elementwise, reductions, copies
KINDS = (("gemm", ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "sm80_", "ampere_", "cublas")),
         ("attention", ("flash", "fmha", "attention", "attn", "efficient")),
         ("optimizer", ("adam", "multi_tensor")))


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "elementwise/other"


def profile_step(session: TrainSession, run: TrainRun) -> dict:
    """Warm the run up (its own warm-up steps), then profile one more step."""
    from torch.profiler import ProfilerActivity, profile

    rec = session.run(run)  # warm-up + timed steps: the allocator and kernels are warm after this
    with session.wrapped(run) as (model, batch):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        for _ in range(2):
            model(input_ids=batch, labels=batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        cuda = session.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as prof:
            t = time.perf_counter()
            model(input_ids=batch, labels=batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            host_s = time.perf_counter() - t
            if cuda:
                torch.cuda.synchronize()
            wall_s = time.perf_counter() - t
        by_kind: dict[str, float] = {}
        n_kernels = 0
        for avg in prof.key_averages():  # CUDA kernels: device-side events, their own time
            if not str(getattr(avg, "device_type", "")).endswith("CUDA"):
                continue
            t_us = getattr(avg, "self_device_time_total", None) or getattr(avg, "self_cuda_time_total", 0)
            if t_us > 0:
                n_kernels += avg.count
                k = kind_of(avg.key)
                by_kind[k] = by_kind.get(k, 0.0) + t_us / 1e6
        busy = sum(by_kind.values())
        return {"model": run.model, "key": run.key, "layers": session.config.get("num_hidden_layers"),
                "wall_s": wall_s, "host_s": host_s, "gpu_busy_s": busy, "gpu_idle_s": max(0.0, wall_s - busy),
                "kernels": n_kernels, "by_kind_s": by_kind, "timed_step_s": rec.get("step_time_s")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="Llama-3.2-1B,Llama-3.1-8B")
    ap.add_argument("--tiny", action="store_true")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    models = ["tiny-llama"] if a.tiny else a.models.split(",")
    # GPU-bound setups (host finishes early): seq 2048 × mb 4 with checkpointing, and without for 1B
    setups = [(2048, 4, True), (2048, 4, False)] if not a.tiny else [(32, 2, True)]
    rows = []
    for m in models:
        session = TrainSession(m, device="cpu" if a.tiny else None, dtype=torch.float32 if a.tiny else torch.bfloat16)
        try:
            for seq, mb, ck in setups:
                run = TrainRun(m, "lora", seq, mb, ck, 16, warmup_steps=2, timed_steps=3)
                try:
                    rows.append(profile_step(session, run))
                except torch.OutOfMemoryError:
                    rows.append({"model": m, "key": run.key, "error": "OOM"})
                    torch.cuda.empty_cache()
                r = rows[-1]
                if "error" in r:
                    print(f"{r['key']}: OOM", flush=True)
                else:
                    kinds = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in sorted(r["by_kind_s"].items()))
                    print(f"{r['key']}: wall {r['wall_s'] * 1e3:.1f} ms, host {r['host_s'] * 1e3:.1f}, GPU busy "
                          f"{r['gpu_busy_s'] * 1e3:.1f} (idle {r['gpu_idle_s'] * 1e3:.1f}), {r['kernels']} kernels; ms by kind: {kinds}",
                          flush=True)
        finally:
            session.close()
    (out / "train_step_profile.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
