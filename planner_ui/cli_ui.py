"""`lifecost ui`: start the Streamlit planner (`planner_ui/app.py`) headless on one address.

We hand the process over to `streamlit run` (exec, not a child) so that Ctrl-C and a test's
`terminate()` reach the server directly and no orphan is left behind. The defaults bind to
127.0.0.1 only: the planner reads uploaded files, so exposing it is an explicit choice (`--host`).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
from pathlib import Path

import typer

from models.errors import LifecostError

APP_PATH = Path(__file__).with_name("app.py")


def streamlit_argv(port: int, host: str) -> list[str]:
    """The exact command line that serves the planner; separate so tests can check it."""
    if not 1 <= port <= 65535:
        raise LifecostError(f"port {port} is outside 1..65535", field="--port", fix="pick a free TCP port, e.g. 8501")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise LifecostError(f"{host!r} is not an IP address", field="--host", fix="use 127.0.0.1 (default) or 0.0.0.0") from None
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_PATH),
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", host,
        "--server.fileWatcherType", "none",
        "--server.maxUploadSize", "20",  # MB; traces can be large, configs and scenarios are tiny
        "--browser.gatherUsageStats", "false",
        "--theme.base", "light",
        "--theme.primaryColor", "#2563eb",
        "--client.toolbarMode", "minimal",
    ]


def register(app: typer.Typer) -> None:
    @app.command("ui")
    def ui(
        port: int = typer.Option(8501, "--port", help="TCP port to serve the planner on."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (127.0.0.1 keeps it local)."),
    ) -> None:
        """Open the what-if planner (Streamlit) at http://HOST:PORT."""
        argv = streamlit_argv(port, host)
        try:
            import streamlit  # noqa: F401
        except ImportError:
            raise LifecostError("streamlit is not installed", field="ui", fix="pip install 'lifecost[ui]'") from None
        print(f"lifecost planner: http://{host}:{port}  (Ctrl-C to stop)", file=sys.stderr, flush=True)
        if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
            raise LifecostError(f"python interpreter {argv[0]!r} not found", field="ui")
        os.execv(argv[0], argv)
