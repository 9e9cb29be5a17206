"""LoRA trainable parameters, exactly as peft 0.21 counts them on transformers 5.x models.

A LoRA adapter on a `d_in → d_out` matrix adds A (r × d_in) and B (d_out × r): r·(d_in + d_out)
trainable parameters (Hu et al. 2021, "LoRA", §4.1); biases stay frozen (peft `bias="none"`).

Target sets:
- `"attention"`: every attention projection — q/k/v/o for GQA models; for MLA (DeepSeek-V3)
  q_a/q_b (or q), kv_a_proj_with_mqa, kv_b_proj and o_proj, because MLA has no k/v projections
  and a literal `["q_proj","k_proj","v_proj","o_proj"]` would adapt only `o_proj` there.
  `lora_target_modules(card, "attention")` gives the list to hand to peft.
- `"all-linear"`: what peft's `target_modules="all-linear"` wraps. On a dense model that is
  every `nn.Linear` but the output head (attention + MLP). transformers 5 stores MoE experts as
  fused 3-D parameters (`experts.gate_up_proj` E × 2m × h, `experts.down_proj` E × h × m) and
  routers as custom modules, so peft 0.21 (`utils/transformers_weight_conversion.py`,
  `_convert_peft_config_moe`) maps the v4 names onto `target_parameters`: the router weight
  (rank r), `gate_up_proj` (rank 2r — gate and up were two matrices in v4) and `down_proj`
  (rank r), each a `ParamWrapper` with A of shape (r·E × d_in) and B (d_out × r·E). Because
  the v4 names `gate_proj/up_proj/down_proj` are moved to the experts, the plain `nn.Linear`
  MLPs of such models (DeepSeek-V3's first dense layers and shared experts, Qwen3-MoE's
  `mlp_only_layers`) are *not* adapted. We reproduce that, since the count must equal peft's.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.catalog import ModelCard
from models.errors import LifecostError
from models.params import LinearShape, attention_shapes, linear_shapes

LORA_TARGETS = ("all-linear", "attention")

# Model types whose MoE blocks peft 0.21 converts to v5 target_parameters (its
# `_MODEL_TO_CONVERSION_PATTERN` maps these to the "mixtral"/"qwen2_moe" conversions).
_PEFT_MOE_CONVERTED = ("mixtral", "qwen3_moe", "deepseek_v3")


@dataclass(frozen=True)
class AdaptedMatrix:
    """One adapted weight family: its shape and the LoRA rank peft gives it."""

    shape: LinearShape
    rank: int

    @property
    def params(self) -> int:
        return self.rank * (self.shape.in_features + self.shape.out_features) * self.shape.count

    @property
    def merged(self) -> bool:
        """True for peft `ParamWrapper` targets (fused experts, routers): peft folds B·A into the
        weight once per forward instead of running x·A·B per token."""
        return self.shape.role in ("expert", "router")

    @property
    def active_params(self) -> float:
        """Adapter weights one token multiplies by: r·(d_in + d_out) per copy the token uses;
        0 for merged (`ParamWrapper`) targets, whose adapters the token never touches."""
        if self.merged:
            return 0.0
        return self.rank * (self.shape.in_features + self.shape.out_features) * self.shape.active

    @property
    def merge_flops(self) -> float:
        """FLOPs of forming B·A for every copy (E experts × layers) once: 2·r·d_in·d_out each."""
        return 2.0 * self.rank * self.shape.in_features * self.shape.out_features * self.shape.count if self.merged else 0.0


def _check(r: int, targets: str) -> None:
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise LifecostError(f"LoRA rank {r!r} must be a positive integer", field="lora_r", fix="use e.g. 8, 16 or 64")
    if targets not in LORA_TARGETS:
        raise LifecostError(f"unknown LoRA target set {targets!r}", field="lora_targets",
                            fix="use one of: " + ", ".join(LORA_TARGETS))


def adapted_matrices(card: ModelCard, r: int, targets: str = "all-linear") -> list[AdaptedMatrix]:
    """The matrices peft adapts for `targets`, each with its effective rank."""
    _check(r, targets)
    if targets == "attention":
        return [AdaptedMatrix(s, r) for s in attention_shapes(card)]
    out = []
    for s in linear_shapes(card):
        if s.role == "lm_head":
            continue  # peft excludes the output embedding from all-linear
        if card.model_type in _PEFT_MOE_CONVERTED and card.is_moe and s.role in ("mlp", "shared_expert"):
            continue  # names re-pointed at the fused experts; see module docstring
        out.append(AdaptedMatrix(s, 2 * r if s.name == "experts.gate_up_proj" else r))
    return out


def lora_trainable_params(card: ModelCard, r: int, targets: str = "all-linear") -> int:
    """Trainable LoRA parameters = peft's count for `LoraConfig(r=r, target_modules=...)`."""
    return sum(m.params for m in adapted_matrices(card, r, targets))


def lora_active_params(card: ModelCard, r: int, targets: str = "all-linear") -> float:
    """Adapter parameters a single token passes through (for FLOPs); merged targets excluded."""
    return sum(m.active_params for m in adapted_matrices(card, r, targets))


def lora_merged_active_weights(card: ModelCard, r: int, targets: str = "all-linear") -> float:
    """Base weights a token multiplies by whose *merged* (W + B·A) copy requires grad, so
    backward computes their full weight gradient (the routed top-k experts and the router)."""
    return sum(m.shape.active_weights for m in adapted_matrices(card, r, targets) if m.merged)


def lora_merge_flops(card: ModelCard, r: int, targets: str = "all-linear") -> float:
    """FLOPs of one forward's B·A merges over all layers (per step, not per token)."""
    return sum(m.merge_flops for m in adapted_matrices(card, r, targets))


def lora_target_modules(card: ModelCard, targets: str = "all-linear") -> str | list[str]:
    """The `target_modules` argument that makes peft adapt exactly `targets`."""
    _check(1, targets)
    if targets == "all-linear":
        return "all-linear"
    return [s.name for s in attention_shapes(card)]
