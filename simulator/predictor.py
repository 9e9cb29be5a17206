"""How long one engine iteration takes: the step-time predictor.

One iteration of a continuous-batching engine computes P prefill tokens (possibly a chunk of a
prompt) and D decode tokens (one per running sequence). Its time is predicted from
physics-shaped features — FLOPs and bytes — so one set of coefficients transfers across model
sizes (DESIGN.md, "The step-time predictor"):

    linear FLOPs   = (P + D) · linear_flops_per_token(card)           GEMMs, 2·N_active per token
    attn prefill   = Σ_chunks (n·c + n(n+1)/2) · attn FLOPs per (query, key) pair
                     (a chunk of n tokens after c cached ones attends causally)
    attn decode    = Σ_decodes ctx_i · attn FLOPs per pair            (one query over ctx keys)
    weight bytes   = weight_bytes(card, quant)                        streamed once per step
                     (MoE: minus the routed experts no token of the step picks, see
                     `ModelCosts.weight_bytes_streamed`)
    KV bytes read  = (Σ_decodes ctx_i + Σ_chunks (c + n)) · kv_bytes_per_token(card, kv_dtype)

All per-GPU quantities are divided by the tensor-parallel degree; with TP > 1 each step also pays
two ring all-reduces per layer of the step's activations (Megatron-LM, Shoeybi et al. 2019, §3:
one after attention, one after the MLP; a ring all-reduce moves 2·(tp−1)/tp of the buffer).
With `preemption_mode: swap` a step also copies preempted requests' KV to host memory and back
over the host link (PCIe; the Profile's measured h2d/d2h rates when present), serialised with
the step as vLLM v0's swap did (the model waits for the block copies).

Two implementations behind one small interface (`StepTimePredictor`):

* `RooflinePredictor` — no measurements: max(compute time, memory time) with the GPU card's
  datasheet peaks × its documented efficiencies (Williams et al. 2009, "Roofline"). Weight
  formats with native tensor-core support use their own peak (fp8 → `fp8_tflops`, int8 W8A8 →
  `int8_tops`); weight-only int4 (AWQ/GPTQ/GGUF) computes in bf16.
* `FittedPredictor` — the DESIGN.md form with coefficients from a calibration Profile:
      t = c0_s + c0_layer_s·num_layers + c0_seq_s·num_seqs + c1·linear_FLOPs/peak
            + c2·weight_bytes/BW + c3·attn_prefill_FLOPs/peak + c4·KV_bytes_read/BW
  (on an engine with `attention_padding` — transformers CB — the padded sizes of
  `padded_attention`, with the attention priced as c3 passes over its bf16 score matrix at BW
  rather than FLOPs at peak, see `FittedPredictor._padded_lines`) with peak and BW the Profile's *measured* ceilings. c0_s ~ 1e-3…1e-2 s (scheduler, sampling,
  launches); c1…c4 ~ 1…3 (inverse efficiencies).

A per-weight-format factor multiplies the step time (dequantisation overhead). It is 1.0 until a
Profile measures it (`StepTimeCoeffs.quant_factors`): the roofline already charges quantised
weights at their smaller byte count, and we have no measurement of the kernels' overhead.

Speed: the simulator advances a run of k identical-composition decode steps at once. In such a
run every sequence's context grows by one token per step, so each step's time is a linear
function of the step index j (the roofline: the max of two linear functions, split at their
crossover). `run_time_s` sums that series in closed form and `steps_within_s` inverts it, so a
run costs O(1) whatever its length.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

from models.errors import LifecostError

# Per-weight-format step-time multipliers before calibration: 1.0 (see module docstring).
DEFAULT_QUANT_FACTOR = 1.0
SCORE_BYTES = 2  # one bf16 attention score (padded masked attention, `AttentionPadding`)


@dataclass(slots=True)
class StepFeatures:
    """What one engine iteration computes; plain ints so the hot loop builds it cheaply."""

    prefill_tok: int = 0  # P: prompt (or recomputed) tokens in prefill chunks
    decode_tok: int = 0  # D: decode tokens, one per decoding sequence
    decode_ctx_tok: int = 0  # Σ over decoding sequences of the keys attended (context incl. the new token)
    prefill_ctx_tok: int = 0  # Σ over prefill chunks of (cached context + chunk length)
    prefill_attn_pairs: int = 0  # Σ over prefill chunks of n·c + n(n+1)/2 causal (query, key) pairs
    num_seqs: int = 0
    swap_in_tok: int = 0  # KV tokens copied host → GPU (swapped-out requests readmitted)
    swap_out_tok: int = 0  # KV tokens copied GPU → host (requests preempted by swap)
    spec_tok_per_step: float = 0.0  # speculative decoding: Σ decoding sequences' tokens per target step (0: off)
    kv_load_s: float = 0.0  # tiered KV offload: seconds of prefix loads from lower tiers, serial on the host link


@dataclass(frozen=True, slots=True)
class ModelCosts:
    """Per-GPU cost constants of one model on one engine config, derived once from the cards."""

    linear_flops_per_tok: float  # FLOPs per token through the GEMMs (per GPU)
    attn_flops_per_pair: float  # FLOPs per (query, key) pair: QKᵀ and AV over all layers (per GPU)
    weight_bytes: float  # bytes of weights streamed each step (per GPU)
    kv_bytes_per_tok: float  # KV-cache bytes per token of context (per GPU)
    allreduce_bytes_per_tok: float  # bytes each token's activations put on the TP link per step
    link_bytes_s: float  # NVLink bandwidth per GPU, bytes/s (only used when TP > 1)
    routed_expert_bytes: float = 0.0  # of `weight_bytes`: the routed experts (MoE; 0 when dense)
    expert_skip_prob: float = 1.0  # chance one token's routing leaves a given expert untouched: 1 − k/E

    def weight_bytes_streamed(self, tokens: int) -> float:
        """Weight bytes a step of `tokens` tokens reads: all of a dense model; for MoE, the experts
        some token routes to. With uniform routing an expert stays untouched with probability
        (1 − k/E)^tokens (the occupancy argument); real, skewed routing touches fewer experts, so
        this is an upper bound that tends to all weights as the batch grows."""
        if not self.routed_expert_bytes:
            return self.weight_bytes
        return self.weight_bytes - self.routed_expert_bytes * self.expert_skip_prob**tokens

    @classmethod
    def from_cards(cls, card, gpu, quant: str, kv_dtype: str, tensor_parallel: int = 1) -> "ModelCosts":
        from models.flops import attn_flops_per_token, linear_flops_per_token
        from models.memory import kv_bytes_per_token_per_gpu, weight_bytes

        tp = tensor_parallel
        ref_ctx = 4096  # attention FLOPs are linear in context; read the slope at a long context
        pair = (attn_flops_per_token(card, ref_ctx) - attn_flops_per_token(card, 0)) / ref_ctx
        act_bytes = 2  # bf16 activations
        # Two all-reduces per layer of a hidden-size activation; a ring moves 2(tp−1)/tp of it.
        allreduce = 2 * card.num_layers * card.hidden_size * act_bytes * 2 * (tp - 1) / tp if tp > 1 else 0.0
        link = (gpu.nvlink_gb_s or 0.0) * 1e9 / 2  # the card gives bidirectional; a ring sends one way
        if tp > 1 and link <= 0:
            raise LifecostError(f"{gpu.name} has no NVLink bandwidth in its card, needed for tensor_parallel={tp}", field="gpu.tensor_parallel", fix="use tensor_parallel: 1 or a GPU with nvlink_gb_s")
        weights = weight_bytes(card, quant) / tp
        routed, skip = 0.0, 1.0
        if card.num_experts:
            from models.params import expert_params, params_total

            # routed experts' share of the parameters, applied to the bytes (exact in bf16; within a
            # few % when quantized, as embeddings stay 16-bit)
            routed = weights * card.num_experts * expert_params(card) * card.num_moe_layers / params_total(card)
            skip = 1.0 - card.num_experts_per_tok / card.num_experts
        return cls(
            linear_flops_per_tok=linear_flops_per_token(card) / tp,
            attn_flops_per_pair=pair / tp,
            weight_bytes=weights,
            kv_bytes_per_tok=kv_bytes_per_token_per_gpu(card, kv_dtype, tp),  # KV heads replicate when fewer than tp
            allreduce_bytes_per_tok=allreduce,
            link_bytes_s=link,
            routed_expert_bytes=routed,
            expert_skip_prob=skip,
        )


# --- closed forms over a run of steps whose time is max_i(a_i + b_i·j), j = 0, 1, … ---------------

Line = tuple[float, float]  # (a, b): step j takes a + b·j seconds


def _series(a: float, b: float, start: int, n: int) -> float:
    """Σ_{j=start}^{start+n−1} (a + b·j) — an arithmetic series."""
    return n * a + b * n * (2 * start + n - 1) / 2.0


NEVER = 1 << 62  # a crossover index that is never reached
Piecewise = tuple[float, float, int, float, float]  # (a1, b1, cross, a2, b2): line 1 for j < cross, then line 2


def piecewise_max(lines: tuple[Line, ...]) -> Piecewise:
    """max of one or two lines over j ≥ 0 as (line that is max at j = 0, crossover, the other)."""
    if len(lines) == 1:
        a, b = lines[0]
        return (a, b, NEVER, a, b)
    (a1, b1), (a2, b2) = lines
    if a1 < a2 or (a1 == a2 and b1 < b2):
        a1, b1, a2, b2 = a2, b2, a1, b1
    # line 1 is the max at j = 0; line 2 overtakes only if it grows faster
    if b2 <= b1:
        return (a1, b1, NEVER, a1, b1)
    cross = math.ceil((a1 - a2) / (b2 - b1))  # first j with line 2 ≥ line 1
    if cross <= 0:
        return (a2, b2, NEVER, a2, b2)
    return (a1, b1, cross, a2, b2)


def run_time_of(pw: Piecewise, num_steps: int) -> float:
    """Σ_{j<num_steps} step time j, in closed form."""
    a1, b1, cross, a2, b2 = pw
    if num_steps <= cross:
        return _series(a1, b1, 0, num_steps)
    return _series(a1, b1, 0, cross) + _series(a2, b2, cross, num_steps - cross)


def _first_n_reaching(a: float, b: float, start: int, target_s: float) -> int:
    """Smallest n ≥ 1 with Σ_{j=start}^{start+n−1}(a + b·j) ≥ target_s (quadratic formula)."""
    a0 = a + b * start
    if b <= 0.0:
        n = math.ceil(target_s / a0)
    else:
        lin = a0 - b / 2.0
        n = math.ceil((-lin + math.sqrt(lin * lin + 2.0 * b * target_s)) / b)
    if n < 1:
        n = 1
    # float fix-up: at most a step or two either way (series inlined: this is the hot loop)
    h = b / 2.0
    while n > 1 and (n - 1) * a0 + h * (n - 1) * (n - 2) >= target_s:
        n -= 1
    while n * a0 + h * n * (n - 1) < target_s:
        n += 1
    return n


def steps_within(pw: Piecewise, budget_s: float) -> int:
    """Smallest k ≥ 1 whose run time reaches `budget_s` (the step during which it elapses)."""
    if budget_s <= 0.0:
        return 1
    a1, b1, cross, a2, b2 = pw
    if cross == NEVER:
        return _first_n_reaching(a1, b1, 0, budget_s)
    first = _series(a1, b1, 0, cross)
    if first >= budget_s:
        return _first_n_reaching(a1, b1, 0, budget_s)
    return cross + _first_n_reaching(a2, b2, cross, budget_s - first)


def run_time_of_lines(lines: tuple[Line, ...], num_steps: int) -> float:
    return run_time_of(piecewise_max(lines), num_steps)


def steps_within_lines(lines: tuple[Line, ...], budget_s: float) -> int:
    return steps_within(piecewise_max(lines), budget_s)


def _pad_up(size: int, interval: int, cap: int | None) -> int:
    """`size` rounded up to a multiple of `interval`, at least one interval, at most `cap`
    (transformers `continuous_batching.utils.pad_to_interval`)."""
    padded = -(-size // interval) * interval if size > 0 else interval
    return padded if cap is None else min(padded, cap)


def padded_attention(f: StepFeatures, pad) -> tuple[int, int, int]:
    """(query tokens, (query, key) score pairs, KV tokens gathered) of a step on an engine that
    runs one masked attention over padded batch buffers (`models.profile.AttentionPadding`).

    The keys read from the cache are every scheduled sequence's cached context, Σ (context −
    tokens computed this step) = decode_ctx_tok + prefill_ctx_tok − P − D; the step's own
    tokens are appended to them. Every padded query scores against every padded key."""
    q = f.prefill_tok + f.decode_tok
    cached = max(0, f.decode_ctx_tok + f.prefill_ctx_tok - q)
    q_pad = _pad_up(q, pad.q_interval_tok, pad.max_q_tok)
    kv_tok = _pad_up(cached, pad.kv_interval_tok, pad.max_kv_tok) + q_pad
    return q_pad, q_pad * kv_tok, kv_tok


class StepTimePredictor(Protocol):
    """The interface the engine uses. `features` describe one step (or the first step of a run)."""

    name: str

    def step_time_s(self, f: StepFeatures) -> float:
        """Seconds one engine iteration with these features takes (> 0)."""

    def run_time_s(self, f: StepFeatures, num_steps: int) -> float:
        """Seconds for `num_steps` decode-only steps starting at `f`, each adding one context token per sequence."""

    def run_until_s(self, f: StepFeatures, max_steps: int, until_s: float) -> tuple[int, float]:
        """(steps, seconds) of such a run: `max_steps`, or fewer ending with the step during which `until_s` elapses."""


class _LinePredictor(ABC):
    """Shared machinery: a subclass says how a step's features map to linear pieces in j."""

    name = "base"

    @abstractmethod
    def _lines(self, f: StepFeatures) -> tuple[Line, ...]:
        """The step's time as one or two lines (a, b): step j of a decode run takes max(a + b·j)."""

    def step_time_s(self, f: StepFeatures) -> float:
        return max(a for a, _ in self._lines(f))

    def run_time_s(self, f: StepFeatures, num_steps: int) -> float:
        return run_time_of_lines(self._lines(f), num_steps)

    def run_until_s(self, f: StepFeatures, max_steps: int, until_s: float) -> tuple[int, float]:
        pw = piecewise_max(self._lines(f))
        k = max_steps
        if until_s != math.inf:
            k = min(k, steps_within(pw, until_s))
        if k == 1:
            return 1, pw[0]
        return k, run_time_of(pw, k)


