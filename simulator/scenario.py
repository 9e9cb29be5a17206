"""The Scenario: one validated, versioned object that names everything a run needs.

A Scenario is loaded from YAML (`load_scenario`) and is composed of small parts, each a pydantic
model with defaults, so a user file only states what differs from the embedded default
(`examples/default.yaml`). Validation errors name the field *and the line* of the YAML file
(we keep the YAML node marks and map pydantic's error locations back onto them).

Units are in the field names: `_s` seconds, `_tok` tokens, `_gib` GiB, `_usd` dollars, `_qps`
requests per second.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.errors import LifecostError

SCHEMA_VERSION = 1
MAX_SCENARIO_BYTES = 1_000_000  # a scenario is a small text file; refuse anything bigger

WeightQuant = Literal["bf16", "fp16", "fp8", "int8", "int4-awq", "int4-gptq", "int4-gguf"]
KvDtype = Literal["bf16", "fp16", "fp8"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Part):
    """Which LLM: a catalog name (`lifecost models list`) or a path to a HF `config.json`."""

    name: str = "Llama-3.1-8B"
    quant: WeightQuant = "bf16"
    kv_dtype: KvDtype = "bf16"


class GpuSpec(_Part):
    """Which accelerator (`lifecost gpus list`) and how many per replica (tensor parallel)."""

    name: str = "H100-SXM"
    tensor_parallel: int = Field(1, ge=1, le=64)


class EngineSpec(_Part):
    """vLLM-style engine knobs; names follow vLLM's `EngineArgs` where one exists."""

    block_size_tok: int = Field(16, ge=1, le=1024)
    max_num_seqs: int = Field(256, ge=1)
    max_num_batched_tokens: int = Field(8192, ge=1)
    max_model_len_tok: int = Field(8192, ge=16)
    gpu_memory_utilization: float = Field(0.90, gt=0.0, le=1.0)
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"
    preemption_mode: Literal["recompute", "swap"] = "recompute"
    # Step-time predictor: "auto" uses the Profile for (GPU, engine) when one exists, else the
    # roofline; "roofline" forces the datasheet model; anything else names a Profile file/key.
    profile: str = "auto"


class LengthDist(_Part):
    """A token-length distribution.

    fixed: `value`; uniform: [`low`, `high`]; lognormal: `mean` and `sigma` (of the underlying
    normal's log-space std), clipped to [`low`, `high`]; empirical: column `column` of CSV `path`.
    """

    kind: Literal["fixed", "uniform", "lognormal", "empirical"] = "fixed"
    value: int | None = Field(None, ge=1)
    low: int = Field(1, ge=1)
    high: int | None = Field(None, ge=1)
    mean: float | None = Field(None, gt=0)
    sigma: float = Field(0.5, ge=0)
    path: str | None = None
    column: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "LengthDist":
        need = {"fixed": ["value"], "uniform": ["high"], "lognormal": ["mean"], "empirical": ["path", "column"]}
        for name in need[self.kind]:
            if getattr(self, name) is None:
                raise ValueError(f"a {self.kind} length distribution needs `{name}`")
        if self.high is not None and self.high < self.low:
            raise ValueError(f"`high` ({self.high}) is below `low` ({self.low})")
        return self


class PrefixSpec(_Part):
    """Shared prefixes for prefix caching: `num_prefixes` system prompts of `prefix_tok` tokens,
    a request uses one with probability `share_prob` (Zipf-ish popularity `zipf_s`)."""

    num_prefixes: int = Field(1, ge=1)
    prefix_tok: int = Field(0, ge=0)
    share_prob: float = Field(0.0, ge=0.0, le=1.0)
    zipf_s: float = Field(1.0, ge=0.0)


class ReasoningSpec(_Part):
    """Reasoning ("detailed thinking on/off"): a fraction `on_frac` of this class's requests think
    first, emitting `thinking_tok` extra output tokens before the answer, capped at
    `thinking_budget_tok` when set (budget forcing, Muennighoff et al. 2025, "s1")."""

    on_frac: float = Field(0.0, ge=0.0, le=1.0)
    thinking_tok: LengthDist = LengthDist(kind="lognormal", mean=2000, sigma=0.8, low=16, high=32000)
    thinking_budget_tok: int | None = Field(None, ge=1)


class RequestClass(_Part):
    """One class of traffic with its own length mix, priority and (optional) SLO override."""

    name: str = "chat"
    weight: float = Field(1.0, gt=0)
    prompt_tok: LengthDist = LengthDist(kind="lognormal", mean=600, sigma=0.8, low=16, high=6000)
    output_tok: LengthDist = LengthDist(kind="lognormal", mean=250, sigma=0.7, low=4, high=2000)
    priority: int = 0
    prefix: PrefixSpec = PrefixSpec()
    reasoning: ReasoningSpec = ReasoningSpec()
    # Speculative-decoding acceptance rate for this class (overrides speculative.acceptance_rate).
    spec_acceptance_rate: float | None = Field(None, ge=0.0, lt=1.0)


