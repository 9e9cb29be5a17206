"""Parallel sweeps: run one function over many keyed items, locally or on a Ray cluster,
collecting the results into one parquet table that survives interruption.

Reading guide
-------------
* `Executor` is the whole interface an executor needs: `map_unordered(fn, items)` yields
  `fn(item)` results *as they finish* (any order). Two implementations:
  `LocalExecutor(workers)` (a spawn-context `ProcessPoolExecutor`; `workers=1` runs in-process)
  and `RayExecutor(address=None, num_cpus=None)` (Ray tasks; Ray is imported lazily, so it stays
  the optional `cluster` extra).
* `run_sweep(fn, items, out_parquet, executor)` is what callers use. `items` maps a stable
  string key to the argument of `fn`; `fn(arg)` returns one row (a dict of scalars) or a list of
  rows. Every row gets the item's `key` column.

Storage and resume
------------------
While a sweep runs, finished results are flushed (every `flush_every_s` seconds and at the end)
into part files `<out>.parts/part-<n>.parquet`, each written to a temp name and renamed, so a
part is either complete or absent. When every item is done the parts (and any earlier table at
`<out>`) are merged into the single table `<out>`, sorted by key, again via temp file + rename,
and the parts directory is removed. A rerun after an interruption reads `<out>` and the parts,
and skips every key already there. Why parts instead of rewriting `<out>` per batch: a rewrite
costs O(table) per flush (quadratic over a long sweep); a part costs O(batch).

Determinism: the final table is built from the rows sorted by key (rows of one item keep their
order), and column types are inferred once over the whole table, so it does not depend on the
executor, the number of workers, the flush batching, or on where an interruption fell. Seeds
must travel inside the items (never a global RNG).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

Row = dict[str, Any]

KEY_COLUMN = "key"


class Executor(Protocol):
    """Runs `fn` over `items`, yielding each result as soon as it is ready (unordered)."""

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]: ...

    def close(self) -> None: ...


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _run_chunk(fn: Callable[[Any], Any], chunk: list[Any]) -> list[Any]:
    """Runs in a worker: several items per task, so tiny items do not pay one IPC round each."""
    return [fn(item) for item in chunk]


class LocalExecutor:
    """Local worker processes (spawn context: safe with threads, CUDA and macOS/Windows).

    `workers=1` runs the items in the calling process, in order — no pickling, no start-up
    cost; it is the serial baseline the benchmark compares against. `fn` and the items must be
    picklable for `workers > 1` (a module-level function, pydantic/dataclass arguments).
    `chunksize` items travel per task: raise it when one item takes milliseconds.
    """

    def __init__(self, workers: int | None = None, chunksize: int = 1):
        self.workers = max(1, int(workers if workers is not None else (os.cpu_count() or 1)))
        self.chunksize = max(1, int(chunksize))
        self._pool: cf.ProcessPoolExecutor | None = None

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        if self.workers == 1:
            for item in items:
                yield fn(item)
            return
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"))
        # Keep a bounded number of tasks in flight so a huge sweep does not pickle everything up front.
        window = 4 * self.workers
        pending: set[cf.Future] = set()
        try:
            for chunk in _chunks(items, self.chunksize):
                pending.add(self._pool.submit(_run_chunk, fn, chunk))
                if len(pending) >= window:
                    done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for f in done:
                        yield from f.result()
            while pending:
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for f in done:
                    yield from f.result()
        finally:
            for f in pending:
                f.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RayExecutor:
    """Ray tasks: `ray.init(address=...)` joins an existing cluster; `address=None` starts a
    local one (with `num_cpus` CPUs). Ray is shut down on `close()` only if we started it.

    On a remote cluster every node needs lifecost installed (the function is shipped by
    reference to its module, as Ray does for any importable function).
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, chunksize: int = 1):
        self.address = address
        self.num_cpus = num_cpus
        self.chunksize = max(1, int(chunksize))
        self._started = False

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:  # the optional extra is missing
            from models.errors import LifecostError

            raise LifecostError("Ray is not installed", field="--executor", fix="pip install 'lifecost[cluster]' or use --executor local") from None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": self.address, "include_dashboard": False, "log_to_driver": False}
            if self.address is None and self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
            ray.init(**kwargs)
            self._started = True
        return ray

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        ray = self._ray()
        remote_chunk = ray.remote(num_cpus=1)(_run_chunk)
        fn_ref = ray.put(fn)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        window = max(2, 4 * cpus)
        pending: list[Any] = []
        try:
            for chunk in _chunks(items, self.chunksize):
                pending.append(remote_chunk.remote(fn_ref, chunk))
                if len(pending) >= window:
                    done, pending = ray.wait(pending, num_returns=1)
                    for ref in done:
                        yield from ray.get(ref)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield from ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_executor(kind: str = "local", *, workers: int | None = None, address: str | None = None, chunksize: int = 1) -> LocalExecutor | RayExecutor:
    """The executor the CLI asks for by name: `local` (processes) or `ray`."""
    match kind:
        case "local":
            return LocalExecutor(workers, chunksize)
        case "ray":
            return RayExecutor(address=address, num_cpus=workers if address is None else None, chunksize=chunksize)
        case _:
            from models.errors import unknown_name

            raise unknown_name("executor", kind, ["local", "ray"])


