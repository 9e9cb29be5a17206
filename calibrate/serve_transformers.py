"""Serving backend: transformers continuous batching (the fallback where vLLM cannot be installed).

transformers ≥ 5 ships a continuous-batching engine (`generation/continuous_batching/`): a
background thread runs a FIFO scheduler over a paged KV cache (`page_size` tokens per page),
mixing prefill chunks and decode tokens in each forward pass up to `max_batch_tokens` — the same
iteration-level scheduling the simulator models. `generate_batch` is a wrapper that submits
everything at once; to honour *arrival times* we drive the manager it wraps directly:
`model.init_continuous_batching(...)` → `manager.warmup()` (captures CUDA graphs) →
`manager.start()` → `manager.add_request(ids, request_id=, max_new_tokens=, record_timestamps=True,
eos_token_id=-1)` at each arrival → `manager.get_result()` until all are finished.

Per-request timestamps come from the engine itself (all `time.perf_counter()`):
`GenerationOutput.created_time` (when `add_request` ran = arrival), `timestamps` (one per
generated token, stamped when the engine appended it; the first is the first token) and
`lifespan = (left the queue, finished)`. We subtract the replay's start, so times are seconds from
the run's start as `ServeBackend` requires.

Fixed output length: `eos_token_id=-1` disables EOS, so every request produces exactly
`output_tok` tokens (the weights are random, so greedy decoding would otherwise stop wherever the
EOS id happens to win). Prefix sharing (`allow_block_sharing`) is off: random distinct prompts
never share prefixes, and turning it off keeps a burst of N requests honest.

Imports torch, transformers and our stdlib-only modules: runs on the device machine.
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import random
import time
from typing import Any

import torch

from calibrate.model_build import build_random_model, load_config_dict, param_count
from calibrate.serve_base import ServedRequest, ServeRequest

# Attention implementations the transformers CB engine accepts ("eager" is turned into
# "paged|eager" by the engine itself; flash needs the flash-attn package).
ATTN_IMPLEMENTATIONS = ("sdpa", "paged|eager", "flash_attention_2", "flash_attention_3")


def _cb_config_class() -> Any:
    try:
        from transformers import ContinuousBatchingConfig
    except ImportError:  # older 5.x keep it in the generation config module
        from transformers.generation.configuration_utils import ContinuousBatchingConfig
    return ContinuousBatchingConfig


def _jsonable(x: Any) -> Any:
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return repr(x)


class TransformersBackend:
    """`ServeBackend` over transformers continuous batching, one model, one persistent engine."""

    name = "transformers"

    def __init__(self, model: str, *, device: str | None = None, dtype: torch.dtype = torch.bfloat16,
                 attn_implementation: str = "sdpa", max_requests_per_batch: int = 256,
                 max_batch_tokens: int | None = None, max_memory_percent: float | None = None,
                 use_cuda_graph: bool | None = None, engine_options: dict[str, Any] | None = None,
                 kv_cache_tok: int | None = None, page_size_tok: int = 256,
                 seed: int = 0):
        import transformers
        from transformers import GenerationConfig

        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}")
        self.model_name = model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.config = load_config_dict(model)
        self.vocab_size = int(self.config.get("vocab_size", 32000))
        self.attn_implementation = attn_implementation
        self.engine_version = f"transformers {transformers.__version__}"
        t = time.perf_counter()
        self.model = build_random_model(model, self.device, dtype, attn_implementation, seed=seed)
        self.model.eval()
        self.params_total, _ = param_count(self.model)
        self.build_s = time.perf_counter() - t
        self._rng = random.Random(seed)
        self._replays = 0
        self._captures: list[tuple[float, float]] = []  # (perf_counter at start, seconds) of each graph capture
        self.last_captures: list[tuple[float, float]] | None = None  # the last replay's, relative to its start
        self.generation_config = GenerationConfig(do_sample=False, max_new_tokens=16, eos_token_id=-1,
                                                  pad_token_id=0, bos_token_id=None)
        if self.device.type != "cuda" and kv_cache_tok is None:
            # Off the GPU the engine would size its cache from *host* RAM (90% of it): cap it.
            kv_cache_tok = 16384
        num_blocks = -(-kv_cache_tok // page_size_tok) if kv_cache_tok else None
        cb_cls = _cb_config_class()
        wanted = {"num_blocks": num_blocks, "page_size": page_size_tok if num_blocks else None,
                  "allow_block_sharing": False, "max_requests_per_batch": max_requests_per_batch,
                  "max_batch_tokens": max_batch_tokens, "max_memory_percent": max_memory_percent,
                  "use_cuda_graph": use_cuda_graph, **(engine_options or {})}
        # `engine_options`: any other ContinuousBatchingConfig field (e.g. use_async_batching).
        fields = {f.name for f in dataclasses.fields(cb_cls)} if dataclasses.is_dataclass(cb_cls) else \
            set(inspect.signature(cb_cls).parameters)
        if "page_size" not in fields:  # transformers < 5.17 called it block_size
            wanted["block_size"] = wanted.pop("page_size")
        self.cb_config = cb_cls(**{k: v for k, v in wanted.items() if k in fields and v is not None})
        t = time.perf_counter()
        self.manager = self.model.init_continuous_batching(generation_config=self.generation_config,
                                                           continuous_batching_config=self.cb_config)
        if hasattr(self.manager, "warmup"):
            self.manager.warmup()
        self.manager.start()
        self.warmup_s = time.perf_counter() - t

    def engine_settings(self) -> dict[str, Any]:
        """The resolved engine configuration (goes into every record)."""
        cfg = getattr(self.manager, "continuous_batching_config", self.cb_config)
        settings = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else vars(cfg)
        return {"attn_implementation": self.model.config._attn_implementation,
                "requested_attn_implementation": self.attn_implementation,
                "continuous_batching_config": _jsonable(settings), "device": self.device.type,
                "params_total": self.params_total}

    def _watch_captures(self) -> bool:
        """Time every CUDA-graph capture the engine makes (its `ModelRunner._capture_graph`, called
        the first time a padded batch shape is met). A capture stalls the whole batch for one
        warm-up forward plus the capture, tens of milliseconds per shape: a replay on a fresh
        engine pays one per new shape, a steady-state server none — the record must say which it
        measured. False where this transformers version has no such hook."""
        runner = getattr(getattr(self.manager, "batch_processor", None), "model_runner", None)
        if runner is None or not hasattr(runner, "_capture_graph"):
            return False
        if not getattr(runner, "_lifecost_watched", False):
            original, log = runner._capture_graph, self._captures

            def timed_capture(*args, **kwargs):
                t = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    log.append((t, time.perf_counter() - t))

            runner._capture_graph = timed_capture
            runner._lifecost_watched = True
        return True

    def _prompt(self, n_tok: int) -> list[int]:
        # Random ids away from the special ids at the bottom of the vocabulary.
        return [self._rng.randrange(16, self.vocab_size) for _ in range(n_tok)]

    def replay(self, requests: list[ServeRequest], timeout_s: float = 600.0) -> list[ServedRequest]:
        """Submit each request at its arrival time; wait for all; return them in input order."""
        if not self.manager.is_running():
            raise RuntimeError("the continuous-batching engine thread is not running")
        self._replays += 1
        prompts = [self._prompt(r.prompt_tok) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: requests[i].arrival_s)
        ids = {i: f"r{self._replays}-{i}" for i in range(len(requests))}
        results: dict[str, Any] = {}

        def drain(block_s: float) -> None:
            res = self.manager.get_result(timeout=block_s)
            while res is not None:
                if res.is_finished():
                    results[res.request_id] = res
                res = self.manager.get_result(timeout=0) if len(results) < len(requests) else None

        watched = self._watch_captures()
        n_captures = len(self._captures)
        t0 = time.perf_counter()
        for i in order:
            # Sleep until the arrival (results queue up in the engine meanwhile; its timestamps
            # are its own, so collecting them later changes nothing).
            wait = requests[i].arrival_s - (time.perf_counter() - t0)
            while wait > 0.0005:
                time.sleep(min(wait, 0.01))
                wait = requests[i].arrival_s - (time.perf_counter() - t0)
            self.manager.add_request(prompts[i], request_id=ids[i], max_new_tokens=requests[i].output_tok,
                                     record_timestamps=True, eos_token_id=-1)
        deadline = time.perf_counter() + timeout_s
        while len(results) < len(requests):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(requests) - len(results)} of {len(requests)} requests unfinished "
                                   f"after {timeout_s:.0f} s")
            if not self.manager.is_running():
                raise RuntimeError("the continuous-batching engine thread stopped during the replay")
            drain(1.0)
        self.last_captures = [(t - t0, d) for t, d in self._captures[n_captures:]] if watched else None
        served = []
        for i, req in enumerate(requests):
            out = results[ids[i]]
            if out.error:
                raise RuntimeError(f"request {ids[i]} failed in the engine: {out.error}")
            stamps = [s - t0 for s in (out.timestamps or [])]
            n_out = len(out.generated_tokens)
            first = stamps[0] if stamps else out.lifespan[1] - t0
            finish = stamps[-1] if stamps else out.lifespan[1] - t0
            served.append(ServedRequest(arrival_s=out.created_time - t0, prompt_tok=req.prompt_tok,
                                        output_tok=n_out, first_token_s=first, finish_s=finish,
                                        token_times_s=stamps or None))
        return served

    def close(self) -> None:
        try:
            self.manager.stop(block=True, timeout=30)
            if hasattr(self.manager, "destroy"):
                self.manager.destroy()
        finally:
            del self.manager, self.model
            gc.collect()  # the engine's cache and graph pools sit in reference cycles
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
