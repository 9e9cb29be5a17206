"""Sweeps: executors yield every result, the table is independent of executor and batching,
and an interrupted sweep resumes by skipping the keys already on disk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import LifecostError
from simulator.sweep import LocalExecutor, make_executor, rows_to_frame, run_sweep


def seeded_row(arg: dict) -> dict:
    """A small deterministic computation standing in for one simulation (picklable, seeded)."""
    rng = np.random.default_rng(arg["seed"])
    draws = rng.exponential(1.0 / arg["rate"], size=200)
    return {"rate": arg["rate"], "seed": arg["seed"], "mean_gap_s": float(draws.mean()), "n": int(draws.size)}


def curve_rows(arg: dict) -> list[dict]:
    return [{"i": i, "value": arg["seed"] * 10 + i} for i in range(3)]


def items(n: int) -> dict[str, dict]:
    return {f"cfg-{i:04d}": {"seed": i, "rate": 1.0 + i % 7} for i in range(n)}


def test_serial_and_two_process_executors_give_the_same_table():
    serial = run_sweep(seeded_row, items(30), None, LocalExecutor(1), progress=False)
    with LocalExecutor(2) as ex:
        parallel = run_sweep(seeded_row, items(30), None, ex, progress=False)
    pd.testing.assert_frame_equal(serial, parallel)
    assert list(serial["key"]) == sorted(items(30))


def test_the_table_is_sorted_by_key_and_keeps_multi_row_results_in_order():
    frame = run_sweep(curve_rows, {"b": {"seed": 2}, "a": {"seed": 1}}, None, progress=False)
    assert list(frame["key"]) == ["a", "a", "a", "b", "b", "b"]
    assert list(frame["value"]) == [10, 11, 12, 20, 21, 22]


def test_an_interrupted_sweep_resumes_and_skips_done_keys(tmp_path):
    out = tmp_path / "sweep.parquet"
    work = items(12)
    calls: list[str] = []

    def fails_at_seven(arg: dict) -> dict:
        if arg["seed"] == 7:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-sweep
        calls.append(arg["seed"])
        return seeded_row(arg)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(fails_at_seven, work, out, LocalExecutor(1), progress=False, flush_every_s=0.0)
    assert calls == list(range(7)) and not out.exists()
    assert any((tmp_path / "sweep.parquet.parts").glob("part-*.parquet"))

    resumed: list[int] = []

    def recording(arg: dict) -> dict:
        resumed.append(arg["seed"])
        return seeded_row(arg)

    frame = run_sweep(recording, work, out, LocalExecutor(1), progress=False)
    assert resumed == list(range(7, 12))
    assert out.is_file() and not (tmp_path / "sweep.parquet.parts").exists()
    pd.testing.assert_frame_equal(frame, run_sweep(seeded_row, work, None, progress=False))
    pd.testing.assert_frame_equal(pd.read_parquet(out), frame)

    again: list[int] = []
    run_sweep(lambda a: again.append(a) or seeded_row(a), work, out, progress=False)
    assert again == []  # a finished sweep reruns nothing


def test_new_items_extend_an_existing_table(tmp_path):
    out = tmp_path / "t.parquet"
    run_sweep(seeded_row, items(5), out, progress=False)
    frame = run_sweep(seeded_row, items(8), out, progress=False)
    pd.testing.assert_frame_equal(frame, run_sweep(seeded_row, items(8), None, progress=False))


@settings(max_examples=25, deadline=None)
@given(st.permutations(list(range(20))), st.integers(1, 6))
def test_the_table_does_not_depend_on_completion_order_or_batching(order, batch):
    rows = [{"key": f"k{i:02d}", **seeded_row({"seed": i, "rate": 2.0})} for i in range(20)]
    shuffled = [rows[i] for i in order]
    batched = pd.concat([rows_to_frame(shuffled[j : j + batch]) for j in range(0, 20, batch)])
    pd.testing.assert_frame_equal(rows_to_frame(batched.to_dict(orient="records")), rows_to_frame(rows))


def test_duplicate_keys_and_empty_results_are_refused():
    with pytest.raises(ValueError, match="no rows"):
        run_sweep(lambda a: [], {"x": 1}, None, progress=False)
    with pytest.raises(ValueError, match="unique"):
        run_sweep(seeded_row, {1: {"seed": 1, "rate": 1.0}, "1": {"seed": 2, "rate": 1.0}}, None, progress=False)


def test_an_unknown_executor_name_is_a_user_error():
    with pytest.raises(LifecostError, match="did you mean 'ray'"):
        make_executor("rey")
