"""Where CLI output goes: results to stdout (table or JSON), progress and logs to stderr."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

# Piped results (a file, `less`, CI logs) get a wide page instead of rich's 80-column default,
# so tables of a dozen columns stay readable.
out = Console(width=None if sys.stdout.isatty() else 200)  # results
err = Console(stderr=True)  # logs, progress


def _clean(x: Any) -> Any:
    """Make numpy / NaN values JSON-safe (NaN → null)."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(_clean(data), indent=2) + "\n")


def kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("", style="bold")
    t.add_column("", justify="right")
    for k, v in rows:
        t.add_row(k, f"{v:,}" if isinstance(v, int) else (f"{v:,.4g}" if isinstance(v, float) else str(v)))
    return t
