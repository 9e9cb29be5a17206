"""`lifecost train` / `lifecost cost` on the example scenarios: tables, JSON, exit codes, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from models.errors import LifecostError
from planner_ui import cli_plan

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()
    cli_plan.register(a)
    return a


def _json(result) -> dict:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    "example, fits",
    [("llama8b_lora_h100.yaml", True), ("llama8b_lora_rtx4090.yaml", True), ("llama70b_qlora_a100.yaml", True), ("llama70b_full_h100.yaml", False)],
)
def test_train_runs_every_example_and_exits_1_only_when_it_does_not_fit(app, example, fits):
    result = runner.invoke(app, ["train", str(EXAMPLES / example), "--json"])
    data = _json(result)
    assert data["fits"] is fits
    assert result.exit_code == (0 if fits else 1)
    assert data["verdict"].startswith("fits" if fits else "does not fit: needs")
    labels = [s["label"] for s in data["steps"]]
    assert labels[:3] == ["tokens", "FLOPs/token", "FLOPs"] and labels[-1] == "cost"
    assert data["steps"][0]["value"] == 5000 * 3 * 1200


def test_train_table_shows_the_arithmetic_and_the_verdict(app):
    result = runner.invoke(app, ["train", str(EXAMPLES / "llama8b_lora_h100.yaml")], env={"COLUMNS": "240"})
    assert result.exit_code == 0
    out = result.stdout
    assert "5,000 samples × 3 epochs × 1,200 tokens" in out and "18 M tok" in out
    assert "fits: needs" in out and "GPU-hours" in out and "$" in out


def test_train_ranges_give_bands(app):
    result = runner.invoke(app, ["train", "--json", "--mfu", "0.3:0.5", "--mean-tokens", "1000:1400"])
    data = _json(result)
    assert data["usd"]["low"] < data["usd"]["mid"] < data["usd"]["high"]
    assert data["dataset_tok"]["low"] == 5000 * 3 * 1000


def test_train_bad_range_is_a_user_error(app):
    result = runner.invoke(app, ["train", "--mfu", "fast"])
    assert isinstance(result.exception, LifecostError) and "--mfu" in str(result.exception)


def test_cost_with_a_given_capacity_prints_months_and_totals(app):
    result = runner.invoke(app, ["cost", str(EXAMPLES / "llama8b_lora_h100.yaml"), "--months", "6", "--capacity-qps", "12", "--json"])
    data = _json(result)
    (sc,) = data["scenarios"]
    assert len(sc["months"]) == 6 and sc["totals"]["months"] == 6
    assert sc["totals"]["total_usd"] == pytest.approx(sum(m["total_usd"] for m in sc["months"]))
    assert sc["training"]["fits"] is True
    assert "compare" not in data


def test_cost_compares_several_scenarios_using_the_simulated_capacity(app):
    result = runner.invoke(
        app,
        ["cost", str(EXAMPLES / "llama8b_lora_h100.yaml"), str(EXAMPLES / "llama70b_qlora_a100.yaml"), "--months", "3", "--requests", "200", "--json"],
    )
    data = _json(result)
    names = [s["totals"]["scenario"] for s in data["scenarios"]]
    assert names == ["llama8b-lora-h100", "llama70b-qlora-a100"]
    assert set(data["compare"]) == set(names)
    for s in data["scenarios"]:
        assert s["totals"]["capacity_source"].startswith("simulated")
    table = runner.invoke(app, ["cost", str(EXAMPLES / "llama8b_lora_h100.yaml"), str(EXAMPLES / "llama70b_qlora_a100.yaml"), "--months", "3", "--capacity-qps", "5"], env={"COLUMNS": "240"})
    assert table.exit_code == 0 and "comparison" in table.stdout and "break-even month" in table.stdout


def test_cost_refuses_a_zero_month_horizon_and_a_missing_price(app, tmp_path):
    result = runner.invoke(app, ["cost", "--months", "0", "--capacity-qps", "5"])
    assert isinstance(result.exception, LifecostError) and "--months" in str(result.exception)
    bad = tmp_path / "rtx_on_aws.yaml"
    bad.write_text("gpu: {name: RTX-4090}\nprices: {provider: aws}\n")
    result = runner.invoke(app, ["cost", str(bad), "--capacity-qps", "5"])
    assert isinstance(result.exception, LifecostError)
    assert "no on_demand price for RTX-4090 on aws" in str(result.exception) and "runpod/RTX-4090/on_demand" in str(result.exception)
    zero = tmp_path / "zero.yaml"
    zero.write_text("horizon:\n  months: 0\n")
    result = runner.invoke(app, ["cost", str(zero), "--capacity-qps", "5"])
    assert isinstance(result.exception, LifecostError) and "horizon.months" in str(result.exception)


def test_failed_attempts_and_failure_rate_options_reach_the_plan(app):
    base = _json(runner.invoke(app, ["train", "--json"]))
    redo = _json(runner.invoke(app, ["train", "--json", "--attempt-failure-prob", "0.5", "--mtbf-gpu-h", "2"]))
    assert redo["expected_attempts"] == pytest.approx(2.0)
    assert redo["usd_expected"]["mid"] == pytest.approx(2 * redo["usd"]["mid"])
    assert redo["expected_failures"] > base["expected_failures"] and redo["wall_h"]["mid"] > base["wall_h"]["mid"]
    bad = runner.invoke(app, ["train", "--attempt-failure-prob", "1"])
    assert isinstance(bad.exception, LifecostError) and "attempt_failure_prob" in str(bad.exception)
    cost = _json(runner.invoke(app, ["cost", "--json", "--months", "2", "--capacity-qps", "20", "--attempt-failure-prob", "0.5"]))
    first = cost["scenarios"][0]["months"][0]
    assert first["failed_attempts_usd"] == pytest.approx(first["training_usd"])
