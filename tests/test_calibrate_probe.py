"""The probe and the power sampler on a machine without a GPU (CI): they say so, never invent.

On CPU the probe measures the CPU GEMM (fp32) and memory-copy path and records `gpu: null` with a
note; the power sampler reports `available: false` and no energy figure. The H100 values live in
models/profiles/h100-sxm/probe.json; here we check the record's shape and arithmetic.
"""

from __future__ import annotations

import json

import pytest
import torch

from calibrate.power import PowerSampler
from calibrate.probe import device_copy, gemm, gpu_identity, run_probe

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")


def test_probe_without_a_gpu_says_so_and_measures_the_cpu_path():
    rec = run_probe(quick=True)
    assert rec["kind"] == "probe" and rec["gpu"] is None and rec["device"] == "cpu"
    assert "no CUDA GPU" in rec["note"]
    assert "host_link" not in rec  # no host↔device link to measure on a CPU
    assert all(g["tflops"] > 0 and g["time_s"] > 0 for g in rec["gemm"])
    assert {g["shape"] for g in rec["gemm"]} == {"square", "decode"}
    assert rec["headline"]["gpu"] == "cpu" and rec["headline"]["device_copy_tb_s"] >= 0
    json.dumps(rec)


def test_gemm_and_copy_figures_are_their_byte_and_flop_counts_over_the_time():
    g = gemm(64, 96, 32, torch.device("cpu"), torch.float32, reps=3)
    assert g["tflops"] == pytest.approx(2 * 64 * 96 * 32 / g["time_s"] / 1e12)
    assert g["bytes"] == (64 * 32 + 32 * 96 + 64 * 96) * 4
    c = device_copy(1 << 20, torch.device("cpu"), reps=3)
    assert c["tb_s_read_write"] == pytest.approx(2 * (1 << 20) / c["time_s"] / 1e12)


def test_power_sampler_without_nvml_reports_unavailable_not_zero():
    assert gpu_identity() is None
    with PowerSampler(interval_s=0.01) as p:
        sum(range(10000))
    res = p.result()
    assert res["available"] is False and "energy_j" not in res and res["duration_s"] >= 0
