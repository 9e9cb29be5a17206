"""`lifecost capacity` and `lifecost report` end to end on a tiny scenario file: JSON on stdout,
exit code 1 with the closest configuration when the SLO cannot be met, user errors as
LifecostError (which `planner_ui.cli.main` prints as one line with exit code 2)."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from models.errors import LifecostError
from planner_ui import cli_capacity
from simulator.scenario import Scenario, scenario_to_yaml


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()
    cli_capacity.register(app)
    return app


@pytest.fixture()
def scenario_file(tmp_path):
    s = Scenario().with_changes(**{"name": "tiny", "model.name": "Llama-3.2-1B", "workload.num_requests": 500, "engine.profile": "roofline"})
    path = tmp_path / "tiny.yaml"
    path.write_text(scenario_to_yaml(s))
    return path


def run(app, args):
    return CliRunner().invoke(app, args, catch_exceptions=True)


def test_capacity_prints_a_verified_answer_as_json(app, scenario_file):
    res = run(app, ["capacity", str(scenario_file), "--peak-qps", "400", "--slo-ttft-p99", "0.25", "--slo-tpot-p99", "0.002", "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["meets_slo"] and data["verified_by_fleet_simulation"]
    assert data["replicas"] >= 2 and data["total_gpus"] == data["replicas"] * data["gpus_per_replica"]
    assert data["slo"]["tpot_p99_s"] == 0.002
    rates = [row["rate_qps"] for row in data["headroom"]]
    assert rates == sorted(rates) and 400 in rates


def test_an_unmeetable_slo_exits_1_and_names_the_closest_configuration(app, scenario_file):
    res = run(app, ["capacity", str(scenario_file), "--peak-qps", "10", "--slo-tpot-p99", "0.0003", "--search", "gpu=H100-SXM/L4", "--workers", "1"])
    assert res.exit_code == 1
    assert "no configuration meets the SLO" in res.stdout
    assert "p99 TPOT" in res.stdout and "vs 0.3 ms" in res.stdout and "H100-SXM" in res.stdout


def test_bad_flags_are_user_errors(app, scenario_file):
    res = run(app, ["capacity", str(scenario_file), "--peak-qps", "10", "--attainment", "1.5"])
    assert isinstance(res.exception, LifecostError) and "--attainment" in str(res.exception)
    res = run(app, ["capacity", str(scenario_file), "--peak-qps", "10", "--executor", "dask"])
    assert isinstance(res.exception, LifecostError) and "executor" in str(res.exception)
    res = run(app, ["report", str(scenario_file), "-o", "report.pdf"])
    assert isinstance(res.exception, LifecostError) and "report.html or report.md" in str(res.exception)


def test_report_writes_markdown_atomically(app, scenario_file, tmp_path):
    out = tmp_path / "r.md"
    res = run(app, ["report", str(scenario_file), "-o", str(out), "--peak-qps", "100", "--workers", "1"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert text.startswith("# lifecost capacity report — tiny") and "## Headroom" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
