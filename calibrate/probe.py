"""GPU probe: who the accelerator is (NVML) and what it really delivers (torch micro-benchmarks).

Why measure ceilings at all: the roofline default divides FLOPs by peak FLOP/s and bytes by HBM
bandwidth; datasheet peaks are never reached (an H100 SXM is sold at 989 dense bf16 TFLOP/s and
3.35 TB/s, and measures ≈ 770–800 TFLOP/s and ≈ 3.0 TB/s read+write). The fitted step-time
coefficients are then ratios to *these measured* ceilings, which is what makes them transfer
across model sizes.

What is measured (all timed with CUDA events after warm-up, median of repeats, as in
`triton.testing.do_bench`):
- bf16 GEMM TFLOP/s, FLOPs = 2·M·N·K. One big square shape (8192³, compute-bound) and skinny
  decode-like shapes M ∈ {1, 16, 64, 256} against the Llama-3.1-8B projections (4096→14336 MLP
  up/gate, 4096→4096 attention out) — the regime of a decoding batch of M sequences, which is
  memory-bound for small M. Weights are rotated across buffers larger than L2 so the small shapes
  are not served from cache.
- device copy bandwidth, bytes read + bytes written (the convention of CUDA's bandwidthTest and of
  the reference figure ≈ 2.96 TB/s on an H100 80GB).
- pinned host→device and device→host bandwidth: the PCIe/C2C link that KV offload to host DRAM
  uses (≈ 55 GB/s on PCIe Gen5 x16).

On a machine without a CUDA GPU the probe says so (`gpu: null`) and measures the CPU GEMM (fp32)
and memory-copy path instead; there is no host link to measure there.

Imports torch, pynvml and the standard library only: runs on the device machine.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from typing import Any, Callable

import torch

from calibrate.power import nvml_handle, pynvml

# The Llama-3.1-8B projection shapes (hidden 4096, intermediate 14336): K → N.
DECODE_SHAPES_KN = ((4096, 14336), (4096, 4096))
DECODE_M = (1, 16, 64, 256)


def _nvml_str(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def gpu_identity(index: int = 0) -> dict[str, Any] | None:
    """Name, memory, clocks, power limit, driver and CUDA versions via NVML; None without a GPU."""
    h = nvml_handle(index)
    if h is None:
        return None
    n = pynvml

    def safe(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:
            return None

    mem = safe(lambda: n.nvmlDeviceGetMemoryInfo(h))
    cuda_drv = safe(lambda: n.nvmlSystemGetCudaDriverVersion())
    return {
        "name": _nvml_str(safe(lambda: n.nvmlDeviceGetName(h))),
        "memory_total_gib": mem.total / 2**30 if mem else None,
        "memory_used_gib": mem.used / 2**30 if mem else None,
        "sm_clock_max_mhz": safe(lambda: n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_SM)),
        "mem_clock_max_mhz": safe(lambda: n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_MEM)),
        "sm_clock_now_mhz": safe(lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
        "mem_clock_now_mhz": safe(lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM)),
        "power_limit_w": safe(lambda: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
        "power_now_w": safe(lambda: n.nvmlDeviceGetPowerUsage(h) / 1000.0),
        "temperature_c": safe(lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
        "utilization_pct": safe(lambda: n.nvmlDeviceGetUtilizationRates(h).gpu),
        "driver_version": _nvml_str(safe(lambda: n.nvmlSystemGetDriverVersion())),
        "cuda_driver_version": f"{cuda_drv // 1000}.{cuda_drv % 1000 // 10}" if cuda_drv else None,
        "pcie_gen_max": safe(lambda: n.nvmlDeviceGetMaxPcieLinkGeneration(h)),
        "pcie_width_max": safe(lambda: n.nvmlDeviceGetMaxPcieLinkWidth(h)),
    }


def time_median_s(fn: Callable[[int], None], device: torch.device, warmup: int = 3, reps: int = 10) -> float:
    """Median seconds of `fn(i)` (i = repeat index, for rotating buffers) after `warmup` calls.

    CUDA: one event pair per repeat, synchronised at the end (no host clock in the loop).
    CPU: perf_counter around each call.
    """
    for i in range(warmup):
        fn(i)
    times: list[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(reps):
            starts[i].record()
            fn(warmup + i)
            ends[i].record()
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) / 1000.0 for s, e in zip(starts, ends)]
    else:
        for i in range(reps):
            t = time.perf_counter()
            fn(warmup + i)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def gemm(m: int, n: int, k: int, device: torch.device, dtype: torch.dtype, rotate_bytes: int = 0,
         reps: int = 10) -> dict[str, Any]:
    """Time C[m,n] = A[m,k] @ B[k,n]; B rotates over enough buffers to exceed `rotate_bytes`."""
    elem = torch.tensor([], dtype=dtype).element_size()
    b_bytes = k * n * elem
    n_buf = max(1, math.ceil(rotate_bytes / b_bytes)) if rotate_bytes else 1
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(m, k, device=device, dtype=dtype, generator=gen)
    bs = [torch.randn(k, n, device=device, dtype=dtype, generator=gen) for _ in range(n_buf)]
    c = torch.empty(m, n, device=device, dtype=dtype)
    t = time_median_s(lambda i: torch.matmul(a, bs[i % n_buf], out=c), device, reps=reps)
    flops = 2.0 * m * n * k
    moved = (m * k + k * n + m * n) * elem
    del a, bs, c
    return {"m": m, "n": n, "k": k, "dtype": str(dtype).removeprefix("torch."), "time_s": t,
            "tflops": flops / t / 1e12, "bytes": moved, "gb_s": moved / t / 1e9, "weight_buffers": n_buf}


def device_copy(nbytes: int, device: torch.device, reps: int = 10) -> dict[str, Any]:
    """dst.copy_(src) of `nbytes`; bandwidth counts bytes read + bytes written (2·nbytes)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    t = time_median_s(lambda i: dst.copy_(src), device, reps=reps)
    del src, dst
    return {"bytes": nbytes, "time_s": t, "tb_s_read_write": 2 * nbytes / t / 1e12}


