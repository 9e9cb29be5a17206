"""`lifecost ui`: the command line it hands over to, and its one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models.errors import LifecostError
from planner_ui.cli_ui import APP_PATH, streamlit_argv


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_serves_the_planner_headless_on_the_given_address():
    argv = streamlit_argv(8600, "127.0.0.1")
    assert argv[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(argv[4]) == APP_PATH and APP_PATH.is_file()
    assert option(argv, "--server.headless") == "true"
    assert option(argv, "--server.port") == "8600"
    assert option(argv, "--server.address") == "127.0.0.1"
    assert option(argv, "--browser.gatherUsageStats") == "false"


@pytest.mark.parametrize("port, host, field", [(0, "127.0.0.1", "--port"), (70000, "127.0.0.1", "--port"),
                                               (8501, "my laptop", "--host")])
def test_bad_port_or_host_is_a_user_error(port, host, field):
    with pytest.raises(LifecostError) as e:
        streamlit_argv(port, host)
    assert e.value.field == field


def test_cli_prints_one_line_and_exits_2_on_a_bad_port():
    exe = Path(sys.executable).with_name("lifecost")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from planner_ui.cli import main; main()"]
    res = subprocess.run([*cmd, "ui", "--port", "99999"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--port" in lines[0] and "Traceback" not in res.stderr
