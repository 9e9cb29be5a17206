"""HTTP backend without vLLM: the Prometheus parser, unreachable URLs, and a minimal
OpenAI-compatible server that behaves like a non-vLLM engine.

The small server below is a real HTTP server on 127.0.0.1 (stdlib `http.server`), not a mock of
our code: it stands in for the engines vLLM cannot imitate — one whose stream chunks carry text
but no `token_ids`, whose `/metrics` is not Prometheus text, or that stops before `min_tokens`.
The same backend against a real vLLM server is tested in `test_calibrate_http_vllm.py`.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibrate.serve_base import ServeRequest
from calibrate.serve_http import HttpBackend, kept_metrics, parse_prometheus
from models.errors import LifecostError

# ---- Prometheus text parsing ---------------------------------------------------------------

VLLM_EXCERPT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 3.0
vllm:num_requests_running{engine="1",model_name="tiny"} 2.0
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25
vllm:iteration_tokens_total_bucket{engine="0",le="+Inf",model_name="tiny"} 40.0
vllm:iteration_tokens_total_sum{engine="0",model_name="tiny"} 647.0
vllm:iteration_tokens_total_count{engine="0",model_name="tiny"} 40.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="tiny"} NaN
process_cpu_seconds_total 12.5 1700000000000
this line is not a sample
"""


def test_parser_reads_names_labels_values_and_skips_junk():
    samples = parse_prometheus(VLLM_EXCERPT)
    names = [n for n, _, _ in samples]
    assert "this" not in names and len(samples) == 8
    assert samples[0] == ("vllm:num_requests_running", {"engine": "0", "model_name": "tiny"}, 3.0)
    assert samples[3][1]["le"] == "+Inf"
    assert samples[7] == ("process_cpu_seconds_total", {}, 12.5)  # timestamp column ignored
    assert math.isnan(samples[6][2])


def test_kept_metrics_sums_over_engines_and_drops_buckets_and_nan():
    kept = kept_metrics(parse_prometheus(VLLM_EXCERPT))
    assert kept == {"vllm:num_requests_running": 5.0, "vllm:kv_cache_usage_perc": 0.25,
                    "vllm:iteration_tokens_total_sum": 647.0,
                    "vllm:iteration_tokens_total_count": 40.0}


_name = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", fullmatch=True)
_label_value = st.text(st.characters(blacklist_characters='"\\\n', blacklist_categories=("Cs",)),
                       max_size=12)


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(st.tuples(_name, st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True),
                                                          _label_value, max_size=3),
                               st.floats(allow_nan=False, allow_infinity=False, width=64)),
                     max_size=20))
def test_parser_round_trips_what_an_exporter_writes(rows):
    lines = []
    for name, labels, value in rows:
        lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"{name}{{{lab}}} {value!r}" if labels else f"{name} {value!r}")
    assert parse_prometheus("\n".join(lines)) == [(n, lab, v) for n, lab, v in rows]


# ---- unreachable / malformed URLs ---------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_is_one_line_naming_the_url():
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(LifecostError) as e:
        HttpBackend(url, "tiny", connect_timeout_s=2).replay([ServeRequest(0.0, 8, 2)])
    msg = str(e.value)
    assert url in msg and "\n" not in msg and "running" in msg


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://host", "", "http://"])
def test_malformed_url_is_a_user_error(url):
    with pytest.raises(LifecostError, match="base_url"):
        HttpBackend(url, "tiny")


def test_bad_request_is_a_user_error():
    with pytest.raises(LifecostError, match="requests"):
        HttpBackend("http://127.0.0.1:9", "tiny").replay([ServeRequest(0.0, 0, 4)])


# ---- a non-vLLM OpenAI-compatible server ---------------------------------------------------

