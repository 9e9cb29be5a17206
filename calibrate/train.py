"""Short training runs (LoRA via peft, or full fine-tune) that measure step time and peak memory.

Why short runs suffice: a fine-tuning step on fixed shapes costs the same every iteration once
the allocator and the kernels are warm, so a few timed steps after a few warm-up steps give the
step time to within noise; the training-job model scales it by the number of steps. What the
fit needs from each run — model shape, method, rank, targets, sequence length, micro-batch,
checkpointing, median step time, peak memory (allocated, reserved, NVML), energy, versions — is
all in the record.

Method (per run):
- the base model is built once per model name with random bf16 weights on the device
  (`model_build.build_random_model`; for QLoRA its linears then become bitsandbytes NF4,
  `model_build.quantize_nf4`) and re-wrapped per run: peft `get_peft_model` for (Q)LoRA,
  then `unload()` to get the untouched base back; for full fine-tuning every parameter is
  trainable. The LoRA target set (`all-linear` or `attention`) becomes peft's `target_modules`
  through `models.lora.lora_target_modules`, the same function the analytic count uses, so
  `attention` adapts q/k/v/o (every MLA projection on DeepSeek-V3) rather than being handed to
  peft as a module-name pattern that matches nothing;
- AdamW (torch, default foreach path) over the trainable parameters; parameters and optimizer
  states in bf16 (pure-bf16 training, no fp32 master copy — say so in the record: the memory fit
  must know);
- synthetic token batches `[micro_batch, seq_len]` with `labels = input_ids` (causal LM loss);
- ≥ 3 warm-up steps, ≥ 5 timed steps, `cuda.synchronize()` around each; median of timed steps;
  each step also records its *host* time — from its start until the last kernel of
  `zero_grad` is issued, before the closing synchronize. PyTorch launches kernels
  asynchronously, so a step whose host time equals its wall time was launch-bound (the GPU
  waited for the host), one whose host time is well below was GPU-bound: the step-time fit
  needs to know which (`simulator.training.train_step_time_s`);
- `reset_peak_memory_stats` before the run, so `max_memory_allocated/reserved` are this run's
  peaks (model weights included — that is the memory a user must have);
- an out-of-memory error is a data point (`oom: true`, the feasibility boundary), not a crash:
  the run's tensors are dropped, the cache emptied, and the next run goes on.

Every finished run is appended at once to a `RunLog` under its `key`, so a rerun of the same
sweep skips what is done.

Imports torch, transformers, peft and our stdlib-only modules (`models.catalog`, `models.lora`
and `models.params` need no pydantic; `tests/test_integration_train_targets.py` holds them to
it): runs on the device machine, which has no pydantic.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

import torch

from calibrate.model_build import build_random_model, load_config_dict, param_count, quantize_nf4
from calibrate.power import PowerSampler
from calibrate.runlog import RunLog
from models.catalog import card_from_config
from models.errors import LifecostError
from models.lora import LORA_TARGETS, lora_target_modules

METHODS = ("lora", "qlora", "full")


@dataclass(frozen=True)
class TrainRun:
    """The inputs of one training measurement (its `key` identifies it in the run log)."""

    model: str
    method: str = "lora"
    seq_len_tok: int = 1024
    micro_batch: int = 1
    grad_ckpt: bool = False
    lora_r: int = 16
    lora_targets: str = "all-linear"
    warmup_steps: int = 3
    timed_steps: int = 5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LifecostError(f"unknown training method {self.method!r}", field="method",
                                fix="use one of: " + ", ".join(METHODS))
        for name in ("seq_len_tok", "micro_batch", "timed_steps"):
            if getattr(self, name) < 1:
                raise LifecostError(f"must be ≥ 1, got {getattr(self, name)}", field=name)
        if self.method != "full" and self.lora_r < 1:
            raise LifecostError(f"must be ≥ 1, got {self.lora_r}", field="lora_r")
        if self.method != "full" and self.lora_targets not in LORA_TARGETS:
            raise LifecostError(f"unknown LoRA target set {self.lora_targets!r}", field="lora_targets",
                                fix="use one of: " + ", ".join(LORA_TARGETS))

    @property
    def base_quant(self) -> str | None:
        """The base model's format the run needs: "nf4" for QLoRA, None (the dtype) otherwise."""
        return "nf4" if self.method == "qlora" else None

    @property
    def key(self) -> str:
        adapter = {"lora": f"r{self.lora_r}-{self.lora_targets}", "qlora": f"qlora-r{self.lora_r}-{self.lora_targets}",
                   "full": "full"}[self.method]
        return (f"train/{self.model}/{adapter}/seq{self.seq_len_tok}/mb{self.micro_batch}"
                f"/ckpt{int(self.grad_ckpt)}")