class ArrivalSpec(_Part):
    """How requests arrive.

    poisson: exponential gaps at `rate_qps`; gamma: gaps with coefficient of variation `cv`
    (cv > 1 is bursty); diurnal: a Poisson process whose rate follows `diurnal_shape` (24 hourly
    multipliers of `rate_qps`, mean-normalised); trace: times and lengths from `trace_path`
    (CSV/JSONL with `arrival_time_s, prompt_tokens, output_tokens[, class, prefix_id]`, or the
    Splitwise/Vidur `arrived_at, num_prefill_tokens, num_decode_tokens`), optionally time-scaled
    to `rate_qps`.
    """

    kind: Literal["poisson", "gamma", "diurnal", "trace"] = "poisson"
    rate_qps: float | None = Field(None, gt=0)  # 4.0 for synthetic arrivals when not given
    cv: float = Field(1.0, gt=0)
    diurnal_shape: list[float] | None = None
    trace_path: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_rate(cls, data: Any) -> Any:
        """Synthetic arrivals default to 4 req/s; a trace replays at its own timestamps unless
        `rate_qps` asks for time-scaling."""
        if isinstance(data, dict) and data.get("kind", "poisson") != "trace" and "rate_qps" not in data:
            data = {**data, "rate_qps": 4.0}
        return data

    @model_validator(mode="after")
    def _check(self) -> "ArrivalSpec":
        if self.kind == "trace" and not self.trace_path:
            raise ValueError("a trace arrival process needs `trace_path`")
        if self.kind != "trace" and self.rate_qps is None:
            raise ValueError(f"a {self.kind} arrival process needs `rate_qps`")
        if self.diurnal_shape is not None:
            if len(self.diurnal_shape) != 24 or min(self.diurnal_shape) < 0 or sum(self.diurnal_shape) <= 0:
                raise ValueError("`diurnal_shape` must be 24 non-negative hourly multipliers, not all zero")
        return self


class WorkloadSpec(_Part):
    arrival: ArrivalSpec = ArrivalSpec()
    classes: list[RequestClass] = Field(default_factory=lambda: [RequestClass()], min_length=1)
    num_requests: int = Field(2000, ge=1)


class SloSpec(_Part):
    """Service-level objectives; a request meets the SLO when all its set bounds hold."""

    ttft_p99_s: float | None = Field(1.0, gt=0)
    tpot_p99_s: float | None = Field(0.060, gt=0)
    e2e_p99_s: float | None = Field(None, gt=0)
    attainment: float = Field(0.99, gt=0, le=1)


class PricesSpec(_Part):
    """Where $/GPU-hour come from: the bundled dated sheet, or `sheet` (a user YAML)."""

    sheet: str | None = None
    provider: str = "aws"
    pricing: Literal["on_demand", "reserved_1y", "reserved_3y", "spot", "on_prem"] = "on_demand"
    usd_per_gpu_hour: float | None = Field(None, gt=0)  # overrides the sheet when set


class HorizonSpec(_Part):
    """The plan's lifetime and its traffic."""

    months: int = Field(12, ge=1, le=240)
    requests_per_day: float = Field(2_000_000, gt=0)
    monthly_growth: float = Field(0.05, gt=-1.0)
    diurnal_peak_to_mean: float = Field(1.8, ge=1.0)
    autoscale: bool = True


class TrainingSpec(_Part):
    """The fine-tune that precedes serving (and its retrains)."""

    method: Literal["none", "lora", "qlora", "full"] = "lora"
    lora_r: int = Field(16, ge=1)
    lora_targets: Literal["all-linear", "attention"] = "all-linear"
    samples: int = Field(5000, ge=1)
    epochs: float = Field(3.0, gt=0)
    mean_tokens: int = Field(1200, ge=1)
    seq_len_tok: int = Field(2048, ge=16)
    micro_batch: int = Field(4, ge=1)
    gradient_checkpointing: bool | None = None  # None: choose the cheapest that fits
    optimizer: Literal["adamw", "adamw-8bit", "sgd"] = "adamw"
    num_gpus: int = Field(1, ge=1)
    retrain_every_months: int | None = Field(3, ge=1)


class KvTierSpec(_Part):
    """One KV offload tier below HBM. Bandwidths default from the GPU card's host link (host
    DRAM) or typical NVMe figures; a measured Profile overrides them."""

    name: Literal["host", "nvme", "remote"] = "host"
    capacity_gib: float = Field(256.0, gt=0)
    read_gb_s: float | None = Field(None, gt=0)
    write_gb_s: float | None = Field(None, gt=0)


class OffloadSpec(_Part):
    """Tiered KV offload (LMCache / vLLM KV-offloading style): evicted or finished prefixes go
    down a tier instead of vanishing; a later prefix hit loads them back at tier bandwidth
    (contending for the host link) instead of recomputing the prefill."""

    enabled: bool = False
    tiers: list[KvTierSpec] = Field(
        default_factory=lambda: [KvTierSpec(name="host", capacity_gib=256.0), KvTierSpec(name="nvme", capacity_gib=2048.0)],
        min_length=1,
    )


