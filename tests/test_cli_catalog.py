"""`lifecost models|gpus|fit` run as a user runs them: the console script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LIFECOST = Path(sys.executable).with_name("lifecost")


def run(*args: str) -> subprocess.CompletedProcess:
    if not LIFECOST.exists():
        pytest.skip("console script not installed")
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(LIFECOST), *args], capture_output=True, text=True, timeout=120, env=env)


def test_models_list_json_has_every_catalog_model():
    r = run("models", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert len(rows) == 11
    assert rows["Llama-3.1-8B"]["params_total"] == 8_030_261_248
    assert rows["Mixtral-8x7B-v0.1"]["params_active"] < rows["Mixtral-8x7B-v0.1"]["params_total"]


def test_models_show_json_reports_the_exact_figures():
    r = run("models", "show", "llama-3.1-8b", "--lora-r", "16", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["params_total"] == d["params_active"] == 8_030_261_248
    assert d["kv_bytes_per_token"] == 131_072
    assert d["lora_trainable_params"] == 41_943_040
    assert d["flops_per_token_fwd"] == d["linear_flops_per_token"] > 1.5e10


def test_models_show_reads_a_config_path_and_fp8_kv(tmp_path):
    from models.catalog import CONFIG_DIR

    path = tmp_path / "config.json"
    path.write_text((CONFIG_DIR / "Llama-3.1-70B.json").read_text())
    r = run("models", "show", str(path), "--kv-dtype", "fp8", "--lora-r", "8", "--lora-targets", "attention", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["kv_bytes_per_token"] == 327_680 // 2
    assert d["lora_targets"] == "attention" and d["lora_trainable_params"] > 0


def test_gpus_list_and_show():
    r = run("gpus", "list", "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 10
    r = run("gpus", "show", "NVIDIA H100 80GB HBM3", "--json")
    d = json.loads(r.stdout)
    assert d["name"] == "H100-SXM" and d["bf16_tflops"] == 989.4 and "datasheet" in d["source"]


def test_fit_serving_that_fits_exits_0_with_kv_tokens():
    r = run("fit", "Llama-3.1-8B", "--gpu", "h100", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["mode"] == "serving" and d["fits"] is True
    assert d["max_kv_tokens"] > 400_000 and d["needed_gib"] < d["available_gib"]
    assert d["verdict"].startswith("fits: needs ")


def test_fit_that_does_not_fit_exits_1_with_the_verdict():
    r = run("fit", "Llama-3.1-70B", "--gpu", "L4")
    assert r.returncode == 1
    assert "does not fit: needs" in r.stdout and "GiB, has" in r.stdout
    assert "Traceback" not in r.stderr


def test_fit_training_json_breaks_memory_down():
    r = run("fit", "Llama-3.1-8B", "--gpu", "A100-40GB", "--train", "qlora", "--seq", "4096", "--micro-batch", "2",
            "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    for key in ("weights_gib", "adapters_gib", "gradients_gib", "optimizer_gib", "activations_gib", "logits_gib",
                "overhead_gib", "needed_gib", "available_gib"):
        assert key in d
    assert d["mode"] == "training" and d["method"] == "qlora" and d["trainable_params"] == 41_943_040
    full = json.loads(run("fit", "Llama-3.1-8B", "--gpu", "A100-40GB", "--train", "full", "--json").stdout)
    assert full["fits"] is False and full["needed_gib"] > 16 * 8.03e9 / 2**30


@pytest.mark.parametrize("args,fragment", [
    (("models", "show", "llama-9b"), "did you mean"),
    (("gpus", "show", "H1OO"), "unknown gpu"),
    (("fit", "Llama-3.1-8B", "--gpu", "h100", "--quant", "int3"), "quant"),
    (("fit", "Llama-3.1-8B", "--gpu", "h100", "--train", "dpo"), "method"),
    (("fit", "Llama-3.1-8B", "--gpu", "h100", "--gpu-memory-utilization", "1.5"), "gpu_memory_utilization"),
    (("models", "show", "Llama-3.1-8B", "--lora-r", "0"), "lora_r"),
])
def test_user_errors_exit_2_with_one_line_and_no_traceback(args, fragment):
    r = run(*args)
    assert r.returncode == 2
    assert fragment in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