class RooflinePredictor(_LinePredictor):
    """max(compute, memory) at the GPU card's peak × efficiency — the uncalibrated default."""

    name = "roofline"

    def __init__(self, card, gpu, quant: str = "bf16", kv_dtype: str = "bf16", tp: int = 1, *, quant_factor: float = DEFAULT_QUANT_FACTOR):
        self.costs = c = ModelCosts.from_cards(card, gpu, quant, kv_dtype, tp)
        compute_dtype = quant if quant in ("fp8", "int8") else "bf16"  # W8A8; int4 formats are weight-only
        self.flops_s = gpu.peak_tflops(compute_dtype) * 1e12 * gpu.flops_efficiency
        self.bytes_s = gpu.hbm_tb_s * 1e12 * gpu.hbm_efficiency
        self.quant_factor = q = quant_factor
        # seconds per unit of each feature, precomputed for the hot loop
        self._s_per_tok = c.linear_flops_per_tok / self.flops_s * q
        self._s_per_pair = c.attn_flops_per_pair / self.flops_s * q
        self._s_weights = c.weight_bytes / self.bytes_s * q
        self._s_routed = c.routed_expert_bytes / self.bytes_s * q  # MoE: minus the experts no token touches
        self._skip = c.expert_skip_prob
        self._s_per_kv_tok = c.kv_bytes_per_tok / self.bytes_s * q
        self._s_comm_per_tok = c.allreduce_bytes_per_tok / c.link_bytes_s if c.allreduce_bytes_per_tok else 0.0
        host = gpu.host_link_gb_s * 1e9  # datasheet PCIe rate, per direction
        self._s_swap_in_per_tok = self._s_swap_out_per_tok = c.kv_bytes_per_tok / host

    def _lines(self, f: StepFeatures) -> tuple[Line, ...]:
        tokens = f.prefill_tok + f.decode_tok
        comm = tokens * self._s_comm_per_tok + f.kv_load_s  # prefix loads from offload tiers wait with the step
        if f.swap_in_tok or f.swap_out_tok:
            comm += f.swap_in_tok * self._s_swap_in_per_tok + f.swap_out_tok * self._s_swap_out_per_tok
        pair, kv = self._s_per_pair, self._s_per_kv_tok
        compute_a = self._s_per_tok * tokens + pair * (f.prefill_attn_pairs + f.decode_ctx_tok) + comm
        weights = self._s_weights - self._s_routed * self._skip**tokens if self._s_routed else self._s_weights
        memory_a = weights + kv * (f.decode_ctx_tok + f.prefill_ctx_tok) + comm
        return ((compute_a, pair * f.decode_tok), (memory_a, kv * f.decode_tok))