class SpeculativeSpec(_Part):
    """Speculative decoding: `num_draft_tok` (k) drafted tokens per step, each accepted with
    probability `acceptance_rate` (α); expected tokens per target step (1−α^(k+1))/(1−α)
    (Leviathan et al. 2023, eq. 1)."""

    method: Literal["none", "draft", "eagle", "ngram"] = "none"
    num_draft_tok: int = Field(4, ge=1, le=64)
    acceptance_rate: float = Field(0.7, ge=0.0, lt=1.0)
    draft_model: str | None = None  # catalog name or config path, for method: draft
    head_step_frac: float = Field(0.05, ge=0.0, le=1.0)  # EAGLE head step as a fraction of the target step


class AutoscaleSpec(_Part):
    """Autoscaling (`simulator/autoscale.py`): every `interval_s` the pool wants
    ⌈outstanding tokens ÷ target_outstanding_tok⌉ replicas within [min, max]; it scales out above
    the target, in below half of it; a new replica serves after `cold_start_s` but is paid for
    from the decision. Applies to each pool of a disaggregated cluster."""

    enabled: bool = False
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(8, ge=1)
    interval_s: float = Field(60.0, gt=0)
    cold_start_s: float = Field(120.0, ge=0)
    target_outstanding_tok: int = Field(50_000, ge=1)  # per replica; scale out above, in below half


class DisaggSpec(_Part):
    """Disaggregated prefill/decode pools with KV transfer over a link (Splitwise, DistServe;
    `simulator/disagg.py`). Per-GPU one-way bandwidth by `link`: nvlink 450 GB/s, infiniband
    50 GB/s (400 Gb/s NDR), ethernet 12.5 GB/s (100 GbE); `link_gb_s` overrides it."""

    enabled: bool = False
    prefill_replicas: int = Field(1, ge=1)
    decode_replicas: int = Field(1, ge=1)
    link: Literal["nvlink", "infiniband", "ethernet"] = "infiniband"
    link_gb_s: float | None = Field(None, gt=0)  # default from `link`


class ClusterSpec(_Part):
    """Many replicas of the engine behind a router (`simulator/cluster.py`, `router.py`); each
    replica is `gpu.tensor_parallel` GPUs. With disaggregation the pools' sizes replace `replicas`."""

    replicas: int = Field(1, ge=1)
    router: Literal["round_robin", "random", "least_outstanding_tokens", "prefix_affinity"] = "round_robin"
    autoscale: AutoscaleSpec = AutoscaleSpec()
    disaggregated: DisaggSpec = DisaggSpec()


class Scenario(_Part):
    """Everything one lifecost run needs. `schema_version` lets old files be refused clearly."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = "default"
    seed: int = 0
    model: ModelSpec = ModelSpec()
    gpu: GpuSpec = GpuSpec()
    engine: EngineSpec = EngineSpec()
    workload: WorkloadSpec = WorkloadSpec()
    slo: SloSpec = SloSpec()
    prices: PricesSpec = PricesSpec()
    horizon: HorizonSpec = HorizonSpec()
    training: TrainingSpec = TrainingSpec()
    offload: OffloadSpec = OffloadSpec()
    speculative: SpeculativeSpec = SpeculativeSpec()
    cluster: ClusterSpec = ClusterSpec()

    def digest(self) -> str:
        """Stable content hash: caches (Streamlit, sweeps) key on it."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_changes(self, **dotted: Any) -> "Scenario":
        """A copy with dotted-path fields replaced, re-validated: `s.with_changes(**{"engine.max_num_seqs": 64})`."""
        data = self.model_dump(mode="python")
        for path, value in dotted.items():
            node = data
            *parents, leaf = path.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        return Scenario.model_validate(data)


def scenario_to_yaml(s: Scenario) -> str:
    return yaml.safe_dump(s.model_dump(mode="json", exclude_none=True), sort_keys=False)


def _node_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at pydantic location `loc` (deepest node that exists)."""
    node, line = root, None
    for key in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Validate YAML text into a Scenario; errors name the field and line."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise LifecostError(f"not valid YAML ({getattr(e, 'problem', e)})", field=where, fix="check indentation and quoting") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LifecostError("a scenario must be a YAML mapping of sections (model:, gpu:, engine:, …)", field=source)
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = _node_line(root, loc)
        where = f"{source}:{line} {field}" if line else f"{source} {field}"
        msg = err["msg"].removeprefix("Value error, ")
        extra = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise LifecostError(f"{msg}{extra}", field=where, fix="see examples/default.yaml for the schema") from None


def load_scenario(path: str | Path | None = None) -> Scenario:
    """Load a Scenario from YAML; `None` gives the embedded default scenario."""
    if path is None:
        return Scenario()
    p = Path(path)
    if not p.is_file():
        raise LifecostError(f"no such file {str(p)!r}", field="scenario", fix="pass a path to a scenario YAML (see examples/)")
    if p.stat().st_size > MAX_SCENARIO_BYTES:
        raise LifecostError(f"{p} is {p.stat().st_size} bytes; a scenario is at most {MAX_SCENARIO_BYTES}", field="scenario")
    return parse_scenario(p.read_text(encoding="utf-8"), source=str(p))

