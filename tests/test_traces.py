"""Trace replay: the real shared traces load as they are, time-scale exactly, and bad files give
one-line errors naming the file, column and line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simulator.traces as traces
from models.errors import LifecostError
from simulator.traces import read_trace
from simulator.workload import mean_rate_qps

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
SHARED = {
    "splitwise_conv.csv": 19_366,
    "splitwise_code.csv": 8_819,
    "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv": 28_257,
}


def shared(name: str) -> Path:
    path = TRACES / name
    if not path.is_file():
        pytest.skip(f"shared trace {name} not found in {TRACES} (it lives beside the repo, in ../shared/traces)")
    return path


# --- the real traces ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["splitwise_conv.csv", "splitwise_code.csv"])
def test_splitwise_traces_load_at_their_own_timestamps(name):
    path = shared(name)
    raw = pd.read_csv(path)
    r = read_trace(path)
    assert len(r) == SHARED[name]
    assert np.array_equal(r.arrival_s, raw["arrived_at"].to_numpy())
    assert np.array_equal(r.prompt_tok, raw["num_prefill_tokens"].to_numpy())
    assert np.array_equal(r.output_tok, raw["num_decode_tokens"].to_numpy())
    assert r.class_names == (path.stem,) and np.all(r.class_id == 0) and np.all(r.prefix_id == -1)


@pytest.mark.parametrize("name", ["splitwise_conv.csv", "splitwise_code.csv"])
@pytest.mark.parametrize("target_qps", [0.5, 5.0, 40.0])
def test_splitwise_traces_time_scale_to_an_exact_mean_rate_keeping_their_burstiness(name, target_qps):
    path = shared(name)
    native, scaled = read_trace(path), read_trace(path, rate_qps=target_qps)
    assert mean_rate_qps(scaled.arrival_s) == pytest.approx(target_qps, rel=1e-12)
    gaps_native, gaps_scaled = np.diff(native.arrival_s), np.diff(scaled.arrival_s)
    assert gaps_scaled.std() / gaps_scaled.mean() == pytest.approx(gaps_native.std() / gaps_native.mean(), rel=1e-9)
    assert np.array_equal(native.prompt_tok, scaled.prompt_tok)


def test_the_conversation_trace_is_burstier_than_poisson():
    """Per-minute counts of a Poisson process have variance ≈ mean (dispersion 1); the real
    trace's rate drifts over the hour, so its per-minute counts are far more dispersed."""
    r = read_trace(shared("splitwise_conv.csv"))
    assert mean_rate_qps(r.arrival_s) == pytest.approx(19_365 / 3501.721937, rel=1e-9)
    per_minute = np.bincount((r.arrival_s // 60).astype(np.int64))
    assert per_minute.var() / per_minute.mean() > 5


def test_the_arxiv_lengths_file_replays_as_seeded_poisson_arrivals():
    path = shared("arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv")
    raw = pd.read_csv(path)
    r = read_trace(path, rate_qps=3.0, seed=1)
    assert len(r) == SHARED[path.name]
    assert np.array_equal(r.prompt_tok, raw["num_prefill_tokens"].to_numpy())
    assert mean_rate_qps(r.arrival_s) == pytest.approx(3.0, rel=0.03)
    assert np.array_equal(r.arrival_s, read_trace(path, rate_qps=3.0, seed=1).arrival_s)
    assert not np.array_equal(r.arrival_s, read_trace(path, rate_qps=3.0, seed=2).arrival_s)
    with pytest.raises(LifecostError, match=r"has no arrival times .*num_prefill_tokens.*give rate_qps"):
        read_trace(path)


def test_max_rows_keeps_the_first_rows():
    path = shared("splitwise_conv.csv")
    r = read_trace(path, max_rows=100, rate_qps=2.0)
    assert len(r) == 100 and mean_rate_qps(r.arrival_s) == pytest.approx(2.0, rel=1e-12)


def test_the_vidur_benchmark_workload_loads():
    path = Path(__file__).resolve().parents[2] / "shared" / "peers" / "vidur" / "workloads" / (
        "vidur_synthetic_fixed512x128_poisson_qps8_seed42_n10000.csv"
    )
    if not path.is_file():
        pytest.skip(f"Vidur benchmark workload not found at {path}")
    r = read_trace(path)
    assert len(r) == 10_000 and np.all(r.prompt_tok == 512) and np.all(r.output_tok == 128)
    # Vidur's "Poisson" generator caps each gap (at 3/qps), which shortens the mean gap: the
    # nominal 8 qps workload really arrives at 8.44 qps with gap CV 0.88.
    assert mean_rate_qps(r.arrival_s) == pytest.approx(8.44, rel=0.005)


# --- our own layout, CSV and JSONL ---------------------------------------------------------------


def test_lifecost_layout_with_classes_priorities_and_prefixes(tmp_path):
    rows = [
        {"arrival_time_s": 0.0, "prompt_tokens": 300, "output_tokens": 20, "class": "chat", "priority": 1, "prefix_id": "sess-a", "prefix_tokens": 100},
        {"arrival_time_s": 0.5, "prompt_tokens": 400, "output_tokens": 30, "class": "code", "priority": 0, "prefix_id": None, "prefix_tokens": None},
        {"arrival_time_s": 0.5, "prompt_tokens": 500, "output_tokens": 40, "class": "chat", "priority": 2, "prefix_id": "sess-a", "prefix_tokens": 400},
        {"arrival_time_s": 2.0, "prompt_tokens": 50, "output_tokens": 5, "class": "chat", "priority": 1, "prefix_id": "sess-b", "prefix_tokens": 50},
    ]  # fmt: skip
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    csv = tmp_path / "t.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    for path in (jsonl, csv):
        r = read_trace(path)
        assert r.class_names == ("chat", "code")
        assert list(r.class_id) == [0, 1, 0, 0]
        assert list(r.priority) == [1, 0, 2, 1]
        assert list(r.prefix_id) == [0, -1, 0, 1]
        assert list(r.prefix_tok) == [100, 0, 400, 50]
        assert list(r.arrival_s) == [0.0, 0.5, 0.5, 2.0]


def test_integer_prefix_ids_are_kept(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("arrival_time_s,prompt_tokens,output_tokens,prefix_id\n0,10,1,7\n1,10,1,\n2,10,1,-1\n3,10,1,42\n")
    r = read_trace(f)
    assert list(r.prefix_id) == [7, -1, -1, 42] and np.all(r.prefix_tok == 0)


# --- bad input ---------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "bad.csv") -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "time,prompt,output\n0,1,1\n",
            r"trace bad.csv: missing columns: found \['time', 'prompt', 'output'\]; expected arrival_time_s, prompt_tokens, output_tokens",
        ),
        (
            "arrival_time_s,prompt_tokens\n0,1\n",
            r"missing columns: found \['arrival_time_s', 'prompt_tokens'\]; expected .*arrived_at, num_prefill_tokens, num_decode_tokens",
        ),
        (
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,5\n1,5,5\n0.5,5,5\n2,5,5\n",
            r"column 'arrived_at': arrival times go backwards at line 4 \(0.5 s after 1 s\) — sort the trace",
        ),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,5\n1,-3,5\n", r"column 'num_prefill_tokens': line 3: -3 is below 1"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,5\n1,5,0\n", r"column 'num_decode_tokens': line 3: 0 is below 1"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,5\n1,5,2.5\n", r"column 'num_decode_tokens': line 3: 2.5 is not a whole number"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,5\n1,,5\n", r"column 'num_prefill_tokens': line 3: value is empty"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,5\n1,lots,5\n", r"column 'num_prefill_tokens': line 3: value is not a number \('lots'\)"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n-1,5,5\n", r"column 'arrived_at': line 2: arrival time -1 is negative"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,5\nsoon,5,5\n", r"column 'arrived_at': line 3: arrival time 'soon' is not a number"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n", r"trace bad.csv: has no rows"),
        (
            "arrival_time_s,prompt_tokens,output_tokens,prefix_id,prefix_tokens\n0,50,5,1,60\n",
            r"column 'prefix_tokens': line 2: prefix_tokens 60 exceeds its prompt_tokens 50",
        ),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,5\n1,5,5,9,9\n", r"trace bad.csv: cannot parse bad.csv: .*line 3"),
    ],
)
def test_bad_csv_traces_name_the_column_and_line(tmp_path, text, message):
    with pytest.raises(LifecostError, match=message):
        read_trace(write(tmp_path, text))