class FittedPredictor(_LinePredictor):
    """The DESIGN.md fitted form with a Profile's coefficients and measured ceilings."""

    name = "fitted"

    def __init__(self, profile, card, gpu, quant: str = "bf16", kv_dtype: str = "bf16", tp: int = 1):
        st = profile.step_time
        if st is None:
            raise LifecostError(f"Profile {profile.key} has no step_time section", field="engine.profile", fix="run `lifecost calibrate` with serving sweeps, or use profile: roofline")
        if st.c0_s <= 0 and st.c2 <= 0 and st.c0_layer_s <= 0:
            raise LifecostError(f"Profile {profile.key} has c0_s = c2 = 0: a decode step would take no time", field="engine.profile step_time", fix="re-fit the Profile (c0_s is the fixed per-step overhead)")
        self.profile = profile
        self.costs = ModelCosts.from_cards(card, gpu, quant, kv_dtype, tp)
        ceil = profile.ceilings
        self.flops_s = (ceil.gemm_bf16_tflops or gpu.bf16_tflops) * 1e12
        self.bytes_s = (ceil.hbm_copy_tb_s or gpu.hbm_tb_s) * 1e12
        self.c0_s, self.c1, self.c2, self.c3, self.c4 = st.c0_s, st.c1, st.c2, st.c3, st.c4
        self.quant_factor = q = st.quant_factors.get(quant, DEFAULT_QUANT_FACTOR)
        c = self.costs
        # seconds per unit of each feature, coefficients and quant factor folded in
        # per-step host time: a fixed part and one per decoder layer (Profile `c0_layer_s`)
        self._s_fixed = (self.c0_s + st.c0_layer_s * card.num_layers + self.c2 * c.weight_bytes / self.bytes_s) * q
        self._s_routed = self.c2 * c.routed_expert_bytes / self.bytes_s * q  # MoE: minus the experts no token touches
        self._skip = c.expert_skip_prob
        self._s_per_tok = self.c1 * c.linear_flops_per_tok / self.flops_s * q
        self._s_per_pair = self.c3 * c.attn_flops_per_pair / self.flops_s * q
        self._s_per_kv_tok = self.c4 * c.kv_bytes_per_tok / self.bytes_s * q
        self._s_comm_per_tok = c.allreduce_bytes_per_tok / c.link_bytes_s if c.allreduce_bytes_per_tok else 0.0
        self._s_swap_in_per_tok = c.kv_bytes_per_tok / ((ceil.h2d_gb_s or gpu.host_link_gb_s) * 1e9)
        self._s_swap_out_per_tok = c.kv_bytes_per_tok / ((ceil.d2h_gb_s or gpu.host_link_gb_s) * 1e9)
        self._pad = st.attention_padding  # None: per-request causal attention (vLLM)
        self._s_per_seq = st.c0_seq_s * q  # per scheduled sequence host time (Profile `c0_seq_s`)
        if self._pad is not None:
            # masked attention over the batch materialises one score per (query head, query, key)
            # in every layer: c3 counts bf16 passes over that matrix at the measured bandwidth
            heads = card.num_attention_heads / tp
            self._s_per_score_pair = self.c3 * card.num_layers * heads * SCORE_BYTES / self.bytes_s * q
            # each gathered key's K/V bytes move 3 + 2g times (g = query heads per KV head): the
            # cache gather reads and writes them, repeat_kv reads them and writes g copies (a
            # masked SDPA gets no GQA), the attention kernel reads the g copies
            group = card.num_attention_heads / max(1, card.num_kv_heads)
            self._s_per_gathered_key = self._s_per_kv_tok * (3 + 2 * group)

    def _host_and_copies_s(self, f: StepFeatures, tokens: int) -> float:
        """The step's terms that do not depend on how attention is batched: KV loads from an
        offload tier, swap copies, fixed and per-sequence host time, and the weight bytes of MoE
        experts no token routed to (subtracted). Summed left to right, as both callers did."""
        return (
            f.kv_load_s
            + f.swap_in_tok * self._s_swap_in_per_tok
            + f.swap_out_tok * self._s_swap_out_per_tok
            + self._s_fixed
            + self._s_per_seq * f.num_seqs
            - (self._s_routed * self._skip**tokens if self._s_routed else 0.0)
        )

    def _lines(self, f: StepFeatures) -> tuple[Line, ...]:
        if self._pad is not None:
            return self._padded_lines(f)
        tokens = f.prefill_tok + f.decode_tok
        kv = self._s_per_kv_tok
        a = (
            self._host_and_copies_s(f, tokens)
            + (self._s_per_tok + self._s_comm_per_tok) * tokens
            + self._s_per_pair * f.prefill_attn_pairs
            + kv * (f.decode_ctx_tok + f.prefill_ctx_tok)
        )
        return ((a, kv * f.decode_tok),)

    def _padded_lines(self, f: StepFeatures) -> tuple[Line, ...]:
        """The step on padded batch buffers (`padded_attention`): the GEMMs run on the padded
        queries, the KV gather on kv_tok tokens, and the masked attention materialises
        q_pad × kv_tok scores per query head and layer. That matrix, not the FLOPs, sets the
        attention's cost: a masked SDPA cannot use the fused flash kernel, so each score is
        written and read back (mask, softmax) — c3 is the number of bf16 passes over it. Its
        size follows the query heads, not their width: on the H100 the 8B (32 heads of 128)
        prefilled 2048 tokens at about 2.2× the 1B's (32 heads of 64) attention time, not the 4× its
        FLOPs per (query, key) pair would say. The KV term moves each gathered key's K/V
        3 + 2g times (g query heads per KV head; transformers `cache_allocators` gather, then
        `repeat_kv` because a masked SDPA runs without GQA, then the kernel's read). Over a run
        of decode steps the cached keys grow by D per step; the padded size grows in steps of
        one interval, on average by D per step, which is the slope used (exact at j = 0)."""
        q_pad, pairs, kv_tok = padded_attention(f, self._pad)
        tokens = f.prefill_tok + f.decode_tok
        kv = self._s_per_gathered_key
        a = (
            self._host_and_copies_s(f, tokens)
            + self._s_per_tok * q_pad
            + self._s_comm_per_tok * tokens
            + self._s_per_score_pair * pairs
            + kv * kv_tok
        )
        return ((a, (self._s_per_score_pair * q_pad + kv) * f.decode_tok),)


