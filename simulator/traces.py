"""Trace replay: request arrival times and lengths read from a CSV or JSONL file.

Three layouts are recognised by their column names (extra columns are ignored):

- lifecost's own: `arrival_time_s, prompt_tokens, output_tokens` and optionally `class`
  (a class name), `priority` (integer), `prefix_id` (integer or string id of a shared prefix,
  empty = none) and `prefix_tokens` (how many leading prompt tokens that prefix covers);
- Splitwise / Vidur: `arrived_at, num_prefill_tokens, num_decode_tokens` — the Azure
  conversation and code traces published with Splitwise (Patel et al., ISCA 2024) and shipped in
  Vidur's `data/processed_traces/`;
- lengths only: the same token columns without a time column (e.g. Vidur's arXiv summarization
  statistics). Such a file has no arrival times, so it needs `rate_qps`: requests then arrive
  as a seeded Poisson process at that rate, in file order.

Times are kept as they are in the file (a trace starting at t = 0 replays from 0). With
`rate_qps`, times are multiplied by one factor so that the mean rate — (n − 1) gaps over the
first-to-last span, `workload.mean_rate_qps` — equals `rate_qps` exactly; the burst structure
(the gaps' coefficient of variation) is unchanged.

Bad input is a `LifecostError` naming the file and the line (CSV line numbers count the header
as line 1): unknown format, file too large, missing columns (listing the ones found and the ones
expected), missing / non-numeric / non-integer / non-positive token counts, negative or
decreasing arrival times (the first offending line), a prefix longer than its prompt.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from models.errors import LifecostError
from simulator.workload import Requests, mean_rate_qps, poisson_arrivals_s

# A full read is refused above this size: pandas needs several times the file size in memory,
# and 256 MiB of CSV is ~8M requests — more than a day of traffic for one replica. Pass
# `max_rows` to replay the first rows of a larger file.
MAX_TRACE_BYTES = 256 * 1024 * 1024

_CSV_SUFFIXES = (".csv",)
_JSONL_SUFFIXES = (".jsonl", ".ndjson")

_LAYOUTS = {
    # name: (time column, prompt column, output column)
    "lifecost": ("arrival_time_s", "prompt_tokens", "output_tokens"),
    "splitwise": ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
}
_EXPECTED = (
    "arrival_time_s, prompt_tokens, output_tokens[, class, priority, prefix_id, prefix_tokens] "
    "or arrived_at, num_prefill_tokens, num_decode_tokens (a time column may be left out if rate_qps is given)"
)


def read_trace(
    path: str | Path, *, rate_qps: float | None = None, max_rows: int | None = None, seed: int = 0
) -> Requests:
    """Requests from the trace at `path` (see the module docstring for the formats).

    `max_rows` keeps the first rows; `rate_qps` time-scales to that mean rate (and is required
    for a lengths-only file, whose Poisson arrivals are drawn from `seed`). Without a `class`
    column every request belongs to one class named after the file.
    """
    return read_trace_with_columns(path, rate_qps=rate_qps, max_rows=max_rows, seed=seed)[0]


def read_trace_with_columns(
    path: str | Path | None, *, rate_qps: float | None = None, max_rows: int | None = None, seed: int = 0
) -> tuple[Requests, frozenset[str]]:
    """`read_trace`, plus which optional columns (class, priority, prefix_id, prefix_tokens)
    the file had — `generate_requests` fills the missing ones from the workload's classes."""
    if rate_qps is not None and not (math.isfinite(rate_qps) and rate_qps > 0):
        raise LifecostError(f"must be a positive number, got {rate_qps!r}", field="rate_qps")
    if max_rows is not None and max_rows < 1:
        raise LifecostError(f"must be ≥ 1, got {max_rows}", field="max_rows")
    p = _checked_path(path, allow_large=max_rows is not None)
    frame = _read_table(p, max_rows=max_rows)
    line0 = 2 if p.suffix.lower() in _CSV_SUFFIXES else 1  # file line of data row 0
    label = f"trace {p.name}"

    layout = next((cols for cols in _LAYOUTS.values() if cols[1] in frame.columns and cols[2] in frame.columns), None)
    if layout is None:
        raise LifecostError(
            f"missing columns: found {list(frame.columns)}; expected {_EXPECTED}",
            field=label,
            fix="rename the columns",
        )
    time_col, prompt_col, output_col = layout
    if len(frame) == 0:
        raise LifecostError("has no rows", field=label, fix="pass a trace with at least one request")
    prompt_tok = _whole_tokens(frame[prompt_col], prompt_col, label, line0, minimum=1)
    output_tok = _whole_tokens(frame[output_col], output_col, label, line0, minimum=1)
    n = len(frame)

    if time_col in frame.columns:
        arrival_s = _arrival_times(frame[time_col], time_col, label, line0)
        if rate_qps is not None:
            observed = mean_rate_qps(arrival_s)
            if not math.isfinite(observed):
                raise LifecostError(
                    "all arrivals are at one instant, so it has no rate to scale",
                    field=label,
                    fix="replay it without rate_qps",
                )
            arrival_s = arrival_s * (observed / rate_qps)
    elif rate_qps is None:
        raise LifecostError(
            f"has no arrival times (no {time_col!r} column; found {list(frame.columns)})",
            field=label,
            fix="give rate_qps (arrival.rate_qps / --qps) to replay its lengths as Poisson arrivals",
        )
    else:
        arrival_s = poisson_arrivals_s(np.random.default_rng(seed), n, rate_qps)

    present = frozenset(c for c in ("class", "priority", "prefix_id", "prefix_tokens") if c in frame.columns)
    if "class" in frame.columns:
        if frame["class"].isna().any():
            raise LifecostError(
                f"empty class at line {line0 + int(np.argmax(frame['class'].isna().to_numpy()))}",
                field=f"{label} column 'class'",
            )
        codes, names = pd.factorize(frame["class"].astype(str), sort=False)
        class_id, class_names = codes, tuple(names)
        if len(class_names) > np.iinfo(np.int16).max:
            raise LifecostError(f"has {len(class_names)} classes; at most 32767", field=f"{label} column 'class'")
    else:
        class_id, class_names = np.zeros(n, dtype=np.int16), (p.stem,)
    priority = (
        _whole_tokens(frame["priority"], "priority", label, line0, minimum=-(2**15), maximum=2**15 - 1)
        if "priority" in frame.columns
        else np.zeros(n, dtype=np.int16)
    )
    prefix_id = _prefix_ids(frame["prefix_id"]) if "prefix_id" in frame.columns else np.full(n, -1, dtype=np.int64)
    if "prefix_tokens" in frame.columns:
        prefix_tok = _whole_tokens(frame["prefix_tokens"].fillna(0), "prefix_tokens", label, line0, minimum=0)
        bad = prefix_tok > prompt_tok
        if bad.any():
            i = int(np.argmax(bad))
            raise LifecostError(
                f"line {line0 + i}: prefix_tokens {prefix_tok[i]} exceeds its {prompt_col} {prompt_tok[i]}",
                field=f"{label} column 'prefix_tokens'",
            )
        prefix_tok = np.where(prefix_id >= 0, prefix_tok, 0)
    else:
        prefix_tok = np.zeros(n, dtype=np.int64)

    requests = Requests(
        arrival_s=arrival_s,
        prompt_tok=prompt_tok,
        output_tok=output_tok,
        class_id=class_id,
        priority=priority,
        prefix_id=prefix_id,
        prefix_tok=prefix_tok,
        class_names=class_names,
    )
    return requests, present


