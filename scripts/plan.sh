#!/usr/bin/env bash
# The main job on the embedded default scenario (examples/default.yaml), from a fresh clone:
# set-up (idempotent), the whole-life plan on stdout — training arithmetic, lifetime cost per
# month with the serving capacity it needs — the full capacity report in out/report.html, and
# then (in an interactive terminal) the Streamlit planner on http://127.0.0.1:8501.
# Pass a scenario YAML to plan another one; LIFECOST_UI=0 skips the planner, LIFECOST_UI=1 forces it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
scenario=${1:-examples/default.yaml}
lc=.venv/bin/lifecost
$lc train "$scenario"
$lc cost "$scenario"
mkdir -p out
$lc report "$scenario" -o out/report.html
echo "report: out/report.html (open it in a browser)" >&2
if [ "${LIFECOST_UI:-auto}" = 1 ] || { [ "${LIFECOST_UI:-auto}" = auto ] && [ -t 0 ] && [ -t 1 ]; }; then
  exec $lc ui --host 127.0.0.1 --port 8501
fi
