"""Background power sampler: energy per run (J = ∫P dt) for energy-per-token figures.

Why a thread: NVML power readings are instantaneous board power (averaged by the driver over
~a few ms to 1 s depending on the GPU); a run of a few seconds needs many samples. The sampler
polls `nvmlDeviceGetPowerUsage` every `interval_s` and integrates with the trapezoid rule. Where
the driver offers `nvmlDeviceGetTotalEnergyConsumption` (Volta and newer: a millijoule counter
since driver load), the counter difference is reported as well — it is the more exact figure,
the trapezoid is the fallback. The same thread tracks the largest device memory in use seen by
NVML (what `nvidia-smi` shows: the allocator's reserve plus the CUDA context).

On a machine without NVML (no NVIDIA driver, e.g. CPU CI) the sampler runs as a no-op and the
result says `available: false` — never a fake number.

Use:
    with PowerSampler() as p:
        ...run...
    p.result()  # {"available", "energy_j", "mean_power_w", "max_power_w", ...}

Imports only the standard library and (optionally) pynvml: runs on the device machine.
"""

from __future__ import annotations

import threading
import time
from typing import Any

try:  # nvidia-ml-py provides the `pynvml` module
    import pynvml
except ImportError:  # pragma: no cover - depends on the machine
    pynvml = None


def nvml_handle(index: int = 0) -> Any | None:
    """An NVML device handle, or None where NVML (or a GPU) is not there."""
    if pynvml is None:
        return None
    try:
        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:
        return None


class PowerSampler:
    """Samples board power and NVML memory in a daemon thread between `start()` and `stop()`."""

    def __init__(self, device_index: int = 0, interval_s: float = 0.05):
        self.interval_s = interval_s
        self._handle = nvml_handle(device_index)
        self._samples: list[tuple[float, float]] = []  # (perf_counter s, watts)
        self._max_mem_used_b = 0
        self._energy_start_mj: int | None = None
        self._energy_end_mj: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t_start = 0.0
        self._t_stop = 0.0

    @property
    def available(self) -> bool:
        return self._handle is not None

    def _sample(self) -> None:
        h = self._handle
        try:
            w = pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0  # milliwatts → watts
            self._samples.append((time.perf_counter(), w))
            used = pynvml.nvmlDeviceGetMemoryInfo(h).used
            self._max_mem_used_b = max(self._max_mem_used_b, int(used))
        except pynvml.NVMLError:  # a transient read failure: the integral just gets coarser
            return

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def _energy_counter_mj(self) -> int | None:
        try:
            return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except Exception:
            return None

    def start(self) -> PowerSampler:
        self._t_start = time.perf_counter()
        if self.available:
            self._energy_start_mj = self._energy_counter_mj()
            self._thread = threading.Thread(target=self._loop, name="power-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._t_stop = time.perf_counter()
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=2.0)
            self._sample()  # one last reading at the end of the window
            self._energy_end_mj = self._energy_counter_mj()

    def __enter__(self) -> PowerSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def result(self) -> dict[str, Any]:
        """Energy and power over the sampled window; `available: false` without NVML."""
        duration = self._t_stop - self._t_start
        if not self.available or len(self._samples) < 2:
            return {"available": False, "duration_s": duration}
        ts = [t for t, _ in self._samples]
        ws = [w for _, w in self._samples]
        trap = sum((ts[i + 1] - ts[i]) * (ws[i + 1] + ws[i]) / 2 for i in range(len(ts) - 1))
        span = ts[-1] - ts[0]
        out: dict[str, Any] = {
            "available": True,
            "duration_s": duration,
            "samples": len(ws),
            "energy_trapezoid_j": trap,
            "mean_power_w": trap / span if span > 0 else ws[-1],
            "max_power_w": max(ws),
            "max_nvml_used_gib": self._max_mem_used_b / 2**30,
        }
        if self._energy_start_mj is not None and self._energy_end_mj is not None:
            out["energy_counter_j"] = (self._energy_end_mj - self._energy_start_mj) / 1000.0
        out["energy_j"] = out.get("energy_counter_j", trap)
        return out