@functools.lru_cache(maxsize=16)
def _length_column_cached(path: str, mtime_ns: int, size: int, column: str, what: str) -> np.ndarray:
    """Parsed, validated length column; cached per (file version, column) because Streamlit
    reruns and sweeps sample the same file many times. Returned read-only."""
    p = Path(path)
    frame = _read_table(p, max_rows=None)
    if column not in frame.columns:
        raise LifecostError(
            f"{p.name} has no column {column!r}; found {list(frame.columns)}", field=f"{what}.column", fix="name one of those"
        )
    line0 = 2 if p.suffix.lower() in _CSV_SUFFIXES else 1
    values = _whole_tokens(frame[column], column, f"{what}.path {p.name}", line0, minimum=1)
    if values.shape[0] == 0:
        raise LifecostError(f"{p.name} has no rows", field=f"{what}.path")
    values.setflags(write=False)
    return values


def read_length_column(path: str | Path | None, column: str | None, *, what: str = "length") -> np.ndarray:
    """Token lengths (int64 ≥ 1) in `column` of a CSV/JSONL file, for empirical resampling."""
    p = _checked_path(path, allow_large=False, field=f"{what}.path")
    st = p.stat()
    return _length_column_cached(str(p.resolve()), st.st_mtime_ns, st.st_size, str(column), what)