# --- the table ---------------------------------------------------------------------------------


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _read_rows(out: Path) -> list[Row]:
    """Every row already on disk: the merged table (if any) plus finished parts."""
    rows: list[Row] = []
    paths = [out] if out.is_file() else []
    parts = _parts_dir(out)
    if parts.is_dir():
        paths += sorted(p for p in parts.glob("part-*.parquet"))
    for p in paths:
        rows += pd.read_parquet(p).to_dict(orient="records")
    return rows


def _as_rows(key: str, result: Any) -> list[Row]:
    rows = [result] if isinstance(result, Mapping) else list(result)
    if not rows:
        raise ValueError(f"sweep item {key!r} returned no rows; return at least one dict")
    return [{KEY_COLUMN: key, **dict(r)} for r in rows]


def rows_to_frame(rows: list[Row]) -> pd.DataFrame:
    """The canonical table: rows sorted by key (stable within a key), types inferred over all rows."""
    ordered = sorted(rows, key=lambda r: str(r[KEY_COLUMN]))
    frame = pd.DataFrame.from_records(ordered)
    if frame.empty:
        frame = pd.DataFrame({KEY_COLUMN: pd.Series([], dtype=str)})
    cols = [KEY_COLUMN] + [c for c in frame.columns if c != KEY_COLUMN]
    return frame[cols].reset_index(drop=True)


def _progress(total: int, done: int, enabled: bool, label: str) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )
    task = progress.add_task(label, total=total, completed=done)
    return progress, task


def run_sweep(
    fn: Callable[[Any], Row | list[Row]],
    items: Mapping[str, Any],
    out_parquet: str | Path | None,
    executor: Executor | None = None,
    progress: bool = True,
    *,
    flush_every_s: float = 2.0,
    label: str = "sweep",
) -> pd.DataFrame:
    """Run `fn` over `items` (key → argument) and return the table of all rows, sorted by key.

    With `out_parquet` set, results are flushed to part files as they finish and merged into
    `out_parquet` at the end; keys already present there (or in parts left by an interrupted
    run) are skipped. With `out_parquet=None` the table lives in memory only. An exception from
    `fn` is re-raised after the finished results are flushed, so a rerun resumes past them.
    """
    keys = [str(k) for k in items]
    if len(set(keys)) != len(keys):
        raise ValueError("sweep keys must be unique strings")
    out = Path(out_parquet) if out_parquet is not None else None
    rows: list[Row] = _read_rows(out) if out is not None else []
    done = {str(r[KEY_COLUMN]) for r in rows}
    todo = [(str(k), v) for k, v in items.items() if str(k) not in done]

    executor = executor if executor is not None else LocalExecutor(1)
    parts = _parts_dir(out) if out is not None else None
    next_part = 0
    if parts is not None and parts.is_dir():
        next_part = 1 + max((int(p.stem.split("-")[1]) for p in parts.glob("part-*.parquet")), default=-1)

    batch: list[Row] = []

    def flush() -> None:
        nonlocal next_part, batch
        if parts is None or not batch:
            batch = []
            return
        parts.mkdir(parents=True, exist_ok=True)
        _write_parquet_atomic(rows_to_frame(batch), parts / f"part-{next_part:06d}.parquet")
        next_part += 1
        batch = []

    bar, task = _progress(len(keys), len(keys) - len(todo), progress, label)
    last_flush = time.monotonic()
    try:
        with bar:
            tagged = ((k, fn, v) for k, v in todo)
            for key, result in executor.map_unordered(_call_tagged, tagged):
                new = _as_rows(key, result)
                rows += new
                batch += new
                bar.advance(task)
                if time.monotonic() - last_flush >= flush_every_s:
                    flush()
                    last_flush = time.monotonic()
    finally:
        flush()

    frame = rows_to_frame(rows)
    if out is not None:
        _write_parquet_atomic(frame, out)
        if parts is not None and parts.is_dir():
            shutil.rmtree(parts)
    return frame


def _call_tagged(job: tuple[str, Callable[[Any], Any], Any]) -> tuple[str, Any]:
    """Runs in the worker: returns the key with the result so the caller can file it."""
    key, fn, arg = job
    return key, fn(arg)