def _is_oom(e: BaseException) -> bool:
    """CUDA OOM raises torch.OutOfMemoryError; the CPU allocator raises a RuntimeError."""
    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def versions() -> dict[str, str]:
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "cuda_runtime": str(torch.version.cuda)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _mem_gib(device: torch.device) -> dict[str, float | None]:
    if device.type != "cuda":
        return {"allocated_gib": None, "max_allocated_gib": None, "max_reserved_gib": None}
    return {
        "allocated_gib": torch.cuda.memory_allocated(device) / 2**30,
        "max_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        "max_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
    }


class TrainSession:
    """Holds one base model on one device and measures TrainRuns on it (one model at a time)."""

    def __init__(self, model: str, device: str | torch.device | None = None, dtype: torch.dtype = torch.bfloat16,
                 attn_implementation: str = "sdpa", gpu_name: str | None = None, base_quant: str | None = None):
        self.model_name = model
        self.base_quant = base_quant  # "nf4": the QLoRA base; None: dtype weights
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype
        self.attn_implementation = attn_implementation
        self.config = load_config_dict(model)
        t = time.perf_counter()
        self.base = build_random_model(model, self.device, dtype, attn_implementation)
        self.params_total, _ = param_count(self.base)  # before NF4 packs two weights per byte
        if base_quant == "nf4":
            quantize_nf4(self.base)
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # the bf16 originals
        elif base_quant is not None:
            raise LifecostError(f"unknown base quantization {base_quant!r}", field="base_quant", fix="use nf4 or none")
        _sync(self.device)
        self.build_s = time.perf_counter() - t
        self.gpu_name = gpu_name or (torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu")
        self.versions = versions()

    def close(self) -> None:
        del self.base
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- one run ---------------------------------------------------------------------------
    def _wrap(self, run: TrainRun) -> tuple[torch.nn.Module, int | None]:
        """The model to train and peft's own trainable-parameter count (None for full FT)."""
        if run.base_quant != self.base_quant:
            raise ValueError(f"session base {self.base_quant or 'bf16'} cannot run method {run.method}")
        if run.method in ("lora", "qlora"):
            from peft import LoraConfig, get_peft_model

            card = card_from_config(self.config, name=self.model_name)
            cfg = LoraConfig(r=run.lora_r, lora_alpha=run.lora_r, lora_dropout=0.0,
                             target_modules=lora_target_modules(card, run.lora_targets), task_type="CAUSAL_LM")
            model = get_peft_model(self.base, cfg)
            peft_trainable, _ = model.get_nb_trainable_parameters()
            return model, int(peft_trainable)
        for p in self.base.parameters():
            p.requires_grad_(True)
        return self.base, None

    def _unwrap(self, model: torch.nn.Module, run: TrainRun) -> None:
        if run.grad_ckpt:
            model.gradient_checkpointing_disable()
        if run.method in ("lora", "qlora"):
            self.base = model.unload()  # removes the LoRA layers, returns the untouched base
        for p in self.base.parameters():
            p.requires_grad_(False)
            p.grad = None

    def train_mode(self, model: torch.nn.Module, run: TrainRun) -> torch.Tensor:
        """Put a wrapped model in the run's training mode (checkpointing, no KV cache) and return
        its synthetic batch: seeded token ids `[micro_batch, seq_len]` (labels = the same ids)."""
        if run.grad_ckpt:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        model.train()
        vocab = int(self.config.get("vocab_size", 32000))
        gen = torch.Generator(device="cpu").manual_seed(1234)
        return torch.randint(0, vocab, (run.micro_batch, run.seq_len_tok), generator=gen).to(self.device)

    @contextlib.contextmanager
    def wrapped(self, run: TrainRun):
        """(model, batch) of `run` in training mode, unwrapped again on exit — for tools that step
        the model themselves (`benchmarks/train_step_profile.py`)."""
        model, _ = self._wrap(run)
        try:
            yield model, self.train_mode(model, run)
        finally:
            model.zero_grad(set_to_none=True)
            self._unwrap(model, run)

    def run(self, run: TrainRun) -> dict[str, Any]:
        """Measure one run; returns its record (an OOM is recorded, not raised)."""
        if run.model != self.model_name:
            raise ValueError(f"session holds {self.model_name}, run asks for {run.model}")
        dev = self.device
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        model, peft_trainable = self._wrap(run)
        _, trainable = param_count(model)
        rec: dict[str, Any] = {
            "kind": "train", "key": run.key, **asdict(run),
            "lora_alpha": run.lora_r if run.method != "full" else None,
            "lora_dropout": 0.0 if run.method != "full" else None,
            "base_quant": self.base_quant,
            "tokens_per_step": run.seq_len_tok * run.micro_batch,
            "dtype": str(self.dtype).removeprefix("torch."),
            "optimizer": "adamw", "optimizer_state_dtype": str(self.dtype).removeprefix("torch."),
            "master_weights": False, "attn_implementation": self.attn_implementation,
            "params_total": self.params_total, "trainable_params": trainable,
            "peft_trainable_params": peft_trainable,
            "gpu": self.gpu_name, "device": dev.type, "versions": self.versions,
            "model_config": self.config,
        }
        weights_gib = torch.cuda.memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
        rec["weights_and_adapters_gib"] = weights_gib
        optimizer = None
        step_times: list[float] = []
        host_times: list[float] = []
        sampler = PowerSampler()
        error: BaseException | None = None
        try:
            batch = self.train_mode(model, run)
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=1e-5)
            for i in range(run.warmup_steps + run.timed_steps):
                if i == run.warmup_steps:
                    sampler.start()
                _sync(dev)
                t = time.perf_counter()
                loss = model(input_ids=batch, labels=batch).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                host_times.append(time.perf_counter() - t)
                _sync(dev)
                step_times.append(time.perf_counter() - t)
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at step {i}")
            sampler.stop()
            rec["final_loss"] = float(loss.item())
            del loss, batch
        except Exception as e:  # noqa: BLE001 - an OOM is a measurement; anything else is logged
            error = e
            sampler.stop()
        # Drop every reference to the run's tensors before freeing (the traceback holds frames).
        if error is not None:
            error.__traceback__ = None
        del optimizer
        model.zero_grad(set_to_none=True)
        mem = _mem_gib(dev)
        self._unwrap(model, run)
        del model
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        rec.update({"max_allocated_gib": mem["max_allocated_gib"], "max_reserved_gib": mem["max_reserved_gib"]})
        power = sampler.result()
        rec["power"] = power
        rec["max_nvml_used_gib"] = power.get("max_nvml_used_gib")
        rec["step_times_s"] = step_times
        rec["host_times_s"] = host_times
        if error is not None:
            rec["oom"] = _is_oom(error)
            rec["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}" if str(error) else type(error).__name__
            rec["completed_steps"] = len(step_times)
            return rec
        timed = step_times[run.warmup_steps:]
        step_s = statistics.median(timed)
        rec.update({
            "host_time_s": statistics.median(host_times[run.warmup_steps:]),
            "oom": False,
            "step_time_s": step_s,
            "step_time_min_s": min(timed), "step_time_max_s": max(timed),
            "tokens_per_s": rec["tokens_per_step"] / step_s,
        })
        if power.get("available"):
            tokens = rec["tokens_per_step"] * len(timed)
            rec["energy_per_token_j"] = power["energy_j"] / tokens
        return rec


def run_sweep(runs: Iterable[TrainRun], log: RunLog, *, device: str | None = None,
              progress: Callable[[str], None] | None = None, gpu_name: str | None = None,
              on_record: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Measure `runs` (grouped by model, each base model built once), skipping keys already in
    `log`; append each record at once. A run that fails for any other reason than OOM is logged
    with its error and the sweep goes on. Returns the new records."""
    say = progress or (lambda s: None)
    done = log.done_keys("train")
    todo = [r for r in runs if r.key not in done]
    by_model: dict[tuple[str, str | None], list[TrainRun]] = {}  # one session per (model, base format)
    for r in todo:
        by_model.setdefault((r.model, r.base_quant), []).append(r)
    out: list[dict[str, Any]] = []
    n_total, n_done = len(todo), 0
    for (model_name, base_quant), model_runs in by_model.items():
        try:
            session = TrainSession(model_name, device=device, gpu_name=gpu_name, base_quant=base_quant)
        except Exception as e:  # noqa: BLE001 - a model that cannot be built skips its runs
            if isinstance(e, LifecostError):
                raise
            say(f"[train] cannot build {model_name}: {type(e).__name__}: {e}")
            traceback.print_exc()
            n_done += len(model_runs)
            continue
        say(f"[train] built {model_name}{' (NF4 base)' if base_quant else ''} ({session.params_total / 1e9:.2f} B params) "
            f"in {session.build_s:.1f} s")
        for r in model_runs:
            n_done += 1
            t = time.perf_counter()
            rec = session.run(r)
            log.append(rec)
            out.append(rec)
            if on_record:
                on_record(rec)
            if rec.get("error"):
                say(f"[train {n_done}/{n_total}] {r.key}: {'OOM' if rec['oom'] else rec['error']} "
                    f"({time.perf_counter() - t:.1f} s)")
            else:
                say(f"[train {n_done}/{n_total}] {r.key}: step {rec['step_time_s'] * 1e3:.1f} ms, "
                    f"{rec['tokens_per_s']:.0f} tok/s, peak {rec['max_allocated_gib'] or 0:.2f} GiB "
                    f"({time.perf_counter() - t:.1f} s)")
        session.close()
    return out