def _checked_path(path: str | Path | None, *, allow_large: bool, field: str = "workload.arrival.trace_path") -> Path:
    if path is None or str(path) == "":
        raise LifecostError("no file given", field=field, fix="name a CSV or JSONL file")
    p = Path(path)
    if not p.is_file():
        raise LifecostError(f"no such file {str(p)!r}", field=field, fix="check the path (relative paths are from the working directory)")
    if p.suffix.lower() not in _CSV_SUFFIXES + _JSONL_SUFFIXES:
        raise LifecostError(
            f"{p.name} is not a CSV or JSONL file (suffix {p.suffix or 'none'!r})",
            field=field,
            fix="use .csv, .jsonl or .ndjson",
        )
    size = p.stat().st_size
    if size > MAX_TRACE_BYTES and not allow_large:
        raise LifecostError(
            f"{p.name} is {_size(size)}, above the {_size(MAX_TRACE_BYTES)} limit for a full read",
            field=field,
            fix="replay its first rows (max_rows / --requests) or split the file",
        )
    return p


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.0f} MiB" if num_bytes >= 2**20 else f"{num_bytes:,} bytes"


def _read_table(p: Path, *, max_rows: int | None) -> pd.DataFrame:
    """The file as a frame, with parse errors turned into one-line `LifecostError`s."""
    try:
        if p.suffix.lower() in _CSV_SUFFIXES:
            frame = pd.read_csv(p, nrows=max_rows, skipinitialspace=True)
        else:
            frame = pd.read_json(p, lines=True, nrows=max_rows, dtype=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LifecostError(f"cannot parse {p.name}: {first}", field=f"trace {p.name}", fix="check it is well-formed CSV/JSONL") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _first_line(mask: np.ndarray, line0: int) -> int:
    return line0 + int(np.argmax(mask))


def _whole_tokens(
    col: pd.Series, name: str, label: str, line0: int, *, minimum: int, maximum: int | None = None
) -> np.ndarray:
    """A column of whole numbers in [minimum, maximum] as int64, else an error naming the line."""
    raw = col.to_numpy()
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    where = f"{label} column {name!r}"
    missing = np.isnan(values)
    if missing.any():
        i = int(np.argmax(missing))
        shown = "empty" if pd.isna(raw[i]) else f"not a number ({raw[i]!r})"
        raise LifecostError(f"line {line0 + i}: value is {shown}", field=where, fix="every row needs a whole number")
    bad = values != np.floor(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise LifecostError(f"line {line0 + i}: {values[i]:g} is not a whole number", field=where)
    low = values < minimum
    if low.any():
        i = int(np.argmax(low))
        raise LifecostError(f"line {line0 + i}: {values[i]:g} is below {minimum}", field=where, fix=f"counts must be ≥ {minimum}")
    if maximum is not None and (values > maximum).any():
        i = int(np.argmax(values > maximum))
        raise LifecostError(f"line {line0 + i}: {values[i]:g} is above {maximum}", field=where)
    if np.abs(values).max(initial=0) > 2**53:
        i = int(np.argmax(np.abs(values) > 2**53))
        raise LifecostError(f"line {line0 + i}: {values[i]:g} is implausibly large", field=where)
    return values.astype(np.int64)


def _arrival_times(col: pd.Series, name: str, label: str, line0: int) -> np.ndarray:
    """Arrival seconds: finite, ≥ 0 and non-decreasing, else an error naming the first bad line."""
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    where = f"{label} column {name!r}"
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise LifecostError(f"line {line0 + i}: arrival time {col.iloc[i]!r} is not a number", field=where)
    if (values < 0).any():
        i = int(np.argmax(values < 0))
        raise LifecostError(f"line {line0 + i}: arrival time {values[i]:g} is negative", field=where)
    back = np.diff(values) < 0
    if back.any():
        i = int(np.argmax(back)) + 1
        raise LifecostError(
            f"arrival times go backwards at line {line0 + i} ({values[i]:g} s after {values[i - 1]:g} s)",
            field=where,
            fix="sort the trace by arrival time",
        )
    return values


def _prefix_ids(col: pd.Series) -> np.ndarray:
    """Shared-prefix ids: integers are kept (negative or empty = none); other ids (strings, e.g.
    session ids) are numbered in order of first appearance."""
    numeric = pd.to_numeric(col, errors="coerce")
    if not (numeric.isna() & col.notna()).any():
        values = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.all(np.isnan(values) | (values == np.floor(values))):
            return np.where(np.isnan(values) | (values < 0), -1, values).astype(np.int64)
    codes, _ = pd.factorize(col.astype("string"), sort=False)  # NA → −1
    return codes.astype(np.int64)
