"""`lifecost` console script: one typer app, command groups registered from small modules.

Every command is thin over the library. Results go to stdout (a rich table, or JSON with
`--json`); logs and progress go to stderr. A `LifecostError` (a user mistake) prints one line
and exits with code 2 — never a traceback.
"""

from __future__ import annotations

import sys

import click
import typer

try:  # typer ≥ 0.26 vendors click: its usage errors are not click's classes
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # pragma: no cover - older typer uses click itself
    _TyperClickException = click.ClickException
_USAGE_ERRORS = (click.ClickException, _TyperClickException)

from models.errors import LifecostError
from planner_ui import cli_calibrate_fit, cli_capacity, cli_catalog, cli_plan, cli_sim, cli_ui

app = typer.Typer(
    name="lifecost",
    help="Whole-life cost and capacity planner for fine-tuning and serving LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module adds its commands to `app`; add one line per command group.
for module in (cli_calibrate_fit, cli_capacity, cli_catalog, cli_plan, cli_sim, cli_ui):
    module.register(app)


def main() -> None:
    try:
        # With standalone_mode=False click returns a typer.Exit's code instead of raising it.
        rc = app(standalone_mode=False)
    except LifecostError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except _USAGE_ERRORS as e:  # a missing argument, an unknown option: click's own message
        e.show()
        sys.exit(2)
    sys.exit(rc if isinstance(rc, int) else 0)