def test_bad_jsonl_lines_are_counted_from_one(tmp_path):
    f = write(tmp_path, '{"arrived_at": 0, "num_prefill_tokens": 5, "num_decode_tokens": 5}\n'
                        '{"arrived_at": 1, "num_prefill_tokens": 5, "num_decode_tokens": -5}\n', "bad.jsonl")  # fmt: skip
    with pytest.raises(LifecostError, match=r"trace bad.jsonl column 'num_decode_tokens': line 2: -5 is below 1"):
        read_trace(f)
    with pytest.raises(LifecostError, match=r"trace broken.jsonl: cannot parse broken.jsonl"):
        read_trace(write(tmp_path, '{"arrived_at": 0,\n', "broken.jsonl"))


def test_a_file_that_is_not_csv_or_jsonl_is_refused(tmp_path):
    with pytest.raises(LifecostError, match=r"trace_path: bad.parquet is not a CSV or JSONL file .* use .csv, .jsonl"):
        read_trace(write(tmp_path, "x", "bad.parquet"))
    with pytest.raises(LifecostError, match=r"trace_path: no such file .*nope.csv"):
        read_trace(tmp_path / "nope.csv")


def test_a_file_above_the_size_limit_needs_max_rows(tmp_path, monkeypatch):
    f = write(tmp_path, "arrived_at,num_prefill_tokens,num_decode_tokens\n" + "".join(f"{i},5,5\n" for i in range(200)))
    monkeypatch.setattr(traces, "MAX_TRACE_BYTES", 1024)  # a tiny limit instead of a 256 MiB file
    with pytest.raises(LifecostError, match=r"bad.csv is [0-9,]+ bytes, above the 1,024 bytes limit for a full read — replay its first rows"):
        read_trace(f)
    assert len(read_trace(f, max_rows=50)) == 50


def test_bad_rates_and_row_limits_are_refused():
    path = shared("splitwise_code.csv")
    with pytest.raises(LifecostError, match=r"rate_qps: must be a positive number, got -1"):
        read_trace(path, rate_qps=-1.0)
    with pytest.raises(LifecostError, match=r"max_rows: must be ≥ 1, got 0"):
        read_trace(path, max_rows=0)


def test_a_trace_with_one_instant_cannot_be_time_scaled(tmp_path):
    f = write(tmp_path, "arrived_at,num_prefill_tokens,num_decode_tokens\n3,5,5\n3,6,6\n")
    assert list(read_trace(f).arrival_s) == [3.0, 3.0]
    with pytest.raises(LifecostError, match="all arrivals are at one instant"):
        read_trace(f, rate_qps=2.0)
