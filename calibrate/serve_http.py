"""OpenAI-compatible endpoint backend: replay a workload over streaming `/v1/completions`.

Why client-side: a running server (vLLM, SGLang, TGI, a managed endpoint) is a black box; what a
user experiences is what the client sees. Each request is sent at its arrival time by its own
asyncio task (an open-loop load generator, as vLLM's `benchmark_serving`: a slow server does not
slow the arrivals down), and every streamed chunk is timestamped on arrival:
  first_token_s = arrival of the first chunk carrying a token; finish_s = the last one;
  token_times_s = one entry per generated token (a chunk carrying k tokens counts k times).
Token counts come from `token_ids` in each chunk when the server returns them (vLLM's
`return_token_ids`), else one token per non-empty chunk, corrected by the final `usage` block.

Prompts are token-id arrays (the OpenAI API accepts `prompt: [ids]`), so prompt lengths are exact
whatever the tokenizer; output lengths are forced with `min_tokens` + `ignore_eos` (vLLM/SGLang
extensions — a server that ignores them stops early and the record says so in `warnings`).

While the replay runs, `/metrics` (Prometheus text) is scraped every `metrics_interval_s` and the
engine gauges/counters we can use to validate the simulator are kept (running/waiting requests,
KV-cache usage, iteration-token histogram sums, preemptions). A metrics endpoint that is missing
or in another format is a warning, never a failure: the latency data stands on its own.

The API key is read from the environment variable named by `api_key_env` and only ever put in
the `Authorization` header — never logged or recorded.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from calibrate.serve_base import ServedRequest, ServeRequest
from calibrate.tiny_model import prompt_token_ids
from models.errors import LifecostError

# Engine metrics worth keeping (summed over label sets). Histograms keep `_sum` and `_count`.
KEPT_METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:num_preemptions_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:iteration_tokens_total_sum",
    "vllm:iteration_tokens_total_count",
    "vllm:time_to_first_token_seconds_sum",
    "vllm:time_to_first_token_seconds_count",
    "vllm:inter_token_latency_seconds_sum",
    "vllm:inter_token_latency_seconds_count",
    "sglang:num_running_reqs",
    "sglang:num_queue_reqs",
    "sglang:token_usage",
)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\S+)?\s*$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample line in Prometheus text exposition format.

    Tolerant by design: comments, blank lines and lines that do not parse are skipped (the caller
    decides whether "nothing parsed" is a problem). Values follow the format's spelling of
    special floats (`NaN`, `+Inf`, `-Inf`).
    """
    samples = []
    for line in text.split("\n"):  # the format's only line separator (label values may hold \r)
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        try:
            v = float(value)
        except ValueError:
            continue
        samples.append((name, dict(_LABEL.findall(labels)), v))
    return samples


def kept_metrics(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, float]:
    """Sum the samples of each `KEPT_METRICS` name over its label sets (engines, models)."""
    out: dict[str, float] = {}
    for name, _labels, v in samples:
        if name in KEPT_METRICS and math.isfinite(v):
            out[name] = out.get(name, 0.0) + v
    return out


@dataclass
class _Stream:
    """What one streamed request produced (client-side times, seconds from the run's start)."""

    token_times_s: list[float] = field(default_factory=list)
    usage_completion_tok: int | None = None
    usage_prompt_tok: int | None = None
    error: str | None = None


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


