"""Exact parameter counts, tensor by tensor, as transformers 5.x instantiates each family.

Why tensor by tensor: FLOPs (2 per weight per token), weight bytes per quantization format,
and LoRA adapter sizes all need the *shapes* of the matrices, not only a total. `linear_shapes`
lists every matrix a token multiplies by; `params_total` adds the non-matmul tensors (input
embedding, RMSNorm weights, biases). The tests build each catalog model with
`AutoModelForCausalLM.from_config(cfg)` under `torch.device("meta")` and require
`sum(p.numel() for p in model.parameters())` to equal `params_total` to the parameter.

Definitions:
- **total** = what `model.parameters()` yields (tied input/output embeddings count once;
  registered *buffers* such as DeepSeek-V3's `e_score_correction_bias` and rotary tables are
  not parameters and are not counted).
- **active** (per token) = total − the routed experts a token does not use:
  `total − (num_experts − top_k) · expert_params · num_moe_layers`. Shared experts, routers,
  attention, dense layers, embeddings and lm_head are all counted as active. This is the
  convention of the Mixtral paper (Jiang et al. 2024, "13B active") and DeepSeek-V3's technical
  report ("37B activated"); the input embedding is counted even though a token only reads one
  row of it, so `active` is a memory-footprint-style figure, while `linear_flops_per_token` in
  `flops.py` uses only matrices actually multiplied.

DeepSeek-V3 vs its "671B" headline: transformers' `DeepseekV3ForCausalLM` does not build the
multi-token-prediction module (`num_nextn_predict_layers = 1`, ~14B more parameters in the
published 685B checkpoint) and keeps the router's `e_score_correction_bias` (256 per MoE layer,
58 × 256 = 14,848 values) as a buffer, so its parameter count is 671,026,404,352 — the 671B of
the technical report minus those 14,848 bias values.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.catalog import ModelCard


@dataclass(frozen=True)
class LinearShape:
    """`count` copies of an `in_features → out_features` weight matrix.

    `role` is one of: attn, mlp (dense MLP), expert (routed, fused as transformers 5 stores
    them: `gate_up_proj` is one `in → 2·moe_inter` matrix per expert), shared_expert, router,
    lm_head. `active` is how many of the `count` copies one token multiplies by (top-k of the
    routed experts; all of the rest). `bias` is True when each copy carries an `out_features`
    bias vector.
    """

    name: str
    in_features: int
    out_features: int
    count: int
    role: str
    active: float
    bias: bool = False

    @property
    def weights(self) -> int:
        return self.in_features * self.out_features * self.count

    @property
    def active_weights(self) -> float:
        return self.in_features * self.out_features * self.active


def attention_shapes(card: ModelCard) -> list[LinearShape]:
    """Attention projections of all layers (GQA q/k/v/o, or MLA's low-rank projections)."""
    h, n_layers, heads = card.hidden_size, card.num_layers, card.num_attention_heads
    if card.is_mla:
        # DeepSeek-V2/V3 MLA (modeling_deepseek_v3.py): q via a low-rank bottleneck (q_a → norm →
        # q_b) unless q_lora_rank is None; kv_a produces the compressed latent plus the shared rope
        # key; kv_b expands the latent to per-head nope-keys and values.
        qk = card.qk_nope_head_dim + card.qk_rope_head_dim
        shapes = []
        if card.q_lora_rank is None:
            shapes.append(LinearShape("q_proj", h, heads * qk, n_layers, "attn", n_layers))
        else:
            shapes += [LinearShape("q_a_proj", h, card.q_lora_rank, n_layers, "attn", n_layers, card.qkv_bias),
                       LinearShape("q_b_proj", card.q_lora_rank, heads * qk, n_layers, "attn", n_layers)]
        shapes += [
            LinearShape("kv_a_proj_with_mqa", h, card.kv_lora_rank + card.qk_rope_head_dim, n_layers, "attn",
                        n_layers, card.qkv_bias),
            LinearShape("kv_b_proj", card.kv_lora_rank, heads * (card.qk_nope_head_dim + card.v_head_dim), n_layers,
                        "attn", n_layers),
            LinearShape("o_proj", heads * card.v_head_dim, h, n_layers, "attn", n_layers, card.o_bias),
        ]
        return shapes
    q_out, kv_out = heads * card.head_dim, card.num_kv_heads * card.head_dim
    return [
        LinearShape("q_proj", h, q_out, n_layers, "attn", n_layers, card.qkv_bias),
        LinearShape("k_proj", h, kv_out, n_layers, "attn", n_layers, card.qkv_bias),
        LinearShape("v_proj", h, kv_out, n_layers, "attn", n_layers, card.qkv_bias),
        LinearShape("o_proj", q_out, h, n_layers, "attn", n_layers, card.o_bias),
    ]


def mlp_shapes(card: ModelCard) -> list[LinearShape]:
    """SwiGLU MLP matrices: dense layers, routed experts, shared experts, routers."""
    h = card.hidden_size
    dense_layers = card.num_layers - card.num_moe_layers
    shapes: list[LinearShape] = []
    if dense_layers:
        i = card.intermediate_size
        shapes += [LinearShape("gate_proj", h, i, dense_layers, "mlp", dense_layers, card.mlp_bias),
                   LinearShape("up_proj", h, i, dense_layers, "mlp", dense_layers, card.mlp_bias),
                   LinearShape("down_proj", i, h, dense_layers, "mlp", dense_layers, card.mlp_bias)]
    if card.num_moe_layers:
        m, e, k, n = card.moe_intermediate_size, card.num_experts, card.num_experts_per_tok, card.num_moe_layers
        shapes += [LinearShape("gate", h, e, n, "router", n),
                   LinearShape("experts.gate_up_proj", h, 2 * m, e * n, "expert", k * n),
                   LinearShape("experts.down_proj", m, h, e * n, "expert", k * n)]
        if card.num_shared_experts:
            # DeepseekV3MoE: one MLP of width moe_intermediate_size × n_shared_experts.
            s = m * card.num_shared_experts
            shapes += [LinearShape("shared_experts.gate_proj", h, s, n, "shared_expert", n),
                       LinearShape("shared_experts.up_proj", h, s, n, "shared_expert", n),
                       LinearShape("shared_experts.down_proj", s, h, n, "shared_expert", n)]
    return shapes


def linear_shapes(card: ModelCard) -> list[LinearShape]:
    """Every matrix a token is multiplied by, lm_head included (even when tied to the embedding)."""
    return attention_shapes(card) + mlp_shapes(card) + [
        LinearShape("lm_head", card.hidden_size, card.vocab_size, 1, "lm_head", 1)]


def embedding_params(card: ModelCard) -> int:
    """Input embedding table (vocab × hidden)."""
    return card.vocab_size * card.hidden_size


def norm_params(card: ModelCard) -> int:
    """RMSNorm weights: 2 per layer + final, Qwen3's per-head q/k norms, MLA's latent norms."""
    n = card.hidden_size * (2 * card.num_layers + 1)
    if card.qk_norm:
        n += 2 * card.head_dim * card.num_layers
    if card.is_mla:
        n += card.kv_lora_rank * card.num_layers
        if card.q_lora_rank is not None:
            n += card.q_lora_rank * card.num_layers
    return n


def bias_params(card: ModelCard) -> int:
    return sum(s.out_features * s.count for s in linear_shapes(card) if s.bias)


def params_total(card: ModelCard) -> int:
    """Exact parameter count = `sum(p.numel() for p in model.parameters())` in transformers."""
    linear = sum(s.weights for s in linear_shapes(card))
    if card.tie_word_embeddings:
        linear -= card.vocab_size * card.hidden_size  # lm_head shares the embedding tensor
    return embedding_params(card) + linear + norm_params(card) + bias_params(card)


def expert_params(card: ModelCard) -> int:
    """Parameters of one routed expert (gate+up+down); 0 for dense models."""
    return 3 * card.hidden_size * card.moe_intermediate_size if card.is_moe else 0


def params_active(card: ModelCard) -> int:
    """Parameters used per token: total minus the (E − top-k) unused routed experts per MoE layer."""
    unused = (card.num_experts - card.num_experts_per_tok) * expert_params(card) * card.num_moe_layers
    return params_total(card) - unused
