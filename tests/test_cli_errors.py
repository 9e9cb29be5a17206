"""The console script's contract for user mistakes: one clear message, exit code 2, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

LIFECOST = [sys.executable, "-c", "from planner_ui.cli import main; main()"]
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LIFECOST, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize(
    "args, says",
    [
        (["report"], "Missing argument"),
        (["simulate", "--no-such-flag"], "No such option"),
        (["models", "show", "Llama-3.1-8x"], "did you mean"),
        (["gpus", "show", "H1000"], "unknown gpu"),
        (["simulate", "no/such/scenario.yaml"], "no such file"),
    ],
)
def test_user_mistakes_exit_2_with_one_message_and_no_traceback(args, says):
    p = run(*args)
    assert p.returncode == 2, p.stderr
    assert says.lower() in (p.stderr + p.stdout).lower()
    assert "Traceback" not in p.stderr


def test_a_bad_scenario_value_names_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine:\n  max_num_seqs: -3\n")
    p = run("simulate", str(bad), "--json")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{bad}:2 engine.max_num_seqs" in p.stderr
