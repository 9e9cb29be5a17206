"""The training-job model: how long a fine-tune takes, whether it fits, and what it costs.

Arithmetic, in the order `TrainingPlan.steps` prints it:

1. **Dataset tokens** = samples × epochs × mean tokens per sample. Samples are assumed *packed*
   into rows of `seq_len_tok` tokens (concatenated, no padding), so every token computed is a
   dataset token and attention is costed at the causal average context (S+1)/2 of a row. Without
   packing, padding to the longest sample in a batch would add compute this model does not count.
2. **FLOPs** = tokens × training FLOPs per token (`models.flops.train_flops_per_token` at the
   chosen micro-batch: 6N + 3A for a full fine-tune, 4N + 3A + 6Nₐ for LoRA/QLoRA — plus
   2N_m + 3M/T on MoE models, where peft merges the adapters into the fused experts every
   forward — and one more forward when checkpointing). The arithmetic shown is built from
   `models.flops.train_flop_terms`, the terms that total is the sum of.
3. **Time** = FLOPs / (GPUs × peak bf16 FLOP/s × MFU × data-parallel efficiency). The MFU is the
   GPU card's default, replaced by a calibrated Profile's measured `training.mfu` when one exists;
   it is applied to every executed FLOP (recompute included), so checkpointing costs time.
4. **Memory**: `models.memory.training_memory_plan` per GPU (plain data parallelism: each GPU
   holds the whole model, optimizer and its micro-batch's activations — no ZeRO/FSDP sharding),
   plus a Profile's measured `training.memory_overhead_gib` when one exists.
   When `gradient_checkpointing` is None every (micro-batch ≤ requested, checkpointing on/off)
   pair that fits is timed and the fastest is chosen (ties → larger micro-batch); gradient
   accumulation keeps the global batch = requested micro-batch × GPUs.
5. **Data-parallel efficiency** (N > 1): gradients are all-reduced once per optimizer step with
   a ring, each GPU sending 2(N−1)/N × gradient bytes (Patarasuk & Yuan 2009, "Bandwidth optimal
   all-reduce algorithms for clusters of workstations", JPDC 69(2)) over the slowest link in the
   ring — NVLink (half the card's bidirectional figure) inside a node, or PCIe when the card has
   none, and `inter_node_gb_s` per GPU between nodes. PyTorch DDP overlaps the all-reduce with the
   backward pass of the last micro-batch (Li et al. 2020, "PyTorch Distributed", VLDB 13(12)), so
   only the part of the communication longer than that backward is exposed:
   efficiency = compute / (compute + exposed).
6. **Failures**: `simulator.failures.plan_checkpoints` (cluster MTBF, Daly-optimal checkpoint
   interval, restarts) turns the failure-free time into the expected wall-clock.
7. **GPU-hours, energy, dollars**: GPU-hours = GPUs × wall-clock; energy = GPU-hours × (TDP ×
   `train_power_fraction` + host overhead); dollars = GPU-hours × $/GPU-hour (+ energy × PUE ×
   $/kWh when on-prem).

Ranges: `mfu`, `mean_tokens` and `epochs` may be given as (low, high); every derived figure is
then a `Band` (low/mid/high) — low time from high MFU and few tokens, high time from the reverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from models.catalog import ModelCard, load_model
from models.errors import LifecostError
from models.flops import TrainFlops, train_flop_terms, train_flops_per_token
from models.gpus import GpuCard, load_gpu
from models.prices import GpuHourPrice, PriceSheet, gpu_hour_price, load_prices
from simulator.failures import CheckpointPlan, FailureModel, plan_checkpoints
from simulator.scenario import Scenario

GIB = 1024**3
GPUS_PER_NODE = 8  # HGX/DGX-class servers; `num_gpus` beyond this spans nodes
DEFAULT_INTER_NODE_GB_S = 50.0  # one 400 Gb/s InfiniBand NDR NIC per GPU, as in DGX H100 (per direction)
DEFAULT_CHECKPOINT_WRITE_GB_S = 2.0  # one datacenter NVMe drive's sustained sequential write


@dataclass(frozen=True)
class Band:
    """A figure with its uncertainty: low ≤ mid ≤ high (all equal when the inputs are exact)."""

    low: float
    mid: float
    high: float

    @staticmethod
    def of(x: "float | tuple[float, float] | Band") -> "Band":
        if isinstance(x, Band):
            return x
        if isinstance(x, (tuple, list)):
            if len(x) != 2:
                raise LifecostError(f"a range is (low, high), got {x!r}", field="range")
            lo, hi = float(x[0]), float(x[1])
            if lo > hi:
                lo, hi = hi, lo
            return Band(lo, (lo + hi) / 2.0, hi)
        v = float(x)
        return Band(v, v, v)

    def map(self, f) -> "Band":
        return Band(f(self.low), f(self.mid), f(self.high))

    def __mul__(self, k: float) -> "Band":
        return Band(self.low * k, self.mid * k, self.high * k)

    __rmul__ = __mul__

    @property
    def is_range(self) -> bool:
        return self.low != self.high

    def fmt(self, f=lambda v: f"{v:,.4g}") -> str:
        return f(self.mid) if not self.is_range else f"{f(self.mid)} ({f(self.low)} – {f(self.high)})"

    def as_dict(self) -> dict[str, float]:
        return {"low": self.low, "mid": self.mid, "high": self.high}


@dataclass(frozen=True)
class Step:
    """One line of shown arithmetic: `label = formula = value unit`."""

    label: str
    formula: str
    value: float
    unit: str = ""

    def text(self) -> str:
        if self.unit == "USD":
            return f"{self.label} = {self.formula} = ${self.value:,.2f}"
        return f"{self.label} = {self.formula} = {_human(self.value)}{(' ' + self.unit) if self.unit else ''}"


@dataclass(frozen=True)
class MemoryOption:
    """One (micro-batch, checkpointing) candidate: does it fit, and how long would it take."""

    micro_batch: int
    grad_ckpt: bool
    fits: bool
    needed_gib: float
    available_gib: float
    compute_s: float  # failure-free wall-clock at mid MFU and tokens


@dataclass(frozen=True)
class CommModel:
    """Per-optimizer-step gradient all-reduce and how much of it the backward pass hides."""

    num_gpus: int
    nodes: int
    grad_bytes: float
    link_gb_s: float
    allreduce_s: float
    overlap_s: float
    exposed_s: float
    step_compute_s: float

    @property
    def efficiency(self) -> float:
        return self.step_compute_s / (self.step_compute_s + self.exposed_s) if self.step_compute_s > 0 else 1.0


@dataclass(frozen=True)
class TrainingPlan:
    """Everything `lifecost train` prints. Time/energy/money are `Band`s (low/mid/high)."""

    scenario: str
    model: str
    gpu: str
    method: str
    num_gpus: int
    fits: bool
    verdict: str
    micro_batch: int
    grad_ckpt: bool
    grad_accum: int
    needed_gib: float
    available_gib: float
    options: list[MemoryOption]
    trainable_params: int
    dataset_tok: Band
    flops_per_tok: float
    total_flops: Band
    mfu: Band
    mfu_source: str
    comm: CommModel
    compute_s: Band  # failure-free wall-clock
    checkpoints: CheckpointPlan  # at mid
    wall_s: Band  # expected, with failures and restarts
    gpu_hours: Band
    energy_kwh: Band
    usd: Band  # one attempt
    expected_attempts: float
    price: GpuHourPrice
    steps: list[Step] = field(default_factory=list)

    @property
    def usd_expected(self) -> Band:
        """Dollars including failed attempts that must be redone."""
        return self.usd * self.expected_attempts

    def summary(self) -> dict[str, Any]:
        """Plain JSON-ready figures (for `--json`, reports and the dashboard)."""
        return {
            "scenario": self.scenario,
            "model": self.model,
            "gpu": self.gpu,
            "method": self.method,
            "num_gpus": self.num_gpus,
            "fits": self.fits,
            "verdict": self.verdict,
            "needed_gib": self.needed_gib,
            "available_gib": self.available_gib,
            "micro_batch": self.micro_batch,
            "gradient_checkpointing": self.grad_ckpt,
            "grad_accum": self.grad_accum,
            "trainable_params": self.trainable_params,
            "dataset_tok": self.dataset_tok.as_dict(),
            "flops_per_tok": self.flops_per_tok,
            "total_flops": self.total_flops.as_dict(),
            "mfu": self.mfu.as_dict(),
            "mfu_source": self.mfu_source,
            "dp_efficiency": self.comm.efficiency,
            "checkpoint_interval_s": self.checkpoints.interval_s,
            "young_interval_s": self.checkpoints.young_interval_s,
            "cluster_mtbf_h": self.checkpoints.cluster_mtbf_s / 3600.0,
            "expected_failures": self.checkpoints.expected_failures,
            "compute_h": (self.compute_s * (1 / 3600)).as_dict(),
            "wall_h": (self.wall_s * (1 / 3600)).as_dict(),
            "gpu_hours": self.gpu_hours.as_dict(),
            "energy_kwh": self.energy_kwh.as_dict(),
            "usd": self.usd.as_dict(),
            "expected_attempts": self.expected_attempts,
            "usd_expected": self.usd_expected.as_dict(),
            "price": self.price.label,
            "price_source": self.price.source,
            "steps": [{"label": s.label, "formula": s.formula, "value": s.value, "unit": s.unit} for s in self.steps],
            "options": [o.__dict__ for o in self.options],
        }


def _human(v: float) -> str:
    """18,000,000 → '18.0 M'; 1.2e18 → '1.2e+18'; small numbers as is."""
    a = abs(v)
    if a >= 1e15:
        return f"{v:.3g}"
    for unit, k in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if a >= k:
            return f"{v / k:,.3g} {unit}"
    if a >= 1000:
        return f"{v:,.0f}"
    return f"{v:,.4g}"


def _num(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.4g}"


def _range_text(b: Band, fmt=_num) -> str:
    return fmt(b.mid) if not b.is_range else f"{fmt(b.mid)} [{fmt(b.low)}–{fmt(b.high)}]"


def trainable_params(card: ModelCard, method: str, lora_r: int, lora_targets: str) -> int:
    """Parameters the optimizer updates: all of them for a full fine-tune, the adapters otherwise."""
    if method == "full":
        from models.params import params_total

        return params_total(card)
    from models.lora import lora_trainable_params

    return lora_trainable_params(card, lora_r, lora_targets)


def measured_training_terms(gpu_name: str) -> tuple[float, float, str] | None:
    """(mfu, memory overhead GiB, where) from a calibrated Profile of this GPU with training terms."""
    found = measured_training_profile(gpu_name)
    return (found[0].mfu, found[0].memory_overhead_gib, found[1]) if found else None


def measured_training_profile(gpu_name: str):
    """(TrainingTerms, where) of a calibrated Profile of this GPU with training terms, or None."""
    try:
        from models.profile import ENGINE_PREFERENCE, find_profile
    except ImportError:
        return None
    for engine in ENGINE_PREFERENCE:
        try:
            prof = find_profile(gpu_name, engine)
        except LifecostError:
            continue  # an unreadable profile must not stop planning; the datasheet default applies
        if prof is not None and prof.training is not None:
            return prof.training, f"measured (Profile {prof.key}, {prof.created_utc})"
    return None


def comm_model(
    gpu: GpuCard, num_gpus: int, grad_bytes: float, step_compute_s: float, backward_share: float, last_microbatch_s: float, inter_node_gb_s: float
) -> CommModel:
    """Ring all-reduce of the gradients once per optimizer step, hidden behind the last backward."""
    nodes = math.ceil(num_gpus / GPUS_PER_NODE)
    intra = gpu.nvlink_gb_s / 2.0 if gpu.nvlink_gb_s > 0 else gpu.host_link_gb_s
    link = intra if nodes == 1 else min(intra, inter_node_gb_s)
    if num_gpus == 1:
        return CommModel(1, 1, grad_bytes, link, 0.0, 0.0, 0.0, step_compute_s)
    allreduce_s = 2.0 * (num_gpus - 1) / num_gpus * grad_bytes / (link * 1e9)
    overlap_s = backward_share * last_microbatch_s
    return CommModel(num_gpus, nodes, grad_bytes, link, allreduce_s, overlap_s, max(0.0, allreduce_s - overlap_s), step_compute_s)


def _memory_plan(card: ModelCard, gpu: GpuCard, t, micro_batch: int, grad_ckpt: bool):
    from models.memory import training_memory_plan

    return training_memory_plan(
        card,
        gpu,
        method=t.method,
        seq_len_tok=t.seq_len_tok,
        micro_batch=micro_batch,
        grad_ckpt=grad_ckpt,
        optimizer=t.optimizer,
        lora_r=t.lora_r,
        lora_targets=t.lora_targets,
    )


def _micro_batches(requested: int) -> list[int]:
    """Powers of two below the requested micro-batch, and the requested one itself (largest first)."""
    out = {requested}
    b = 1
    while b < requested:
        out.add(b)
        b *= 2
    return sorted(out, reverse=True)


def plan_training(
    scenario: Scenario,
    *,
    mfu: float | tuple[float, float] | None = None,
    mean_tokens: float | tuple[float, float] | None = None,
    epochs: float | tuple[float, float] | None = None,
    sheet: PriceSheet | None = None,
    failures: FailureModel = FailureModel(),
    train_power_fraction: float = 1.0,
    inter_node_gb_s: float = DEFAULT_INTER_NODE_GB_S,
    checkpoint_write_gb_s: float = DEFAULT_CHECKPOINT_WRITE_GB_S,
    use_profile: bool = True,
) -> TrainingPlan:
    """Plan the scenario's fine-tune (see the module docstring for every formula).

    `mfu`, `mean_tokens`, `epochs` override the scenario's (a pair gives a low/high band).
    `train_power_fraction` is the GPUs' mean draw as a fraction of TDP while training; 1.0 (the
    default) is the upper bound a dense fine-tune approaches.
    """
    t = scenario.training
    if t.method == "none":
        raise LifecostError("this scenario trains nothing (training.method: none)", field="training.method", fix="set lora, qlora or full")
    if not 0.0 < train_power_fraction <= 1.0:
        raise LifecostError(f"must be in (0, 1], got {train_power_fraction}", field="train_power_fraction")
    card = load_model(scenario.model.name)
    gpu = load_gpu(scenario.gpu.name)
    sheet = sheet if sheet is not None else load_prices(scenario.prices.sheet)
    price = gpu_hour_price(sheet, scenario.prices.provider, gpu.name, scenario.prices.pricing, scenario.prices.usd_per_gpu_hour)
    n = t.num_gpus

    # 1. tokens
    tok_per_sample = Band.of(mean_tokens if mean_tokens is not None else t.mean_tokens)
    n_epochs = Band.of(epochs if epochs is not None else t.epochs)
    for name, b in (("mean_tokens", tok_per_sample), ("epochs", n_epochs)):
        if b.low <= 0:
            raise LifecostError(f"must be > 0, got {b.low:g}", field=f"training.{name}")
    dataset_tok = Band(t.samples * n_epochs.low * tok_per_sample.low, t.samples * n_epochs.mid * tok_per_sample.mid, t.samples * n_epochs.high * tok_per_sample.high)

    # MFU: explicit > measured Profile > GPU card default. A Profile's measured memory beyond the
    # analytic plan (allocator fragmentation, CUDA context, kernels' workspaces) is added to it, and
    # its step-time model (`train_step_time_s`: FLOPs at the GEMM efficiency + LoRA adapter traffic
    # + per-layer host time) times each micro-batch; the MFU shown is then the effective one.
    found = measured_training_profile(gpu.name) if use_profile else None
    extra_gib = found[0].memory_overhead_gib if found else 0.0
    step_terms = found[0] if (found and mfu is None) else None
    if mfu is not None:
        mfu_b, mfu_source = Band.of(mfu), "given"
    elif found:
        mfu_b, mfu_source = Band.of(found[0].mfu), found[1]
    else:
        mfu_b, mfu_source = Band.of(gpu.mfu_training), f"{gpu.name} card default"
    if not (0.0 < mfu_b.low and mfu_b.high <= 1.0):
        raise LifecostError(f"must be in (0, 1], got {mfu_b.low:g}–{mfu_b.high:g}", field="mfu")
    peak = gpu.bf16_tflops * 1e12

    n_train = trainable_params(card, t.method, t.lora_r, t.lora_targets)
    # Gradient and checkpoint sizes come from the memory plan's terms (independent of micro-batch):
    # the all-reduce moves the gradients (bf16 for a full fine-tune, fp32 adapters for LoRA), and a
    # resumable checkpoint holds the fp32 trainable weights (master copy or adapters) + optimizer.
    terms = _memory_plan(card, gpu, t, 1, True)
    grad_bytes = terms.gradients_gib * GIB
    ckpt_bytes = (terms.master_weights_gib + terms.adapters_gib + terms.optimizer_gib) * GIB

    def timing(micro_batch: int, ckpt: bool, tokens: float, mfu_v: float) -> tuple[float, float, CommModel]:
        terms_fl = flop_terms(card, t, micro_batch, ckpt)
        fpt = terms_fl.total
        accum = max(1, math.ceil(t.micro_batch / micro_batch))
        if step_terms is not None:  # the calibrated step model gives the effective MFU of this shape
            step_s = train_step_time_s(card, gpu, terms=step_terms, method=t.method, seq_len_tok=t.seq_len_tok, micro_batch=micro_batch,
                                       grad_ckpt=ckpt, lora_r=t.lora_r, lora_targets=t.lora_targets)
            mfu_v = fpt * micro_batch * t.seq_len_tok / (peak * step_s)
        mb_s = fpt * micro_batch * t.seq_len_tok / (peak * mfu_v)
        # backward share of one micro-batch: everything but the first forward (recompute sits in backward)
        backward_share = (fpt - terms_fl.forward) / fpt
        comm = comm_model(gpu, n, grad_bytes, accum * mb_s, backward_share, mb_s, inter_node_gb_s)
        compute_s = tokens * fpt / (n * peak * mfu_v * comm.efficiency)
        return fpt, compute_s, comm

    # 4. memory: the fastest fitting (micro-batch, checkpointing)
    ckpt_choices = [t.gradient_checkpointing] if t.gradient_checkpointing is not None else [False, True]
    options: list[MemoryOption] = []
    for mb in _micro_batches(t.micro_batch):
        for ck in ckpt_choices:
            mp = _memory_plan(card, gpu, t, mb, ck)
            _, cs, _ = timing(mb, ck, dataset_tok.mid, mfu_b.mid)
            needed = float(mp.needed_gib) + extra_gib
            options.append(MemoryOption(mb, ck, needed <= float(mp.available_gib), needed, float(mp.available_gib), cs))
    fitting = [o for o in options if o.fits]
    if fitting:
        fastest = min(o.compute_s for o in fitting)
        best = max((o for o in fitting if o.compute_s <= fastest * (1 + 1e-9)), key=lambda o: (o.micro_batch, not o.grad_ckpt))
        fits = True
        verdict = (
            f"fits: needs {best.needed_gib:,.1f} GiB of {best.available_gib:,.1f} GiB per GPU "
            f"(micro-batch {best.micro_batch}, gradient checkpointing {'on' if best.grad_ckpt else 'off'})"
        )
    else:
        best = min(options, key=lambda o: o.needed_gib)
        fits = False
        verdict = (
            f"does not fit: needs {best.needed_gib:,.1f} GiB, has {best.available_gib:,.1f} GiB per GPU "
            f"even at micro-batch {best.micro_batch} with gradient checkpointing {'on' if best.grad_ckpt else 'off'}"
        )
    mb, ck = best.micro_batch, best.grad_ckpt
    accum = max(1, math.ceil(t.micro_batch / mb))

    fpt, _, comm = timing(mb, ck, dataset_tok.mid, mfu_b.mid)
    if step_terms is not None:  # show the effective MFU of the chosen shape under the step model
        step_s = train_step_time_s(card, gpu, terms=step_terms, method=t.method, seq_len_tok=t.seq_len_tok, micro_batch=mb,
                                   grad_ckpt=ck, lora_r=t.lora_r, lora_targets=t.lora_targets)
        mfu_b = Band.of(fpt * mb * t.seq_len_tok / (peak * step_s))
        mfu_source += " — effective, from its step-time model"
    total_flops = dataset_tok * fpt
    # low time: few tokens at high MFU; high time: many tokens at low MFU
    compute_s = Band(
        timing(mb, ck, dataset_tok.low, mfu_b.high)[1],
        timing(mb, ck, dataset_tok.mid, mfu_b.mid)[1],
        timing(mb, ck, dataset_tok.high, mfu_b.low)[1],
    )

    # 6. failures and checkpoints
    checkpoint_s = ckpt_bytes / (checkpoint_write_gb_s * 1e9)
    ck_plans = [plan_checkpoints(c, n, checkpoint_s, failures) for c in (compute_s.low, compute_s.mid, compute_s.high)]
    wall_s = Band(*(p.expected_wall_s for p in ck_plans))

    # 7. GPU-hours, energy, dollars
    gpu_hours = wall_s * (n / 3600.0)
    host_w = price.on_prem.host_overhead_w if price.on_prem is not None else _host_overhead_w(sheet, gpu.name)
    watts = gpu.tdp_w * train_power_fraction + host_w
    energy_kwh = gpu_hours * (watts / 1000.0)
    energy_usd = energy_kwh.map(price.on_prem.energy_usd) if price.on_prem is not None else Band(0.0, 0.0, 0.0)
    usd = Band(
        gpu_hours.low * price.usd_per_gpu_hour + energy_usd.low,
        gpu_hours.mid * price.usd_per_gpu_hour + energy_usd.mid,
        gpu_hours.high * price.usd_per_gpu_hour + energy_usd.high,
    )

    steps = _steps(flop_terms(card, t, mb, ck), t, tok_per_sample, n_epochs, dataset_tok, fpt, total_flops, n, gpu, mfu_b, comm, compute_s, ck_plans[1], wall_s, gpu_hours, watts, energy_kwh, price, usd, energy_usd, failures)
    return TrainingPlan(
        scenario=scenario.name,
        model=card.name,
        gpu=gpu.name,
        method=t.method,
        num_gpus=n,
        fits=fits,
        verdict=verdict,
        micro_batch=mb,
        grad_ckpt=ck,
        grad_accum=accum,
        needed_gib=best.needed_gib,
        available_gib=best.available_gib,
        options=options,
        trainable_params=n_train,
        dataset_tok=dataset_tok,
        flops_per_tok=fpt,
        total_flops=total_flops,
        mfu=mfu_b,
        mfu_source=mfu_source,
        comm=comm,
        compute_s=compute_s,
        checkpoints=ck_plans[1],
        wall_s=wall_s,
        gpu_hours=gpu_hours,
        energy_kwh=energy_kwh,
        usd=usd,
        expected_attempts=failures.expected_attempts,
        price=price,
        steps=steps,
    )


def flop_terms(card: ModelCard, t, micro_batch: int, grad_ckpt: bool) -> TrainFlops:
    """The terms of `models.flops.train_flops_per_token` for the scenario's training spec `t` at
    this micro-batch and checkpointing choice (the plan's FLOPs/token is their `total`)."""
    return train_flop_terms(card, t.method, t.seq_len_tok, grad_ckpt, lora_r=t.lora_r, lora_targets=t.lora_targets,
                            micro_batch=micro_batch)


def _host_overhead_w(sheet: PriceSheet, gpu_name: str) -> float:
    """Host power per GPU from the sheet's on-prem assumptions (0 when the sheet has none for it)."""
    from models.prices import on_prem_for

    try:
        return on_prem_for(sheet, gpu_name).host_overhead_w
    except LifecostError:
        return 0.0


def _flops_rule(f: TrainFlops) -> tuple[str, str]:
    """The FLOPs/token rule and the same rule with `f`'s numbers, term by term as `TrainFlops`
    adds them (the MoE merge terms only where they are non-zero)."""
    n_mm, attn = _human(f.matmul_params), _human(f.attn_fwd_flops)
    if f.method == "full":
        rule, numbers = "6N + 3A", f"6 × {n_mm} + 3 × {attn}"
    else:
        rule, numbers = "4N + 3A + 6Nₐ", f"4 × {n_mm} + 3 × {attn} + 6 × {_human(f.adapter_params)}"
        if f.merged_weights or f.merge_flops_per_tok:
            rule += " + 2N_m + 3M/T"
            numbers += f" + 2 × {_human(f.merged_weights)} + 3 × {_human(f.merge_flops_per_tok)}"
    if f.grad_ckpt:
        rule += " + recompute"
        numbers += f" + {_human(f.recompute)}"
    return rule, numbers


def _steps(fl: TrainFlops, t, tok_per_sample, n_epochs, dataset_tok, fpt, total_flops, n, gpu, mfu_b, comm, compute_s, ckp, wall_s, gpu_hours, watts, energy_kwh, price, usd, energy_usd, failures) -> list[Step]:
    rule, numbers = _flops_rule(fl)
    steps = [
        Step("tokens", f"{t.samples:,} samples × {_range_text(n_epochs)} epochs × {_range_text(tok_per_sample)} tokens", dataset_tok.mid, "tok"),
        Step(
            "FLOPs/token",
            f"{t.method} {rule} = {numbers} (N = {_human(fl.matmul_params)} matmul params, A = {_human(fl.attn_fwd_flops)} attention FLOPs at ctx {(t.seq_len_tok + 1) / 2:,.1f}"
            + (f", Nₐ = {_human(fl.adapter_params)} adapter params" if t.method != "full" else "")
            + (f", N_m = {_human(fl.merged_weights)} merged expert/router weights, M/T = {_human(fl.merge_flops_per_tok)} B·A merge FLOPs per token"
               if fl.merged_weights or fl.merge_flops_per_tok else "") + ")",
            fpt,
            "FLOP",
        ),
        Step("FLOPs", f"{_human(dataset_tok.mid)} tok × {_human(fpt)} FLOP/tok", total_flops.mid, "FLOP"),
        Step("throughput", f"{n} GPU × {gpu.bf16_tflops:,.1f} TFLOP/s × MFU {_range_text(mfu_b, lambda v: f'{v:.2f}')} × DP eff {comm.efficiency:.3f}", n * gpu.bf16_tflops * 1e12 * mfu_b.mid * comm.efficiency, "FLOP/s"),
        Step("compute time", f"{_human(total_flops.mid)} FLOP / {_human(n * gpu.bf16_tflops * 1e12 * mfu_b.mid * comm.efficiency)} FLOP/s", compute_s.mid / 3600.0, "h"),
    ]
    if n > 1:
        steps.insert(
            3,
            Step(
                "DP efficiency",
                f"ring all-reduce {_human(comm.grad_bytes)}B × 2({n}−1)/{n} / {comm.link_gb_s:g} GB/s = {comm.allreduce_s * 1e3:,.1f} ms, "
                f"{comm.overlap_s * 1e3:,.1f} ms hidden by backward → compute / (compute + {comm.exposed_s * 1e3:,.1f} ms exposed)",
                comm.efficiency,
            ),
        )
    steps += [
        Step(
            "wall-clock",
            f"compute + checkpoints every {ckp.interval_s / 60:,.1f} min ({ckp.checkpoint_s:,.1f} s each) + restarts at cluster MTBF {ckp.cluster_mtbf_s / 3600:,.0f} h",
            wall_s.mid / 3600.0,
            "h",
        ),
        Step("GPU-hours", f"{n} GPU × {wall_s.mid / 3600:,.3g} h", gpu_hours.mid, "GPU-h"),
        Step("energy", f"{_human(gpu_hours.mid)} GPU-h × {watts:,.0f} W (TDP {gpu.tdp_w:,.0f} W + host)", energy_kwh.mid, "kWh"),
    ]
    money = f"{gpu_hours.mid:,.4g} GPU-h × ${price.usd_per_gpu_hour:,.3f}/GPU-h"
    if price.on_prem is not None:
        money += f" + {energy_kwh.mid:,.4g} kWh × PUE {price.on_prem.pue:g} × ${price.on_prem.usd_per_kwh:g}/kWh"
    steps.append(Step("cost", money, usd.mid, "USD"))
    if failures.expected_attempts != 1.0:
        steps.append(Step("expected cost", f"${usd.mid:,.2f} × {failures.expected_attempts:.3g} attempts", usd.mid * failures.expected_attempts, "USD"))
    return steps


def plan_training_for(
    model: str,
    gpu: str,
    method: str = "lora",
    *,
    samples: int = 5000,
    epochs: float | tuple[float, float] = 3.0,
    mean_tokens: int | tuple[float, float] = 1200,
    num_gpus: int = 1,
    provider: str = "aws",
    pricing: str = "on_demand",
    **overrides: Any,
) -> TrainingPlan:
    """`plan_training` from explicit arguments (a default Scenario with these fields set).

    Other TrainingSpec fields go in `overrides` as `training.<field>`-free names (`lora_r=8`,
    `seq_len_tok=4096`); keyword arguments of `plan_training` (`mfu=`, `sheet=`, …) pass through.
    """
    plan_kwargs = {k: overrides.pop(k) for k in list(overrides) if k in _PLAN_KWARGS}
    if isinstance(epochs, (tuple, list)):  # a range: the scenario holds its middle, the plan the band
        plan_kwargs["epochs"], epochs = epochs, Band.of(epochs).mid
    if isinstance(mean_tokens, (tuple, list)):
        plan_kwargs["mean_tokens"], mean_tokens = mean_tokens, max(1, round(Band.of(mean_tokens).mid))
    changes = {
        "model.name": model,
        "gpu.name": gpu,
        "training.method": method,
        "training.samples": samples,
        "training.epochs": epochs,
        "training.mean_tokens": mean_tokens,
        "training.num_gpus": num_gpus,
        "prices.provider": provider,
        "prices.pricing": pricing,
    }
    changes.update({f"training.{k}": v for k, v in overrides.items()})
    try:
        scenario = Scenario().with_changes(**changes)
    except Exception as e:  # pydantic ValidationError: report as a user error
        raise LifecostError(str(e).splitlines()[0], field="training") from None
    return plan_training(scenario, **plan_kwargs)


_PLAN_KWARGS = {"mfu", "sheet", "failures", "train_power_fraction", "inter_node_gb_s", "checkpoint_write_gb_s", "use_profile"}



# --- one training step on one GPU: what calibration fits and validation replays -------------------
def _train_memory_terms(card: ModelCard, gpu: GpuCard, *, method: str, seq_len_tok: int, micro_batch: int, grad_ckpt: bool,
                        lora_r: int = 16, lora_targets: str = "all-linear", optimizer: str = "adamw",
                        master_weights: bool = True, optimizer_state_bytes: float | None = None) -> float:
    """GiB of the analytic plan *without* its default overhead, for the run's precision setup.

    `master_weights=False` drops the fp32 master copy (pure-bf16 training); `optimizer_state_bytes`
    sets the bytes of each of AdamW's two states (2 when they are kept in bf16).
    """
    from models.memory import training_memory_plan

    mp = training_memory_plan(card, gpu, method=method, seq_len_tok=seq_len_tok, micro_batch=micro_batch, grad_ckpt=grad_ckpt,
                              optimizer=optimizer, lora_r=lora_r, lora_targets=lora_targets)
    gib = mp.needed_gib - mp.overhead_gib
    if not master_weights:
        gib -= mp.master_weights_gib
    if optimizer_state_bytes is not None and optimizer == "adamw":
        gib += mp.trainable_params * 2 * optimizer_state_bytes / GIB - mp.optimizer_gib
    return gib


def train_peak_memory_gib(card: ModelCard, gpu: GpuCard, *, terms=None, method: str, seq_len_tok: int, micro_batch: int,
                          grad_ckpt: bool, lora_r: int = 16, lora_targets: str = "all-linear", optimizer: str = "adamw",
                          master_weights: bool = True, optimizer_state_bytes: float | None = None) -> float:
    """Peak memory of one training step: the analytic plan (`training_memory_plan`, its default
    overhead included) plus a Profile's measured memory beyond it (`TrainingTerms.memory_overhead_gib`)."""
    from models.memory import TRAIN_OVERHEAD_GIB

    base = _train_memory_terms(card, gpu, method=method, seq_len_tok=seq_len_tok, micro_batch=micro_batch, grad_ckpt=grad_ckpt,
                               lora_r=lora_r, lora_targets=lora_targets, optimizer=optimizer, master_weights=master_weights,
                               optimizer_state_bytes=optimizer_state_bytes)
    return base + TRAIN_OVERHEAD_GIB + (terms.memory_overhead_gib if terms is not None else 0.0)


def train_step_flops(card: ModelCard, *, method: str, seq_len_tok: int, micro_batch: int, grad_ckpt: bool,
                     lora_r: int = 16, lora_targets: str = "all-linear") -> float:
    """FLOPs of one optimizer step of one micro-batch (`train_flops_per_token` × tokens)."""
    return (train_flops_per_token(card, method, seq_len_tok, grad_ckpt, lora_r=lora_r, lora_targets=lora_targets,
                                  micro_batch=micro_batch) * seq_len_tok * micro_batch)


def adapter_elems(card: ModelCard, *, method: str, seq_len_tok: int, micro_batch: int, grad_ckpt: bool,
                  lora_r: int = 16, lora_targets: str = "all-linear") -> float:
    """Elements of the adapted layers' inputs and outputs that the LoRA path touches in one step:
    tokens × passes (forward, backward, + recompute) × Σ over adapted matrices of (d_in + d_out)
    (= active adapter params / r). 0 for a full fine-tune."""
    if method == "full":
        return 0.0
    from models.lora import lora_active_params

    passes = 3 if grad_ckpt else 2
    return seq_len_tok * micro_batch * passes * lora_active_params(card, lora_r, lora_targets) / lora_r


def adapter_flops(card: ModelCard, *, method: str, seq_len_tok: int, micro_batch: int, grad_ckpt: bool,
                  lora_r: int = 16, lora_targets: str = "all-linear") -> float:
    """FLOPs of the LoRA adapters in one step: 6·Nₐ per token (2 forward, 4 backward), + 2·Nₐ when
    recomputed (the adapter share of `train_flops_per_token`). 0 for a full fine-tune."""
    if method == "full":
        return 0.0
    from models.lora import lora_active_params

    per_tok = (8.0 if grad_ckpt else 6.0) * lora_active_params(card, lora_r, lora_targets)
    return per_tok * seq_len_tok * micro_batch


# QLoRA's per-pass dequantization traffic per NF4 weight before a Profile measures it: read the
# 4-bit code (0.5 B) and its double-quantized absmax (1/64 B), write the bf16 weight (2 B)
# (bitsandbytes `dequantize_4bit`; Dettmers et al. 2023, §3).
DEQUANT_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 2.0


def dequant_passes_weights(card: ModelCard, *, method: str, grad_ckpt: bool) -> float:
    """NF4 weights dequantized per step × passes (forward, backward input-gradient, + recompute):
    0 unless QLoRA. Per step, not per token — the weights are dequantized once per matmul call."""
    if method != "qlora":
        return 0.0
    from models.memory import nf4_weights

    return nf4_weights(card) * (3 if grad_ckpt else 2)


def train_step_time_s(card: ModelCard, gpu: GpuCard, *, terms=None, method: str, seq_len_tok: int, micro_batch: int,
                      grad_ckpt: bool, lora_r: int = 16, lora_targets: str = "all-linear") -> float:
    """Seconds of one optimizer step of one micro-batch on one GPU — the formula of
    `models.profile.TrainingTerms`: max(GPU work, host launch time). Without a Profile's terms:
    FLOPs at the card's default MFU."""
    flops = train_step_flops(card, method=method, seq_len_tok=seq_len_tok, micro_batch=micro_batch, grad_ckpt=grad_ckpt,
                             lora_r=lora_r, lora_targets=lora_targets)
    if terms is None:
        return flops / (gpu.bf16_tflops * 1e12 * gpu.mfu_training)
    elems = adapter_elems(card, method=method, seq_len_tok=seq_len_tok, micro_batch=micro_batch, grad_ckpt=grad_ckpt,
                          lora_r=lora_r, lora_targets=lora_targets)
    per_layer = terms.layer_overhead_ckpt_s if grad_ckpt else terms.layer_overhead_s
    a_flops = adapter_flops(card, method=method, seq_len_tok=seq_len_tok, micro_batch=micro_batch, grad_ckpt=grad_ckpt,
                            lora_r=lora_r, lora_targets=lora_targets)
    dq = terms.dequant_bytes_per_weight if terms.dequant_bytes_per_weight is not None else DEQUANT_BYTES_PER_WEIGHT
    gpu_s = (flops / (gpu.bf16_tflops * 1e12 * terms.mfu) + terms.adapter_flops_factor * a_flops / (gpu.bf16_tflops * 1e12)
             + terms.adapter_bytes_per_elem * elems / (gpu.hbm_tb_s * 1e12) + card.num_layers * per_layer
             + dq * dequant_passes_weights(card, method=method, grad_ckpt=grad_ckpt) / (gpu.hbm_tb_s * 1e12)
             + terms.gpu_fixed_s)
    host_s = card.num_layers * terms.host_layer_s.get(f"{method}/ckpt{int(bool(grad_ckpt))}", 0.0)
    return max(gpu_s, host_s)  # launches overlap GPU work: the slower of the two sets the step
