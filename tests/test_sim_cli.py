"""`lifecost simulate`: table by default, summary JSON with --json, parquet with --out, exit 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from planner_ui import cli_sim

runner = CliRunner()
LIFECOST = Path(sys.executable).parent / "lifecost"


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()
    cli_sim.register(a)

    @a.callback()
    def _root() -> None:  # keep `simulate` a named subcommand, as in the real app
        pass

    return a


@pytest.fixture()
def small_yaml(tmp_path) -> Path:
    p = tmp_path / "small.yaml"
    p.write_text("name: small\nmodel:\n  name: Llama-3.2-1B\nworkload:\n  num_requests: 200\n")
    return p


def test_json_summary_has_the_documented_keys_and_follows_the_overrides(app, small_yaml):
    result = runner.invoke(app, ["simulate", str(small_yaml), "--requests", "150", "--qps", "6", "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("throughput_tok_s", "throughput_req_s", "kv_peak_frac", "preemptions", "sim_wall_s"):
        assert key in data
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        assert set(data[key]) >= {"p50", "p90", "p99"}
    assert data["finished"] == 150
    again = json.loads(runner.invoke(app, ["simulate", str(small_yaml), "--requests", "150", "--qps", "6", "--seed", "3", "--json"]).stdout)
    assert {k: v for k, v in again.items() if k != "sim_wall_s"} == {k: v for k, v in data.items() if k != "sim_wall_s"}


def test_default_output_is_a_table_and_the_scenario_is_optional(app):
    result = runner.invoke(app, ["simulate", "--requests", "100"])
    assert result.exit_code == 0, result.output
    assert "throughput tok/s" in result.stdout and "TTFT ms" in result.stdout


def test_out_writes_per_request_and_per_step_frames(app, small_yaml, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["simulate", str(small_yaml), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    req = pd.read_parquet(out / "requests.parquet")
    steps = pd.read_parquet(out / "steps.parquet")
    assert len(req) == 200 and {"ttft_s", "tpot_s", "e2e_s", "queue_s", "preemptions", "prefix_hit_tok", "met_slo"} <= set(req.columns)
    assert {"start_s", "num_steps", "duration_s", "batch_size", "prefill_tok", "decode_tok", "kv_blocks_used"} <= set(steps.columns)
    assert json.loads((out / "summary.json").read_text())["finished"] == 200
    assert not list(out.glob(".*tmp"))


def test_bad_input_exits_2_with_one_line_on_stderr(small_yaml, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine:\n  block_size_tok: 0\n")
    for args, field in (
        (["simulate", str(small_yaml), "--qps", "-2"], "--qps"),
        (["simulate", str(bad)], "engine.block_size_tok"),
        (["simulate", str(tmp_path / "missing.yaml")], "scenario"),
    ):
        proc = subprocess.run([str(LIFECOST), *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and field in lines[0], proc.stderr