def make_predictor(scenario, card=None, gpu=None, profiles_dir=None) -> StepTimePredictor:
    """The predictor a Scenario asks for: its Profile's fit when one applies, else the roofline.

    `engine.profile`: "auto" → the stored vLLM Profile for this GPU if it has step-time
    coefficients, else the roofline; "roofline" → always the roofline; anything else → a Profile
    path or `<gpu>/<engine>` key, which must exist and hold step-time coefficients. "auto" takes
    only a vLLM Profile because the simulated engine is vLLM: a fit of another engine (e.g. the
    transformers continuous-batching fallback, whose attention and per-layer host time are many
    times slower) describes that engine, and is used only when named.
    """
    from models.catalog import load_model
    from models.gpus import load_gpu
    from models.profile import find_profile, load_profile

    card = card or load_model(scenario.model.name)
    gpu = gpu or load_gpu(scenario.gpu.name)
    m, tp = scenario.model, scenario.gpu.tensor_parallel
    choice = scenario.engine.profile
    profile = None
    if choice == "auto":
        found = find_profile(gpu.name, "vllm", profiles_dir=profiles_dir)
        if found is not None and found.step_time is not None:  # a partial Profile without a fit: roofline
            profile = found
    elif choice != "roofline":
        profile = load_profile(choice, profiles_dir=profiles_dir)
    if profile is None:
        return RooflinePredictor(card, gpu, m.quant, m.kv_dtype, tp)
    return FittedPredictor(profile, card, gpu, m.quant, m.kv_dtype, tp)