def host_link(nbytes: int, device: torch.device, reps: int = 10) -> dict[str, Any]:
    """Pinned host→device and device→host copies of `nbytes` (the KV-offload link)."""
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    host.random_(0, 255)
    dev = torch.empty(nbytes, dtype=torch.uint8, device=device)
    t_h2d = time_median_s(lambda i: dev.copy_(host, non_blocking=True), device, reps=reps)
    t_d2h = time_median_s(lambda i: host.copy_(dev, non_blocking=True), device, reps=reps)
    del host, dev
    return {"bytes": nbytes, "h2d_time_s": t_h2d, "d2h_time_s": t_d2h,
            "h2d_gb_s": nbytes / t_h2d / 1e9, "d2h_gb_s": nbytes / t_d2h / 1e9}


# The GEMM grid (`gemm_grid`): token counts × the matrix sides of the catalog's dense models
# (hidden, KV, MLP widths) and a vocabulary-sized N (the LM head). A model's own linears are then
# priced by interpolating this table (`models.profile.GemmGrid`) instead of one peak rate: on the
# H100 a 1B-shaped LoRA step ran its GEMMs at 429 TFLOP/s and an 8B-shaped one at 545
# (`benchmarks/train_step_profile.py`) — narrow matrices use the tensor cores less well.
GRID_M = (512, 2048, 8192, 32768)
GRID_KN = (512, 1024, 2048, 3072, 4096, 8192, 14336, 28672)
GRID_VOCAB_N = 128256


