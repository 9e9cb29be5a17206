"""The Scenario schema: the embedded default, round trips, and errors that name field and line."""

from pathlib import Path

import pytest

from models.errors import LifecostError
from simulator.scenario import Scenario, load_scenario, parse_scenario, scenario_to_yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_default_yaml_is_the_embedded_default():
    assert load_scenario(EXAMPLES / "default.yaml") == load_scenario(None) == Scenario()


def test_every_example_scenario_validates():
    for path in EXAMPLES.glob("*.yaml"):
        assert isinstance(load_scenario(path), Scenario), path


def test_yaml_round_trip_preserves_the_scenario_and_its_digest():
    s = Scenario().with_changes(**{"engine.max_num_seqs": 64, "model.quant": "int4-awq"})
    back = parse_scenario(scenario_to_yaml(s))
    assert back == s and back.digest() == s.digest() != Scenario().digest()


def test_a_wrong_value_names_the_field_and_its_line():
    text = "name: x\nengine:\n  block_size_tok: 0\n"
    with pytest.raises(LifecostError) as e:
        parse_scenario(text, source="s.yaml")
    assert "s.yaml:3 engine.block_size_tok" in str(e.value)


def test_an_unknown_key_is_refused_with_its_line():
    with pytest.raises(LifecostError) as e:
        parse_scenario("gpu:\n  name: H100-SXM\n  tensor_paralel: 2\n", source="s.yaml")
    assert "s.yaml:3 gpu.tensor_paralel" in str(e.value)


def test_malformed_yaml_names_the_line():
    with pytest.raises(LifecostError) as e:
        parse_scenario("model:\n  name: [unclosed\n", source="bad.yaml")
    assert "bad.yaml:" in str(e.value) and "YAML" in str(e.value)


def test_a_trace_arrival_without_a_path_is_refused():
    with pytest.raises(LifecostError, match="trace_path"):
        parse_scenario("workload:\n  arrival:\n    kind: trace\n")


def test_a_missing_or_huge_file_is_a_one_line_error(tmp_path):
    with pytest.raises(LifecostError, match="no such file"):
        load_scenario(tmp_path / "nope.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("#" * 1_000_001)
    with pytest.raises(LifecostError, match="at most"):
        load_scenario(big)


def test_with_changes_revalidates():
    with pytest.raises(Exception):
        Scenario().with_changes(**{"engine.gpu_memory_utilization": 1.5})


def test_a_trace_replays_at_its_own_timestamps_unless_a_rate_is_given():
    own = parse_scenario("workload:\n  arrival:\n    kind: trace\n    trace_path: t.csv\n")
    scaled = parse_scenario("workload:\n  arrival:\n    kind: trace\n    trace_path: t.csv\n    rate_qps: 2\n")
    assert own.workload.arrival.rate_qps is None and scaled.workload.arrival.rate_qps == 2
    assert Scenario().workload.arrival.rate_qps == 4.0  # synthetic arrivals keep their default
