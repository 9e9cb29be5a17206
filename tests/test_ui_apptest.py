"""The Streamlit planner's page logic, run headless with `streamlit.testing.v1.AppTest`.

Inputs go in through the real widgets (file uploaders, number inputs); we check what the page
shows — the scenario it built, inline errors, the numbers on the metric cards — against the same
library calls and the CLI's `--json` output for the same scenario.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from simulator.scenario import Scenario, parse_scenario, scenario_to_yaml  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "planner_ui" / "app.py"
CONFIGS = Path(__file__).resolve().parents[1] / "models" / "configs"
TIMEOUT_S = 120


def start(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    return at


def built_scenario(at: AppTest) -> Scenario | None:
    return at.session_state["scenario"]


def sidebar_errors(at: AppTest) -> list[str]:
    return [e.value for e in at.sidebar.error]


def upload(at: AppTest, key: str, name: str, content: bytes, mime: str) -> AppTest:
    at.file_uploader(key=key).set_value((name, content, mime))
    return at.run()


def assert_no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    for e in [*at.error, *at.sidebar.error]:
        assert "Traceback" not in e.value


# --------------------------------------------------------------------------- scenario builder


def test_app_starts_on_the_embedded_default_scenario():
    at = start()
    assert_no_traceback(at)
    assert not sidebar_errors(at)
    assert built_scenario(at) == Scenario()


def test_editing_a_widget_changes_exactly_that_scenario_field():
    at = start()
    at.number_input(key="sc.engine.max_num_seqs").set_value(64).run()
    at.number_input(key="sc.workload.arrival.rate_qps").set_value(9.5).run()
    want = Scenario().with_changes(**{"engine.max_num_seqs": 64, "workload.arrival.rate_qps": 9.5})
    assert built_scenario(at) == want
    assert_no_traceback(at)


def test_uploaded_scenario_yaml_reseeds_every_widget():
    text = scenario_to_yaml(Scenario().with_changes(**{"engine.max_num_seqs": 48, "gpu.name": "A100-80GB",
                                                       "slo.ttft_p99_s": 2.5, "horizon.months": 24}))
    at = upload(start(), "up.scenario", "mine.yaml", text.encode(), "application/x-yaml")
    assert_no_traceback(at)
    assert at.number_input(key="sc.engine.max_num_seqs").value == 48
    assert at.selectbox(key="sc.gpu.name").value == "A100-80GB"
    assert built_scenario(at) == parse_scenario(text)
    # the download button offers the scenario back, byte for byte what `scenario_to_yaml` writes
    assert parse_scenario(scenario_to_yaml(built_scenario(at))) == parse_scenario(text)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("engine:\n  max_num_seqs: -3\n", "engine.max_num_seqs"),
        ("engine: [1, 2\n", "not valid YAML"),
        ("gpu:\n  name: H100\n  colour: red\n", "gpu.colour"),
        ("!!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
    ],
)
def test_a_bad_scenario_upload_shows_one_line_inline_error(text, needle):
    at = upload(start(), "up.scenario", "bad.yaml", text.encode(), "application/x-yaml")
    assert_no_traceback(at)
    errors = sidebar_errors(at)
    assert any(needle in e for e in errors), errors
    assert all("\n" not in e for e in errors)
    assert built_scenario(at) == Scenario()  # the previous scenario stays in force


def test_an_uploaded_model_config_becomes_the_scenario_model():
    content = (CONFIGS / "Qwen2.5-7B.json").read_bytes()
    at = upload(start(), "up.config", "Qwen2.5-7B.json", content, "application/json")
    assert_no_traceback(at)
    s = built_scenario(at)
    assert Path(s.model.name).read_bytes() == content
    from models.catalog import load_model

    assert load_model(s.model.name).hidden_size == load_model("Qwen2.5-7B").hidden_size
    assert "Qwen2.5-7B (uploaded)" in at.selectbox(key="sc.model.name").options


@pytest.mark.parametrize(
    "content, needle",
    [
        (b'{"foo": 1}', "model"),
        (b"[1, 2, 3]", "not an object"),
        (b"\xff\xfe not json", "not JSON"),
        (json.dumps({"model_type": "llama", "hidden_size": -4}).encode(), "hidden_size"),
    ],
)
def test_a_config_that_is_not_a_model_shows_an_inline_error(content, needle):
    at = upload(start(), "up.config", "config.json", content, "application/json")
    assert_no_traceback(at)
    errors = sidebar_errors(at)
    assert any(needle in e for e in errors), errors
    assert built_scenario(at).model.name == Scenario().model.name


def test_a_trace_with_wrong_columns_shows_an_inline_error():
    csv = b"time,input_len,output_len\n0.0,10,20\n0.5,11,21\n"
    at = upload(start(), "up.trace", "trace.csv", csv, "text/csv")
    assert_no_traceback(at)
    errors = sidebar_errors(at)
    assert any("missing columns" in e for e in errors), errors
    assert built_scenario(at).workload.arrival.kind == "poisson"


def test_a_valid_trace_switches_arrivals_to_trace_replay():
    rows = [{"arrival_time_s": 0.25 * i, "prompt_tokens": 100 + i, "output_tokens": 20 + i} for i in range(40)]
    jsonl = "\n".join(json.dumps(r) for r in rows).encode()
    at = upload(start(), "up.trace", "t.jsonl", jsonl, "application/jsonl")
    assert_no_traceback(at)
    arrival = built_scenario(at).workload.arrival
    assert arrival.kind == "trace"
    assert Path(arrival.trace_path).read_bytes() == jsonl
    assert not sidebar_errors(at)


def test_cross_field_mistake_is_shown_next_to_its_section():
    at = start()
    at.selectbox(key="sc.workload.classes.0.prompt_tok.kind").set_value("uniform").run()
    at.number_input(key="sc.workload.classes.0.prompt_tok.low").set_value(900).run()
    at.number_input(key="sc.workload.classes.0.prompt_tok.high").set_value(100).run()
    assert_no_traceback(at)
    assert built_scenario(at) is None
    assert any("below `low`" in e for e in sidebar_errors(at)), sidebar_errors(at)
    # the page says what to do instead of showing numbers for a scenario that does not exist
    assert any("Fix the scenario inputs" in w.value for w in at.warning)


def test_scenario_download_round_trips():
    at = start()
    at.number_input(key="sc.horizon.months").set_value(36).run()
    dl = [d for d in at.sidebar.get("download_button")]
    assert dl, "no scenario download button"
    s = built_scenario(at)
    assert yaml.safe_load(scenario_to_yaml(s))["horizon"]["months"] == 36


# --------------------------------------------------------------------------- numbers = the CLI's


def cli_json(*args: str) -> dict:
    """Run the real `lifecost` typer app in-process and parse its `--json` stdout."""
    from typer.testing import CliRunner

    from planner_ui.cli import app

    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code in (0, 1), res.output
    return json.loads(res.stdout)


def cards(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# A small, fast scenario (the capacity bisection simulates it a dozen times).
SMALL = Scenario().with_changes(**{"name": "small", "workload.num_requests": 400})


def start_with(s: Scenario, view: str | None = None) -> AppTest:
    at = upload(start(), "up.scenario", f"{s.name}.yaml", scenario_to_yaml(s).encode(), "application/x-yaml")
    if view:
        at.segmented_control(key="view").set_value(view).run()
    return at


def test_overview_numbers_equal_the_cli_json(tmp_path):
    from planner_ui import ui_charts as ch

    path = tmp_path / "small.yaml"
    path.write_text(scenario_to_yaml(SMALL))
    at = start_with(SMALL)
    assert_no_traceback(at)
    shown = cards(at)

    sim = cli_json("simulate", str(path))
    assert shown["Throughput"] == ch.fmt_tok_s(sim["throughput_tok_s"])
    assert shown["TTFT p99"] == ch.fmt_ms(sim["ttft_s"]["p99"])
    assert shown["TPOT p99"] == ch.fmt_ms(sim["tpot_s"]["p99"])
    assert shown["E2E p99"] == ch.fmt_s(sim["e2e_s"]["p99"])
    assert shown["KV cache peak"] == ch.fmt_pct(sim["kv_peak_frac"])

    cost = cli_json("cost", str(path))["scenarios"][0]["totals"]
    assert shown["Lifetime cost"] == ch.fmt_usd(cost["total_usd"])
    assert shown["$ / 1M tokens"] == ch.fmt_usd(cost["usd_per_1m_tok"])
    assert shown["GPUs at peak"] == ch.fmt_int(cost["gpus_peak"])
    assert shown["Capacity / replica"] == ch.fmt_qps(cost["capacity_qps_per_replica"])
    be = cost["break_even_month"]
    assert shown["Break-even month"] == ("—" if be is None else f"month {be}")

    train = cli_json("train", str(path))
    assert shown["Cost / run"] == ch.fmt_usd(train["usd_expected"]["mid"])
    assert shown["Memory / GPU"] == ch.fmt_gib(train["needed_gib"])
    assert shown["Trainable params"] == f"{train['trainable_params'] / 1e6:,.1f} M"


def test_capacity_numbers_equal_the_cli_json(tmp_path):
    from planner_ui import ui_charts as ch

    path = tmp_path / "small.yaml"
    path.write_text(scenario_to_yaml(SMALL))
    at = start_with(SMALL, "Capacity")
    assert_no_traceback(at)
    peak = at.number_input(key=f"cap.peak_qps.{SMALL.digest()}").value
    shown = cards(at)
    cap = cli_json("capacity", str(path), "--peak-qps", str(peak), "--workers", "1", "--no-headroom")
    assert cap["meets_slo"]
    assert shown["Replicas"] == ch.fmt_int(cap["replicas"])
    assert shown["GPUs"] == ch.fmt_int(cap["total_gpus"])
    assert shown["Capacity / replica"] == ch.fmt_qps(cap["max_qps_per_replica"])
    assert shown["$ / hour"] == ch.fmt_usd(cap["usd_per_hour"])
    assert shown["Fleet-verified"] == ("yes" if cap["verified_by_fleet_simulation"] else "no")
    assert len(at.get("plotly_chart")) >= 2  # headroom curve and GPUs vs peak rate


def test_an_impossible_slo_shows_the_error_next_to_the_slo_inputs():
    impossible = SMALL.with_changes(**{"slo.ttft_p99_s": 1e-4})  # 0.1 ms: below any prefill
    for view in (None, "Capacity"):
        at = start_with(impossible, view)
        assert_no_traceback(at)
        errors = sidebar_errors(at)
        assert any("slo" in e.lower() for e in errors), (view, errors)
        assert any("slo" in e.value.lower() for e in at.main.error), view


def test_compare_shows_one_column_per_scenario_with_the_cost_rollup():
    from planner_ui import ui_charts as ch
    from simulator.cost import capacity_from_simulation, lifetime_cost

    at = start_with(SMALL, "Compare")
    at.button(key="cmp_add_current").click().run()
    at.button(key="cmp_variant_int4-awq").click().run()
    assert_no_traceback(at)
    variant = SMALL.with_changes(name="small-int4-awq", **{"model.quant": "int4-awq"})
    want = [lifetime_cost(s, capacity_from_simulation(s)).totals for s in (SMALL, variant)]
    shown = [m.value for m in at.metric if m.label == "Lifetime cost"]
    assert shown == [ch.fmt_usd(t["total_usd"]) for t in want]
    assert len(at.get("plotly_chart")) >= 4


def test_every_view_renders_without_error_on_the_default_scenario():
    at = start()
    for view in ("Overview", "Compare", "Capacity", "Inside one run", "Calibration"):
        at.segmented_control(key="view").set_value(view).run()
        assert_no_traceback(at)
        assert not at.main.error, (view, [e.value for e in at.main.error])


def test_calibration_view_shows_the_profile_in_use_and_its_fidelity(tmp_path):
    from models.profile import Ceilings, FitStats, Profile, ProfileEngine, ProfileGpu, StepTimeCoeffs, save_profile

    profile = Profile(
        gpu=ProfileGpu(name="NVIDIA H100 80GB HBM3", catalog_name="H100-SXM", memory_gib=79.6),
        engine=ProfileEngine(name="vllm", version="test"),
        created_utc="2026-11-22T19:00:00Z",
        command="written by tests/test_ui_apptest.py",
        ceilings=Ceilings(gemm_bf16_tflops=770.0, hbm_copy_tb_s=2.96, h2d_gb_s=55.0),
        step_time=StepTimeCoeffs(c0_s=0.004, c1=1.3, c2=1.1, c3=1.6, c4=1.2, fit=FitStats(n_points=24, r2=0.991, mape=0.04),
                                 fit_model="Llama-3.2-1B"),
    )
    path = save_profile(profile, tmp_path / "vllm.json")
    (tmp_path / "fidelity.json").write_text(json.dumps({"serving": [
        {"model": "Llama-3.2-1B", "workload": "burst n=64", "set": "fit",
         "metrics": {"ttft_s_p50": {"measured": 0.050, "predicted": 0.053, "error": 0.06}}},
        {"model": "Llama-3.2-3B", "workload": "poisson 4 req/s", "set": "held-out",
         "metrics": {"output_throughput_tok_s": {"measured": 900.0, "predicted": 820.0, "error": -0.089}}},
    ], "training": []}))
    at = start()
    at.text_input(key="sc.engine.profile").set_value(str(path)).run()
    at.segmented_control(key="view").set_value("Calibration").run()
    assert_no_traceback(at)
    assert any("vllm" in s.value and "H100" in s.value for s in at.success)
    shown = cards(at)
    assert shown["bf16 GEMM"] == "770 TFLOP/s" and shown["HBM copy"] == "2.96 TB/s"
    assert len(at.get("plotly_chart")) == 3  # decode step curve, fitted coefficients, serving fidelity scatter

    at.text_input(key="sc.engine.profile").set_value("roofline").run()
    assert any("roofline (uncalibrated)" in i.value for i in at.info)

    # auto on the H100: the committed transformers-CB Profile is a fit of another engine, named to be used
    at.text_input(key="sc.engine.profile").set_value("auto").run()
    assert_no_traceback(at)
    assert any("fit of another engine (transformers-cb)" in i.value and "measured step model" in i.value for i in at.info)
    at.text_input(key="sc.engine.profile").set_value("h100-sxm/transformers-cb").run()
    assert any("transformers-cb" in s.value for s in at.success)


def test_capacity_report_downloads_are_the_cli_report(tmp_path):
    from typer.testing import CliRunner

    from planner_ui import ui_calls
    from planner_ui.cli import app

    at = start_with(SMALL, "Capacity")
    at.button(key="cap_build_report").click().run()
    assert_no_traceback(at)
    labels = [d.label for d in at.get("download_button")]
    assert "Download report.html" in labels and "Download report.md" in labels

    peak = at.number_input(key=f"cap.peak_qps.{SMALL.digest()}").value
    path, out = tmp_path / "small.yaml", tmp_path / "report.md"
    path.write_text(scenario_to_yaml(SMALL))
    res = CliRunner().invoke(app, ["report", str(path), "-o", str(out), "--peak-qps", str(peak), "--workers", "1"])
    assert res.exit_code == 0, res.output
    html, md = ui_calls.report_files(SMALL.digest(), SMALL, float(peak))
    assert md == out.read_text()
    assert html.lstrip().lower().startswith("<!doctype html")


def test_a_model_that_does_not_fit_is_reported_once_next_to_the_model_field():
    at = start_with(SMALL.with_changes(**{"model.name": "Llama-3.1-70B"}))  # bf16 70B on one 80 GB GPU
    assert_no_traceback(at)
    page = [e.value for e in at.main.error]
    assert len(page) == len(set(page)) == 1 and "GiB" in page[0], page
    assert any("model.name" in e for e in sidebar_errors(at))


def test_inside_one_run_shows_the_cluster_and_reasoning_split_of_the_cli_summary(tmp_path):
    from planner_ui import ui_charts as ch

    think = {"kind": "lognormal", "mean": 800, "sigma": 0.5, "low": 16, "high": 4000}
    s = SMALL.with_changes(**{"cluster.replicas": 2, "workload.arrival.rate_qps": 12.0,
                              "workload.classes": [{"name": "chat", "reasoning": {"on_frac": 0.3, "thinking_tok": think}}]})
    path = tmp_path / "cluster.yaml"
    path.write_text(scenario_to_yaml(s))
    summary = cli_json("simulate", str(path))
    at = start_with(s, "Inside one run")
    assert_no_traceback(at)
    shown = cards(at)
    assert shown["Replicas used"] == "2"
    assert shown["GPU-hours provisioned"] == f"{summary['cluster']['gpu_seconds_provisioned'] / 3600:,.2f}"
    assert shown["KV cache mean"] == ch.fmt_pct(summary["kv_mean_frac"])
    table = at.dataframe[0].value  # reasoning on / off
    assert dict(zip(table["requests"], table["count"])) == {k: v["num_requests"] for k, v in summary["reasoning"].items()}
    assert len(at.get("plotly_chart")) == 4  # KV + batch, TTFT, TPOT, E2E by reasoning


def test_inside_one_run_shows_speculation_and_offload_as_the_cli_reports_them(tmp_path):
    from planner_ui import ui_charts as ch
    from simulator.speculative import expected_tok_per_step

    s = SMALL.with_changes(**{"speculative.method": "eagle", "offload.enabled": True,
                              "workload.classes": [{"name": "chat", "prefix": {"num_prefixes": 50, "prefix_tok": 1000, "share_prob": 0.8}}]})
    path = tmp_path / "levers.yaml"
    path.write_text(scenario_to_yaml(s))
    summary = cli_json("simulate", str(path))
    at = start_with(s, "Inside one run")
    assert_no_traceback(at)
    shown = {m.label: (m.value, m.delta) for m in at.metric}
    assert shown["Target steps"][0] == ch.fmt_int(summary["speculative"]["target_steps"])
    assert shown["Tokens / target step"][1].startswith(f"analytic {expected_tok_per_step(0.7, 4):.2f}")
    assert shown["Prefix hits in HBM"][0] == ch.fmt_pct(summary["offload"]["hbm_hit_frac"])
    assert shown["Prefill saved"][0] == ch.fmt_s(summary["offload"]["prefill_saved_s"])
    assert len(at.get("plotly_chart")) == 5  # KV + batch, tier traffic, tokens per step, TTFT, TPOT


def test_capacity_search_over_tensor_parallelism_equals_the_cli(tmp_path):
    from planner_ui import ui_charts as ch

    path = tmp_path / "small.yaml"
    path.write_text(scenario_to_yaml(SMALL))
    at = start_with(SMALL, "Capacity")
    at.multiselect(key="cap.search").set_value(["tp"]).run()
    assert_no_traceback(at)
    peak = at.number_input(key=f"cap.peak_qps.{SMALL.digest()}").value
    cap = cli_json("capacity", str(path), "--peak-qps", str(peak), "--search", "tp", "--workers", "1", "--no-headroom")
    shown = cards(at)
    assert shown["GPUs"] == ch.fmt_int(cap["total_gpus"])
    assert shown["$ / hour"] == ch.fmt_usd(cap["usd_per_hour"])
    assert any(f"gpu.tensor_parallel** = {cap['config']['gpu.tensor_parallel']}" in x.value for x in at.success)
    assert len(at.dataframe[-1].value) == 4  # TP 1, 2, 4, 8 in the configurations table