class _Engine(BaseHTTPRequestHandler):
    """Streams one text chunk per token every 2 ms; no token_ids; /metrics is HTML."""

    short_by = 0  # tokens to stop early by (a server that ignores min_tokens)
    fail_max_tokens = -1  # answer HTTP 500 for requests asking for this many tokens

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: str, ctype: str = "application/json") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, json.dumps({"data": [{"id": "stub"}]}))
        elif self.path == "/metrics":
            self._send(200, "<html><body>metrics live elsewhere</body></html>", "text/html")
        else:
            self._send(404, "{}")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = body["max_tokens"]
        if n == type(self).fail_max_tokens:
            self._send(500, json.dumps({"error": "engine crashed"}))
            return
        n -= type(self).short_by
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for k in range(n):
            time.sleep(0.002)
            chunk = {"choices": [{"index": 0, "text": f" w{k}", "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        usage = {"choices": [], "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": n}}
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture()
def stub_server():
    handler = type("Handler", (_Engine,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


REQS = [ServeRequest(0.0, 12, 5), ServeRequest(0.05, 30, 9), ServeRequest(0.1, 7, 13)]


def test_metrics_in_unexpected_format_warns_and_keeps_latency_data(stub_server):
    url, _ = stub_server
    b = HttpBackend(url + "/v1/", "stub", metrics_interval_s=0.05)
    served = b.replay(REQS)
    assert [s.output_tok for s in served] == [5, 9, 13]
    assert [s.prompt_tok for s in served] == [12, 30, 7]
    for r, s in zip(REQS, served):
        assert len(s.token_times_s) == r.output_tok
        assert r.arrival_s <= s.first_token_s <= s.finish_s
    extra = b.record_extra()
    assert extra["metrics_samples"] == []
    assert any("/metrics" in w for w in extra["warnings"])


def test_server_that_stops_early_is_recorded_with_a_warning(stub_server):
    url, handler = stub_server
    handler.short_by = 2
    b = HttpBackend(url, "stub")
    served = b.replay(REQS)
    assert [s.output_tok for s in served] == [3, 7, 11]
    assert sum("min_tokens" in w for w in b.warnings) == 3


def test_failed_requests_raise_and_keep_the_finished_ones(stub_server):
    url, handler = stub_server
    handler.fail_max_tokens = 9
    b = HttpBackend(url, "stub")
    with pytest.raises(LifecostError, match="1 of 3 requests") as e:
        b.replay(REQS)
    assert "HTTP 500" in str(e.value) and "\n" not in str(e.value)
    assert [s.output_tok for s in b.partial] == [5, 13]


def test_model_the_server_does_not_serve_lists_the_served_ones(stub_server):
    url, _ = stub_server
    with pytest.raises(LifecostError, match="use one of: stub"):
        HttpBackend(url, "Llama-3.1-8B").replay(REQS[:1])


def test_run_longer_than_max_run_s_stops_and_keeps_the_finished_requests(stub_server):
    url, _ = stub_server
    b = HttpBackend(url, "stub", max_run_s=0.3)
    with pytest.raises(LifecostError, match="max_run_s"):
        b.replay([ServeRequest(0.0, 8, 2), ServeRequest(0.0, 8, 1000)])
    assert [s.output_tok for s in b.partial] == [2]


# ---- through the CLI: `lifecost calibrate serve --backend http` -------------------------------

def _cli(monkeypatch, *args: str) -> int:
    from planner_ui.cli import main

    monkeypatch.setattr("sys.argv", ["lifecost", "calibrate", "serve", "--backend", "http", *args])
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_cli_unreachable_server_exits_2_with_one_line(monkeypatch, capsys, tmp_path):
    code = _cli(monkeypatch, "--model", "tiny", "--url", f"http://127.0.0.1:{_free_port()}",
                "--log", str(tmp_path / "runs.jsonl"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: base_url:") and "did not answer" in err[-1]
    assert not (tmp_path / "runs.jsonl").exists()


def test_cli_replays_over_http_into_the_run_log(monkeypatch, capsys, stub_server, tmp_path):
    url, _ = stub_server
    log = tmp_path / "runs.jsonl"
    code = _cli(monkeypatch, "--model", "stub", "--url", url, "--workload", "poisson", "--rate-qps", "20",
                "--n", "4", "--prompt-tok", "8", "--output-tok", "6", "--log", str(log), "--json")
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "http" and out["summary"]["num_requests"] == 4
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(recs) == 1 and [r["output_tok"] for r in recs[0]["requests"]] == [6] * 4
    assert recs[0]["timestamps_source"] == "client_stream"
    assert any("/metrics" in w for w in recs[0]["warnings"])