class HttpBackend:
    """`ServeBackend` that drives a running OpenAI-compatible server over streaming HTTP.

    `base_url` is the server root (`http://host:port`, with or without a trailing `/v1`).
    After `replay`, `last_metrics` holds the scraped samples, `warnings` what went wrong without
    failing, and — when a replay fails part-way — `partial` the requests that did finish.
    """

    name = "http"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", *,
                 metrics_interval_s: float = 0.5, request_timeout_s: float = 120.0,
                 max_requests: int = 10_000, max_run_s: float = 1800.0, vocab_size: int = 1000,
                 connect_timeout_s: float = 5.0):
        url = base_url.rstrip("/")
        if not re.match(r"^https?://[^/\s]+", url):
            raise LifecostError(f"not an http(s) URL: {base_url!r}", field="base_url",
                                fix="give the server root, e.g. http://127.0.0.1:8000")
        self.base_url = url[:-3] if url.endswith("/v1") else url
        if not model:
            raise LifecostError("empty model name", field="model",
                                fix="pass the name the server serves (GET /v1/models lists it)")
        self.model = model
        self.api_key_env = api_key_env
        self.metrics_interval_s = metrics_interval_s
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_requests = max_requests
        self.max_run_s = max_run_s
        self.vocab_size = vocab_size
        self.engine_version = "unknown"
        self.last_metrics: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.partial: list[ServedRequest] = []
        self._seq = 0

    def close(self) -> None:
        """Nothing to release: the server is not ours, and each replay opens its own client."""

    # ---- record plumbing (same shape as VllmBackend) ----------------------------------------
    def settings(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model": self.model}

    def record_extra(self) -> dict[str, Any]:
        return {"endpoint": self.settings(), "timestamps_source": "client_stream",
                "metrics_samples": self.last_metrics, "warnings": list(self.warnings)}

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _unreachable(self, what: str, e: Exception) -> LifecostError:
        return LifecostError(f"{self.base_url} did not answer {what} ({type(e).__name__})",
                             field="base_url", fix="check that the server is running, the host/port "
                             "are right and reachable from here, and the URL has no extra path")

    # ---- replay ------------------------------------------------------------------------------
    def replay(self, requests: list[ServeRequest]) -> list[ServedRequest]:
        """Send each request at its arrival time; return the timed results in input order."""
        if len(requests) > self.max_requests:
            raise LifecostError(f"{len(requests)} requests exceed max_requests={self.max_requests}",
                                field="requests", fix="replay fewer requests or raise max_requests")
        for i, r in enumerate(requests):
            if r.prompt_tok < 1 or r.output_tok < 1 or r.arrival_s < 0 or not math.isfinite(r.arrival_s):
                raise LifecostError(f"request {i} has prompt_tok={r.prompt_tok}, output_tok="
                                    f"{r.output_tok}, arrival_s={r.arrival_s}", field="requests",
                                    fix="token counts must be ≥ 1 and arrival_s a finite number ≥ 0")
        return asyncio.run(self._replay(requests))

    async def _replay(self, requests: list[ServeRequest]) -> list[ServedRequest]:
        import httpx

        self.warnings = []
        self.last_metrics = []
        self.partial = []
        timeout = httpx.Timeout(self.request_timeout_s, connect=self.connect_timeout_s)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        # Honour HTTP(S)_PROXY for a remote endpoint, never for a server on this machine.
        host = httpx.URL(self.base_url).host
        local = host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")
        async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=self._headers(),
                                     trust_env=not local) as client:
            await self._preflight(client)
            t0 = time.monotonic()
            stop = asyncio.Event()
            scraper = asyncio.create_task(self._scrape(client, t0, stop))
            tasks = [asyncio.create_task(self._one(client, r, t0)) for r in requests]
            try:
                streams = await asyncio.wait_for(asyncio.gather(*tasks), timeout=self.max_run_s)
            except asyncio.TimeoutError:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                streams = [t.result() if not t.cancelled() else
                           _Stream(error=f"still streaming after max_run_s={self.max_run_s:.0f} s")
                           for t in tasks]
            finally:
                stop.set()
                await scraper
        return self._collect(requests, streams)

    async def _preflight(self, client: Any) -> None:
        """GET /v1/models first: an unreachable URL fails in seconds with one clear line."""
        import httpx

        try:
            resp = await client.get(f"{self.base_url}/v1/models")
        except httpx.HTTPError as e:
            raise self._unreachable("GET /v1/models", e) from None
        if resp.status_code in (401, 403):
            raise LifecostError(f"{self.base_url} refused the API key (HTTP {resp.status_code})",
                                field=self.api_key_env or "api_key_env",
                                fix=f"export {self.api_key_env} with a valid key")
        if resp.status_code == 200:
            try:
                served = [m.get("id") for m in resp.json().get("data", [])]
            except (ValueError, AttributeError):
                served = []
            if served and self.model not in served:
                raise LifecostError(f"{self.base_url} does not serve model {self.model!r}",
                                    field="model", fix="use one of: " + ", ".join(map(str, served)))
        try:
            v = await client.get(f"{self.base_url}/version")
            if v.status_code == 200:
                self.engine_version = str(v.json().get("version", "unknown"))
        except (httpx.HTTPError, ValueError, AttributeError):
            pass

    async def _scrape(self, client: Any, t0: float, stop: asyncio.Event) -> None:
        import httpx

        while True:
            t = time.monotonic() - t0
            try:
                resp = await client.get(f"{self.base_url}/metrics")
                values = kept_metrics(parse_prometheus(resp.text)) if resp.status_code == 200 else {}
                if resp.status_code != 200 or not values:
                    self.warnings.append(f"/metrics: HTTP {resp.status_code}, no known engine metrics "
                                         "parsed; latency data kept, metrics scraping stopped")
                    _warn(self.warnings[-1])
                    return
                self.last_metrics.append({"t_s": round(t, 4), **values})
            except httpx.HTTPError as e:
                self.warnings.append(f"/metrics unreachable ({type(e).__name__}); scraping stopped")
                _warn(self.warnings[-1])
                return
            if stop.is_set():
                return  # one last sample after the run ends gives the final counter values
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.metrics_interval_s)
            except asyncio.TimeoutError:
                pass

    async def _one(self, client: Any, r: ServeRequest, t0: float) -> _Stream:
        import httpx

        self._seq += 1
        seq = self._seq
        delay = r.arrival_s - (time.monotonic() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        body = {
            "model": self.model,
            "prompt": prompt_token_ids(r.prompt_tok, seq, self.vocab_size),
            "max_tokens": r.output_tok,
            "min_tokens": r.output_tok,
            "ignore_eos": True,
            "temperature": 0.0,
            "stream": True,
            "return_token_ids": True,
            "stream_options": {"include_usage": True},
        }
        s = _Stream()
        try:
            async with client.stream("POST", f"{self.base_url}/v1/completions", json=body) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread()).decode("utf-8", "replace")
                    s.error = f"HTTP {resp.status_code}: {' '.join(text.split())[:200]}"
                    return s
                async for line in resp.aiter_lines():
                    now = time.monotonic() - t0
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        continue
                    usage = chunk.get("usage") or {}
                    if usage.get("completion_tokens") is not None:
                        s.usage_completion_tok = int(usage["completion_tokens"])
                        s.usage_prompt_tok = usage.get("prompt_tokens")
                    for choice in chunk.get("choices") or []:
                        ids = choice.get("token_ids")
                        k = len(ids) if isinstance(ids, list) else (1 if choice.get("text") else 0)
                        s.token_times_s.extend([now] * k)
        except httpx.HTTPError as e:
            s.error = f"{type(e).__name__} on POST /v1/completions"
        return s

    def _collect(self, requests: list[ServeRequest], streams: list[_Stream]) -> list[ServedRequest]:
        served: list[ServedRequest | None] = []
        errors = []
        for i, (r, s) in enumerate(zip(requests, streams)):
            times = s.token_times_s
            if s.error or not times:
                errors.append(f"request {i}: {s.error or 'no tokens streamed'}")
                served.append(None)
                continue
            n = len(times)
            if s.usage_completion_tok is not None and s.usage_completion_tok != n:
                # Chunks without token ids can merge tokens: trust the server's count, spread the
                # missing ones over the last chunk's time.
                times = times + [times[-1]] * max(0, s.usage_completion_tok - n)
                times = times[: s.usage_completion_tok]
                n = len(times)
            if n != r.output_tok:
                self.warnings.append(f"request {i}: server produced {n} tokens, asked for {r.output_tok} "
                                     "(min_tokens/ignore_eos not honoured?)")
            prompt_tok = int(s.usage_prompt_tok) if s.usage_prompt_tok else r.prompt_tok
            served.append(ServedRequest(r.arrival_s, prompt_tok, n, round(times[0], 6),
                                        round(times[-1], 6), [round(t, 6) for t in times]))
        if errors:
            self.partial = [x for x in served if x is not None]
            raise LifecostError(f"{len(errors)} of {len(requests)} requests to {self.base_url} failed, "
                                f"first: {errors[0]}", field="base_url",
                                fix=f"check the server log; {len(self.partial)} finished requests are "
                                    "kept in HttpBackend.partial")
        return [x for x in served if x is not None]
