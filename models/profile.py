"""The calibration Profile: measured numbers for one (GPU, engine), versioned, read-only here.

Why a separate, versioned file: the simulator runs anywhere on CPU, but its fidelity comes from
measurements taken once on the target GPU (Vidur's profiling contract: measured data keyed by
`<gpu>/<engine>` feeds a simulator that then needs no GPU). `calibrate` writes Profiles; the
simulator only reads them. A Profile may be partial — a calibration that measured ceilings but
never ran a serving sweep still helps — so every measured section is optional.

Layout on disk: `models/profiles/<gpu catalog name>/<engine name>.json` (see
`models/profiles/README.md` for the field-by-field format). `schema_version` lets a newer
lifecost refuse an older file with a clear message instead of misreading it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import LifecostError

PROFILE_SCHEMA_VERSION = 1
PROFILES_DIR = Path(__file__).parent / "profiles"
MAX_PROFILE_BYTES = 5_000_000  # a Profile is a small JSON file; refuse anything bigger
# Order in which `find_profile(gpu)` (no engine named) looks: for a GPU's engine-independent
# sections (ceilings, training, energy) a transformers-CB calibration is as good as a vLLM one.
# Step times are engine-specific: `simulator.predictor.make_predictor` asks for "vllm" only.
ENGINE_PREFERENCE = ("vllm", "transformers-cb")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileGpu(_Section):
    """Which GPU was measured: the name as pynvml reports it and the matching catalog name."""

    name: str  # e.g. "NVIDIA H100 80GB HBM3" (pynvml.nvmlDeviceGetName)
    catalog_name: str  # e.g. "H100-SXM" (`lifecost gpus list`)
    memory_gib: float | None = Field(None, gt=0)
    driver: str | None = None
    cuda: str | None = None


class ProfileEngine(_Section):
    """Which serving engine produced the step-time measurements."""

    name: str  # "vllm" | "transformers-cb" | "openai-http"
    version: str
    # the engine settings the step-time fit was measured with (step budget, CUDA graphs, block
    # size, ...): a Profile holds for that configuration; validation replays only runs that match
    settings: dict[str, Any] | None = None


class FitStats(_Section):
    """How well a fitted formula reproduced the points it was fitted on."""

    n_points: int = Field(ge=1)
    r2: float = Field(le=1.0)
    mape: float = Field(ge=0.0)  # mean absolute percentage error, as a fraction (0.05 = 5 %)


class Ceilings(_Section):
    """Measured hardware ceilings (micro-benchmarks); each may be missing in a partial Profile.

    Reference on one H100 80GB HBM3 (DESIGN.md): 8192³ bf16 GEMM ≈ 770 TFLOP/s, device-to-device
    copy ≈ 2.96 TB/s (read + write counted), pinned host→device ≈ 55 GB/s.
    """

    gemm_bf16_tflops: float | None = Field(None, gt=0)
    # median rate of the probe's GEMM grid over training-sized shapes (M ≥ 2048 tokens, K and N ≥
    # 2048): what a training step's big matmuls run at (`calibrate.fit.gemm_train_tflops`)
    gemm_train_tflops: float | None = Field(None, gt=0)
    hbm_copy_tb_s: float | None = Field(None, gt=0)
    h2d_gb_s: float | None = Field(None, gt=0)
    d2h_gb_s: float | None = Field(None, gt=0)


class AttentionPadding(_Section):
    """How an engine that runs one masked attention over the whole step sizes its buffers.

    The transformers continuous-batching engine with `paged|sdpa` (transformers 5.17–5.19,
    `continuous_batching/input_outputs.py`, `model_runner.maybe_pad_inputs`) concatenates every
    query of the step into one sequence and attends it to every key it read, under a mask: each
    layer computes q_pad × (kv_pad + q_pad) (query, key) scores and gathers kv_pad + q_pad keys
    and values, whatever each request's own context. With CUDA graphs the query count is rounded
    up to a multiple of `q_interval_tok` (≤ `max_q_tok`) and the keys read from the cache to a
    multiple of `kv_interval_tok` (≥ one interval even when nothing is cached; ≤ `max_kv_tok`);
    without padding both intervals are 1. With a padding rule the fitted predictor prices the
    attention as c3 bf16 passes over the q_pad × kv_tok score matrix of every query head and
    layer (a masked SDPA materialises it), and the KV term on the kv_tok keys gathered, whose
    K/V bytes move 3 + 2g times (gather, `repeat_kv` to the g query heads per KV head, read).
    None on a StepTimeCoeffs: per-request causal
    attention (vLLM's kernels), the features are the unpadded ones.
    """

    q_interval_tok: int = Field(1, ge=1)
    kv_interval_tok: int = Field(1, ge=1)
    max_q_tok: int | None = Field(None, ge=1)
    max_kv_tok: int | None = Field(None, ge=1)


class StepTimeCoeffs(_Section):
    """Coefficients of the fitted step-time formula (DESIGN.md, "The step-time predictor").

    t_step = c0_s + c0_layer_s·num_layers + c0_seq_s·num_seqs + c1·linear_FLOPs/peak + c2·weight_bytes/HBM_BW
             + c3·attn_prefill_FLOPs/peak + c4·KV_bytes_read/HBM_BW
    where peak = `Ceilings.gemm_bf16_tflops` and HBM_BW = `Ceilings.hbm_copy_tb_s` of the same
    Profile (the datasheet values when a ceiling is missing). c0_s is seconds (typically
    1e-3 … 1e-2: scheduler, sampling, kernel launches); c1…c4 are dimensionless inverse
    efficiencies (typically 1 … 3: a c2 of 1.2 means weights stream at 1/1.2 of measured copy
    bandwidth). `quant_factors` multiply the whole step time per weight format (e.g.
    {"int4-awq": 1.15} when dequantisation costs 15 %); missing formats use 1.0.
    """

    c0_s: float = Field(ge=0.0)
    # host time per decoder layer per step (s): kernel launches and per-layer Python that an
    # engine pays on every step whatever the batch; it makes the fixed cost grow with depth
    c0_layer_s: float = Field(0.0, ge=0.0)
    # host time per scheduled sequence per step (s): engines that build each step's inputs in a
    # Python loop over its requests (transformers CB: `prepare_batch_tensors`, the per-request
    # attention mask) pay it on every step, whatever the model size; 0 when not fitted
    c0_seq_s: float = Field(0.0, ge=0.0)
    c1: float = Field(ge=0.0)
    c2: float = Field(ge=0.0)
    c3: float = Field(ge=0.0)
    c4: float = Field(ge=0.0)
    fit: FitStats
    quant_factors: dict[str, float] = Field(default_factory=dict)
    fit_model: str | None = None  # model card (name) whose runs were fitted, for provenance
    # the engine's attention over padded batch buffers (transformers CB); None: per-request attention
    attention_padding: AttentionPadding | None = None


class TrainingTerms(_Section):
    """Measured training terms: step-time model coefficients and memory beyond the analytic plan.

    Step time of one micro-batch (`simulator.training.train_step_time_s`) is the larger of the
    GPU's work and the host's time to launch it, t = max(G, H): PyTorch issues kernels
    asynchronously, so a step is GPU-bound (the host runs ahead) or launch-bound (the GPU waits)
    — adding the two would count the overlapped time twice. H = num_layers · host_layer_s[setup]
    ("<method>/ckpt<0|1>"), the launch time per decoder layer measured on the fit model's
    launch-bound runs (those whose host time, `calibrate.train`, equals their wall time);
    absent for a Profile fitted without host times (G alone). G is
        G = FLOPs / (peak_bf16 · mfu)                                  GEMMs and attention
          + adapter_flops_factor · adapter_FLOPs / peak_bf16           LoRA adapters' fp32 matmuls
          + adapter_bytes_per_elem · adapter_elems / HBM_BW            LoRA adapters' fp32 traffic
          + num_layers · (layer_overhead_ckpt_s if checkpointing else layer_overhead_s)
          + dequant_bytes_per_weight · NF4 weights · passes / HBM_BW    QLoRA only
          + gpu_fixed_s                                                 per-step GPU time at zero tokens
    with peak_bf16 and HBM_BW the GPU card's datasheet figures (MFU convention of PaLM, Chowdhery
    et al. 2022, App. B), FLOPs = `train_flops_per_token` × tokens, and adapter_elems = tokens ×
    passes (2, 3 with recompute) × Σ over adapted matrices of (d_in + d_out): peft casts each
    adapted layer's input to its fp32 adapters and the fp32 result back, an elementwise cost
    that no FLOP count sees; and the adapters' own matmuls (6·Nₐ per token, 8·Nₐ with recompute)
    run in fp32, far below the bf16 tensor-core peak — `adapter_flops_factor` is their extra
    cost on top of the bf16 rate they are already charged in FLOPs. QLoRA dequantizes every NF4
    matrix to bf16 before each matmul that uses it (bitsandbytes `matmul_4bit`: once in the
    forward, once in the backward for the input gradient, once more when recomputed), a pass over
    the weights whose bytes no FLOP count sees: `dequant_bytes_per_weight` (analytic default
    `simulator.training.DEQUANT_BYTES_PER_WEIGHT`, read NF4 + absmax, write bf16) is fitted from
    QLoRA runs when the Profile has some. The per-layer terms are host time (kernel launches, autograd,
    checkpoint bookkeeping, the per-tensor optimizer update) that the GPU does not hide.
    `effective_mfu` reports, per "<method>/ckpt<0|1>" setup, the measured FLOPs / (time × peak)
    averaged over the fit runs (what the classic one-number MFU would have been).
    Peak memory (`train_peak_memory_gib`) = `models.memory.training_memory_plan` (its default
    overhead included) + `memory_overhead_gib`, the measured peak reserve beyond it.
    """

    mfu: float = Field(gt=0.0, le=1.0)
    memory_overhead_gib: float = Field(0.0, ge=0.0)
    fit: FitStats | None = None
    adapter_bytes_per_elem: float = Field(0.0, ge=0.0)
    adapter_flops_factor: float = Field(0.0, ge=0.0)
    layer_overhead_s: float = Field(0.0, ge=0.0)
    layer_overhead_ckpt_s: float = Field(0.0, ge=0.0)
    dequant_bytes_per_weight: float | None = Field(None, ge=0.0)  # None: not measured, the analytic default
    gpu_fixed_s: float = Field(0.0, ge=0.0)
    host_layer_s: dict[str, float] = Field(default_factory=dict)  # "<method>/ckpt<0|1>" → launch s per layer
    effective_mfu: dict[str, float] = Field(default_factory=dict)
    memory_fit: FitStats | None = None
    fit_model: str | None = None  # model card whose runs were fitted, for provenance


class EnergyTerms(_Section):
    """Measured energy: joules per prefill / decode token (board power, pynvml) and idle power."""

    prefill_j_per_tok: float | None = Field(None, ge=0.0)
    decode_j_per_tok: float | None = Field(None, ge=0.0)
    idle_w: float | None = Field(None, ge=0.0)


class Profile(_Section):
    """One calibration of one (GPU, engine). Every measured section is optional (partial Profile)."""

    schema_version: Literal[1] = PROFILE_SCHEMA_VERSION
    gpu: ProfileGpu
    engine: ProfileEngine
    created_utc: str  # ISO 8601, e.g. "2026-11-22T19:00:00Z"
    command: str  # the exact command that produced this file
    ceilings: Ceilings = Ceilings()
    step_time: StepTimeCoeffs | None = None
    training: TrainingTerms | None = None
    energy: EnergyTerms | None = None

    @property
    def key(self) -> str:
        return f"{gpu_dir_name(self.gpu.catalog_name)}/{self.engine.name}"


def gpu_dir_name(name: str) -> str:
    """Directory-safe GPU name: 'NVIDIA H100 80GB HBM3' → 'NVIDIA-H100-80GB-HBM3'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    """Validate JSON text into a Profile; errors name the file and the field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LifecostError(f"not valid JSON ({e.msg} at line {e.lineno})", field=source) from None
    if not isinstance(data, dict):
        raise LifecostError("a Profile must be a JSON object", field=source)
    version = data.get("schema_version")
    if version != PROFILE_SCHEMA_VERSION:
        raise LifecostError(
            f"schema_version {version!r} is not supported (this lifecost reads {PROFILE_SCHEMA_VERSION})",
            field=f"{source} schema_version",
            fix="re-run `lifecost calibrate` with this version of lifecost",
        )
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise LifecostError(err["msg"], field=f"{source} {loc}", fix="see models/profiles/README.md for the format") from None


def profile_path(catalog_gpu: str, engine: str, profiles_dir: Path | None = None) -> Path:
    """Where the Profile of (GPU, engine) lives: `<profiles dir>/<gpu>/<engine>.json`. An existing
    GPU directory whose name differs only in case (`h100-sxm` for `H100-SXM`) is used as is."""
    root = profiles_dir or PROFILES_DIR
    name = gpu_dir_name(catalog_gpu)
    folder = root / name
    if not folder.is_dir() and root.is_dir():
        folder = next((d for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower() == name.lower()), folder)
    return folder / f"{engine}.json"


def load_profile(key_or_path: str | Path, profiles_dir: Path | None = None) -> Profile:
    """Load a Profile from a file path, or from a key `<gpu>/<engine>` under the profiles dir."""
    p = Path(key_or_path)
    if not p.is_file():
        parts = str(key_or_path).split("/")
        if len(parts) == 2 and not str(key_or_path).endswith(".json"):
            p = profile_path(parts[0], parts[1], profiles_dir)
    if not p.is_file():
        raise LifecostError(
            f"no Profile file or key {str(key_or_path)!r}",
            field="engine.profile",
            fix="give a path to a Profile JSON, a key like 'H100-SXM/vllm', 'auto' or 'roofline'",
        )
    if p.stat().st_size > MAX_PROFILE_BYTES:
        raise LifecostError(f"{p} is {p.stat().st_size} bytes; a Profile is at most {MAX_PROFILE_BYTES}", field="engine.profile")
    return parse_profile(p.read_text(encoding="utf-8"), source=str(p))


def find_profile(gpu_name: str, engine: str | None = None, profiles_dir: Path | None = None) -> Profile | None:
    """The stored Profile for a GPU (catalog or pynvml name) and engine, or None when none exists.

    With `engine=None`, engines are tried in `ENGINE_PREFERENCE` order (vLLM first: the
    simulated engine is vLLM-style).
    """
    root = profiles_dir or PROFILES_DIR
    engines = (engine,) if engine else ENGINE_PREFERENCE
    for eng in engines:
        direct = profile_path(gpu_name, eng, root)
        if direct.is_file():
            return load_profile(direct)
    if not root.is_dir():
        return None
    # A GPU directory may be named by its pynvml name; match on the names stored inside.
    for eng in engines:
        for path in sorted(root.glob(f"*/{eng}.json")):
            prof = load_profile(path)
            if gpu_name in (prof.gpu.catalog_name, prof.gpu.name):
                return prof
    return None


def save_profile(profile: Profile, path: str | Path) -> Path:
    """Write a Profile as JSON atomically (temp file + rename), so a reader never sees half a file."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(profile.model_dump_json(indent=2, exclude_none=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
