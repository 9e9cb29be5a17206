#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up (idempotent), then pytest on both cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
exec .venv/bin/python -m pytest -n 2 --durations=15 "$@"
