"""Append-only JSONL run log: every finished measurement is written at once.

Why JSONL and not one JSON file: a calibration can be interrupted (OOM-killed, Ctrl-C, a lease
that ends). Each record is one line written with a single `write` + `fsync`, so the log is
always a valid prefix of records; a torn last line (a crash mid-write) is skipped on read. A
resumed calibration reads the log and skips the measurements whose `key` is already there.

Record shape: `{"kind": "train"|"serve_sweep"|"serve_replay"|"probe"|..., "key": "<unique id of
the measurement's inputs>", "ts": <unix s>, ...measured fields}`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator


class RunLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def records(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn last line from an interrupted write
                if kind is None or rec.get("kind") == kind:
                    yield rec

    def done_keys(self, kind: str | None = None) -> set[str]:
        return {r["key"] for r in self.records(kind) if "key" in r}

    def append(self, record: dict[str, Any]) -> None:
        rec = {"ts": round(time.time(), 3), **record}
        line = json.dumps(rec, sort_keys=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: str | Path, text: str) -> None:
    """Write a whole file via a temp file + rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