def gemm_grid(device: torch.device, dtype: torch.dtype, quick: bool = False,
              progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """TFLOP/s of C[m,n] = A[m,k] @ B[k,n] over the grid (a tiny grid when `quick` or on a CPU)."""
    say = progress or (lambda s: None)
    small = quick or device.type != "cuda"
    ms = (16, 64, 256) if small else GRID_M
    dims = (32, 64, 128, 256) if small else GRID_KN
    out = []
    for m in ms:
        say(f"GEMM grid M={m}")
        for k in dims:
            for n in dims + ((512,) if small else (GRID_VOCAB_N,)):
                g = gemm(m, n, k, device, dtype, reps=3)
                out.append({"m": m, "k": k, "n": n, "tflops": g["tflops"]})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def run_probe(quick: bool = False, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The full probe record (`kind: "probe"`). `quick` shrinks sizes (for tests and CPU)."""
    say = progress or (lambda s: None)
    ident = gpu_identity()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    rec: dict[str, Any] = {
        "kind": "probe",
        "key": "probe",
        "gpu": ident,
        "device": device.type,
        "host": {"platform": platform.platform(), "python": platform.python_version(),
                 "cpu_threads": torch.get_num_threads()},
        "versions": {"torch": torch.__version__, "cuda_runtime": torch.version.cuda},
    }
    if cuda:
        props = torch.cuda.get_device_properties(device)
        rec["cuda_device"] = {"name": props.name, "sm_count": props.multi_processor_count,
                              "total_memory_gib": props.total_memory / 2**30,
                              "capability": f"{props.major}.{props.minor}",
                              "l2_cache_mb": getattr(props, "L2_cache_size", 0) / 1e6}
    else:
        rec["note"] = "no CUDA GPU: measured the CPU GEMM (fp32) and memory-copy path"

    dtype = torch.bfloat16 if cuda else torch.float32
    square = 1024 if (quick or not cuda) else 8192
    rotate = (256 << 20) if cuda else 0
    gemms = []
    say(f"GEMM {square}³ {dtype}")
    gemms.append({"shape": "square", **gemm(square, square, square, device, dtype, reps=5 if quick else 10)})
    ms = DECODE_M if not quick else (1, 16)
    for k, n in DECODE_SHAPES_KN:
        if quick or not cuda:
            k, n = k // 8, n // 8
        for m in ms:
            say(f"GEMM decode-like M={m} {k}→{n}")
            gemms.append({"shape": "decode", **gemm(m, n, k, device, dtype, rotate_bytes=rotate,
                                                    reps=5 if quick else 20)})
    rec["gemm"] = gemms
    rec["gemm_grid"] = gemm_grid(device, dtype, quick, say)
    copy_bytes = (64 << 20) if (quick or not cuda) else (2 << 30)
    say(f"device copy {copy_bytes >> 20} MiB")
    rec["device_copy"] = device_copy(copy_bytes, device, reps=5 if quick else 10)
    if cuda:
        link_bytes = (64 << 20) if quick else (1 << 30)
        say(f"pinned host link {link_bytes >> 20} MiB")
        rec["host_link"] = host_link(link_bytes, device, reps=5 if quick else 10)
        torch.cuda.empty_cache()
    rec["headline"] = headline(rec)
    return rec


def headline(rec: dict[str, Any]) -> dict[str, Any]:
    """The few numbers people quote: square GEMM TFLOP/s, copy TB/s, host link GB/s."""
    sq = next(g for g in rec["gemm"] if g["shape"] == "square")
    h: dict[str, Any] = {
        "gpu": (rec.get("gpu") or {}).get("name") or "cpu",
        f"gemm_{sq['m']}^3_{sq['dtype']}_tflops": round(sq["tflops"], 3),
        "device_copy_tb_s": round(rec["device_copy"]["tb_s_read_write"], 3),
    }
    if "host_link" in rec:
        h["h2d_gb_s"] = round(rec["host_link"]["h2d_gb_s"], 1)
        h["d2h_gb_s"] = round(rec["host_link"]["d2h_gb_s"], 1)
    train = [g["tflops"] for g in rec.get("gemm_grid") or () if g["m"] >= 2048 and min(g["k"], g["n"]) >= 2048]
    if train:  # the rate `calibrate.fit.gemm_train_tflops` prices training matmuls at
        h["gemm_training_shapes_median_tflops"] = round(statistics.median(train), 1)
    return h
