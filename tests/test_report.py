"""The capacity report carries the key numbers in both formats, inlines plotly.js exactly once,
and is written atomically."""

from __future__ import annotations

import re

import pytest

from planner_ui.report import build_report, to_html, to_markdown, write_report
from simulator.scenario import Scenario


@pytest.fixture(scope="module")
def report():
    s = Scenario().with_changes(
        **{"name": "tiny-report", "model.name": "Llama-3.2-1B", "workload.num_requests": 500, "slo.ttft_p99_s": 0.25, "slo.tpot_p99_s": 0.002, "engine.profile": "roofline"}
    )
    return build_report(s, peak_qps=400.0)


def test_html_is_self_contained_with_plotly_inlined_once(report):
    page = to_html(report)
    assert len(re.findall(r"plotly\.js v\d", page)) == 1  # the library, once
    assert page.count("Plotly.newPlot") == 3  # cost per month, headroom, latency vs rate
    assert "<script src=" not in page  # nothing fetched from a CDN


def test_both_formats_carry_the_key_numbers(report):
    cap, train, cost = report.data["capacity"], report.data["training"], report.data["cost"]
    page, md = to_html(report), to_markdown(report)
    for text in (page, md):
        assert f"{cap['replicas']} replica(s) × {cap['gpus_per_replica']} GPU = {cap['total_gpus']} × H100-SXM" in text
        assert f"${cap['usd_per_hour']:,.2f}/hour" in text
        assert "18,000,000" in text  # training tokens: 5,000 samples × 3 epochs × 1,200 tokens
        assert f"${cost['total_usd']:,.0f} in total" in text
        assert "Roofline" in text  # the step-time model in use (engine.profile: roofline)
        assert "Headroom" in text and "Latency percentiles" in text
    assert cap["verified_by_fleet_simulation"]
    assert train["dataset_tok"]["mid"] == 18_000_000
    headroom_rates = [row["rate_qps"] for row in report.data["headroom"]]
    assert 400.0 in headroom_rates


def test_markdown_tables_are_well_formed(report):
    md = to_markdown(report)
    for block in re.findall(r"(?:^\|.*\|\n)+", md, flags=re.M):
        rows = block.strip("\n").split("\n")
        widths = {len(re.split(r"(?<!\\)\|", r)) for r in rows}
        assert len(widths) == 1, rows[:3]


def test_write_report_picks_the_format_by_suffix_and_leaves_no_temp_file(report, tmp_path):
    html_path = write_report(report, tmp_path / "r.html")
    md_path = write_report(report, tmp_path / "r.md")
    assert html_path.read_text().startswith("<!doctype html>")
    assert md_path.read_text().startswith("# lifecost capacity report — tiny-report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.md"]


def test_a_report_for_an_unmeetable_slo_names_the_miss_and_costs_nothing():
    s = Scenario().with_changes(**{"name": "too-tight", "model.name": "Llama-3.2-1B", "workload.num_requests": 300, "slo.tpot_p99_s": 0.0003, "engine.profile": "roofline"})
    rep = build_report(s, peak_qps=20.0)
    md = to_markdown(rep)
    assert "No configuration meets p99 TTFT ≤ 1 s, p99 TPOT ≤ 0.0003 s" in md
    assert re.search(r"Closest: gpu\.name = H100-SXM; p99 TPOT [\d.]+ ms vs 0\.3 ms", md)
    assert "Not computed: no configuration meets the SLO" in md
    assert rep.data["headroom"] is None and rep.data["cost"] == {}
    assert "Plotly.newPlot" not in to_html(rep)  # no fleet, no charts — and no plotly.js either


def test_the_profile_in_use_and_its_fidelity_are_reported(tmp_path):
    import json

    from models.profile import FitStats, Profile, ProfileEngine, ProfileGpu, StepTimeCoeffs, save_profile
    from planner_ui.report import Report, predictor_section

    profile = Profile(
        gpu=ProfileGpu(name="NVIDIA H100 80GB HBM3", catalog_name="H100-SXM"),
        engine=ProfileEngine(name="vllm", version="0.test"),
        created_utc="2026-11-22T00:00:00Z",
        command="lifecost calibrate fit --runs runs --out vllm.json",
        step_time=StepTimeCoeffs(c0_s=0.004, c1=1.3, c2=1.1, c3=1.6, c4=1.2, fit=FitStats(n_points=40, r2=0.97, mape=0.06)),
    )
    path = save_profile(profile, tmp_path / "vllm.json")
    s = Scenario().with_changes(**{"model.name": "Llama-3.2-1B", "engine.profile": str(path)})
    md = to_markdown(Report("t", [predictor_section(s)]))
    assert "Calibrated Profile H100-SXM/vllm" in md and "| fit MAPE | 0.06 |" in md
    assert "No fidelity report beside this Profile" in md
    fidelity = {"summary": {"serving held-out": {"runs": 4, "metrics": {"ttft_s_p99": {"n": 4, "mean_abs_error": 0.081, "max_abs_error": 0.19}}}}}
    (tmp_path / "fidelity.json").write_text(json.dumps(fidelity))
    md = to_markdown(Report("t", [predictor_section(s)]))
    assert "| serving held-out | ttft_s_p99 | 4 | 0.081 | 0.19 |" in md
