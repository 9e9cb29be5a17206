"""The transformers continuous-batching backend, for real on CPU, and the shared serving metrics.

transformers' CB engine runs on CPU with `attn_implementation="sdpa"` (paged KV cache, its own
scheduler thread); only async batching and CUDA graphs need a GPU. So the same `replay` that
produced the H100 data runs here on a 2-layer Llama: every request gets exactly its output
length, timestamps are causal, arrivals are honoured. Timings on a shared CPU are noise — the
tests assert structure, never speed.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calibrate.serve_base import (ServedRequest, ServeRequest, ServeBackend, burst, poisson_requests,
                                  pure_decode_step_s, read_length_pairs, replay_record, request_metrics,
                                  served_from_record, summarize)
from calibrate.serve_transformers import TransformersBackend
from calibrate.device_runs import TRACE_CSV


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    b = TransformersBackend("tiny-llama", device="cpu", dtype=torch.float32, max_requests_per_batch=16,
                            kv_cache_tok=4096, page_size_tok=64)
    yield b
    b.close()


def _causal(r: ServedRequest) -> None:
    assert r.arrival_s <= r.first_token_s <= r.finish_s
    ts = r.token_times_s
    assert ts is not None and len(ts) == r.output_tok
    assert ts[0] == r.first_token_s and ts[-1] == r.finish_s
    assert all(a <= b for a, b in zip(ts, ts[1:]))


def test_backend_implements_the_serve_backend_protocol(backend):
    assert isinstance(backend, ServeBackend)
    assert backend.name == "transformers" and backend.engine_version.startswith("transformers ")
    settings_ = backend.engine_settings()
    assert settings_["attn_implementation"] == "sdpa"
    assert settings_["continuous_batching_config"]["allow_block_sharing"] is False


def test_a_burst_produces_exactly_the_asked_output_lengths_with_causal_timestamps(backend):
    served = backend.replay(burst(4, 24, 6))
    assert len(served) == 4
    for r in served:
        assert (r.prompt_tok, r.output_tok) == (24, 6)  # EOS is ignored: fixed output length
        assert 0.0 <= r.arrival_s < 0.5
        _causal(r)
    assert pure_decode_step_s(served) > 0


def test_arrivals_are_honoured_and_results_come_back_in_input_order(backend):
    reqs = [ServeRequest(0.30, 8, 3), ServeRequest(0.0, 16, 4), ServeRequest(0.15, 12, 2)]
    served = backend.replay(reqs)
    assert [(s.prompt_tok, s.output_tok) for s in served] == [(8, 3), (16, 4), (12, 2)]
    for q, s in zip(reqs, served):
        assert s.arrival_s >= q.arrival_s - 1e-3  # never submitted early
        assert s.arrival_s <= q.arrival_s + 0.5  # and not long after (loose: shared CPU)
        _causal(s)


def test_replay_record_round_trips_the_served_requests(backend):
    served = backend.replay(burst(2, 8, 3))
    rec = replay_record(key="k", backend=backend, model="tiny-llama", gpu="cpu",
                        workload={"kind": "burst", "n": 2}, served=served)
    assert rec["kind"] == "serve_replay" and rec["backend"] == "transformers"
    assert served_from_record(rec) == served
    assert rec["summary"]["num_requests"] == 2


# ---- shared metrics (serve_base) --------------------------------------------------------------
def test_request_metrics_follow_the_benchmark_serving_definitions():
    r = ServedRequest(arrival_s=1.0, prompt_tok=10, output_tok=5, first_token_s=1.5, finish_s=2.3)
    m = request_metrics(r)
    assert m["ttft_s"] == pytest.approx(0.5)
    assert m["tpot_s"] == pytest.approx(0.2)  # 0.8 s over 4 inter-token gaps
    assert m["e2e_s"] == pytest.approx(1.3)
    assert math.isnan(request_metrics(ServedRequest(0, 1, 1, 0.1, 0.1))["tpot_s"])


def test_summary_throughput_is_over_first_arrival_to_last_finish():
    served = [ServedRequest(1.0, 10, 4, 1.2, 2.0), ServedRequest(1.5, 20, 6, 1.8, 3.0)]
    s = summarize(served)
    assert s["makespan_s"] == pytest.approx(2.0)
    assert s["output_throughput_tok_s"] == pytest.approx(5.0)
    assert s["total_throughput_tok_s"] == pytest.approx(20.0)


def test_pure_decode_step_uses_only_the_window_where_every_request_decodes():
    a = ServedRequest(0, 1, 5, 0.0, 0.8, [0.0, 0.2, 0.4, 0.6, 0.8])  # alone until 0.4: 0.2 s steps
    b = ServedRequest(0, 1, 3, 0.4, 0.7, [0.4, 0.55, 0.7])  # together 0.4..0.7
    # gaps inside [0.4, 0.7]: a 0.4→0.6 (0.2), b 0.4→0.55, 0.55→0.7 (0.15, 0.15)
    assert pure_decode_step_s([a, b]) == pytest.approx(0.15)
    assert math.isnan(pure_decode_step_s([ServedRequest(0, 1, 2, 0.1, 0.2)]))


@settings(max_examples=40, deadline=None)
@given(rate=st.floats(0.1, 100), n=st.integers(1, 200), seed=st.integers(0, 10**6))
def test_poisson_requests_are_seeded_sorted_and_sampled_from_the_trace(rate, n, seed):
    lengths = [(100, 10), (2000, 300), (50, 1)]
    a = poisson_requests(rate, n, lengths, seed=seed, max_prompt_tok=1024)
    assert a == poisson_requests(rate, n, lengths, seed=seed, max_prompt_tok=1024)
    assert a[0].arrival_s == 0.0 and all(x.arrival_s <= y.arrival_s for x, y in zip(a, a[1:]))
    assert all((r.prompt_tok, r.output_tok) in {(100, 10), (1024, 300), (50, 1)} for r in a)


def test_the_bundled_trace_sample_reads_as_length_pairs():
    pairs = read_length_pairs(str(TRACE_CSV))
    assert len(pairs) == 1000 and all(p >= 1 and o >= 1 for p, o in pairs)
