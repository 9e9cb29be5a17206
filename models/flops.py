"""FLOPs per token: matmuls, attention, and training passes.

Conventions (one multiply-add = 2 FLOPs):
- **Linear** (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", §2.1; Chowdhery et
  al. 2022, "PaLM", appendix B): a token multiplied by a d_in × d_out matrix costs 2·d_in·d_out,
  so the forward pass costs 2·N where N counts the matrices the token actually uses — every
  attention/MLP projection, the router, top-k routed experts plus shared experts, and the
  lm_head; *not* the input embedding (a row lookup), norms or biases.
- **Attention** (PaLM appendix B: 4·L·H·Q·T forward for T keys of width Q): one token
  attending to `context_tok` keys costs 2·H·d_qk·c for q·kᵀ plus 2·H·d_v·c for p·V per layer:
  `2 · L · c · H · (d_qk + d_v)` — for d_qk = d_v = d this is the familiar 2·2·L·c·H·d.
  MLA is counted in its decompressed form (d_qk = nope + rope = 192, d_v = 128), as
  transformers and vLLM's prefill run it; vLLM's decode path absorbs W_UK/W_UV into the query
  and attends over the 512+64-wide latent instead (more FLOPs, far fewer bytes) — the step-time
  calibration absorbs that difference.
- **Causal prefill**: token i of a P-token prompt after `cached` tokens attends to cached + i
  keys (i = 1..P), so the prompt costs Σ = P·cached + P(P+1)/2 key-visits
  (`attn_flops_prefill`). Averaged over a training sequence of S tokens that is (S+1)/2 per token.
- **Training** (Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU
  Clusters", §5.1: backward = 2 × forward; PaLM appendix B: 6N per token): backward computes
  activation gradients (≈ 2N, needed through every layer as long as anything below is trained)
  and weight gradients (2N, only for trained weights). Attention has no weights; its backward
  is ≈ 2 × its forward. Gradient checkpointing re-runs the forward once (Chen et al. 2016,
  "Training Deep Nets with Sublinear Memory Cost"). LoRA adds its own adapters' forward
  (2·N_lora), activation-grad (2·N_lora) and weight-grad (2·N_lora) FLOPs. QLoRA does the same
  matmuls as LoRA (the NF4 base is dequantised to bf16 before each matmul); the dequantisation
  costs memory traffic, not tensor-core FLOPs, and is left to the calibrated MFU.
- **LoRA on fused MoE experts** (peft 0.21 `ParamWrapper`, see `lora.py`): peft forms
  W' = W + B·A for every expert once per forward (2·r·d_in·d_out per expert) and the routed
  tokens multiply W'. Because W' requires grad, backward computes the full weight gradient of
  the routed experts (2·N_m per token, N_m = routed expert + router weights a token uses) and
  then dA, dB from it (2 × the merge FLOPs). The merge terms are per step, so they are spread
  over the step's seq_len_tok × micro_batch tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.catalog import ModelCard
from models.errors import LifecostError
from models.lora import lora_active_params, lora_merge_flops, lora_merged_active_weights
from models.params import linear_shapes

TRAIN_METHODS = ("full", "lora", "qlora")


def linear_matmul_params(card: ModelCard) -> float:
    """Weights one token multiplies by (active matmul parameters, lm_head included)."""
    return sum(s.active_weights for s in linear_shapes(card))


def linear_flops_per_token(card: ModelCard) -> float:
    """Forward matmul FLOPs per token: 2 · N_active_matmul (Kaplan 2020; PaLM app. B)."""
    return 2.0 * linear_matmul_params(card)


def attn_dims(card: ModelCard) -> tuple[int, int]:
    """(d_qk, d_v) of one head: MLA's nope+rope and v_head_dim, else head_dim twice."""
    return card.head_dim, card.v_dim


def attn_flops_per_token(card: ModelCard, context_tok: float) -> float:
    """Forward attention FLOPs for one token attending to `context_tok` keys (PaLM app. B)."""
    if context_tok < 0:
        raise LifecostError(f"context {context_tok} must be ≥ 0", field="context_tok", fix="pass a token count")
    d_qk, d_v = attn_dims(card)
    return 2.0 * card.num_layers * context_tok * card.num_attention_heads * (d_qk + d_v)


def attn_flops_prefill(card: ModelCard, prompt_tok: int, cached_tok: int = 0) -> float:
    """Causal attention FLOPs of a whole prefill chunk: Σ_{i=1..P} attn(cached + i)."""
    key_visits = prompt_tok * cached_tok + prompt_tok * (prompt_tok + 1) / 2
    d_qk, d_v = attn_dims(card)
    return 2.0 * card.num_layers * key_visits * card.num_attention_heads * (d_qk + d_v)


def flops_per_token_fwd(card: ModelCard, context_tok: float = 0) -> float:
    """Forward FLOPs for one token at `context_tok` keys of context: linear + attention."""
    return linear_flops_per_token(card) + attn_flops_per_token(card, context_tok)


@dataclass(frozen=True)
class TrainFlops:
    """The terms of `train_flops_per_token`'s rule for one configuration, so that a report can
    show the arithmetic from the very numbers the total is made of (one formula, not two).

    `matmul_params` N, `attn_fwd_flops` A, `adapter_params` Nₐ, `merged_weights` N_m and
    `merge_flops_per_tok` M/T as defined in `train_flops_per_token`; the last three are 0 for a
    full fine-tune, the last two 0 for dense models.
    """

    method: str
    grad_ckpt: bool
    matmul_params: float
    attn_fwd_flops: float
    adapter_params: float = 0.0
    merged_weights: float = 0.0
    merge_flops_per_tok: float = 0.0

    @property
    def forward(self) -> float:
        """One forward pass: 2N + A (+ 2Nₐ + M/T for LoRA)."""
        if self.method == "full":
            return 2 * self.matmul_params + self.attn_fwd_flops
        return 2 * self.matmul_params + self.attn_fwd_flops + 2 * self.adapter_params + self.merge_flops_per_tok

    @property
    def backward(self) -> float:
        """Activation grads 2N + 2A, weight grads 2N (full) or 4Nₐ + 2N_m + 2M/T (LoRA)."""
        if self.method == "full":
            return 4 * self.matmul_params + 2 * self.attn_fwd_flops
        return (2 * self.matmul_params + 2 * self.attn_fwd_flops + 4 * self.adapter_params
                + 2 * self.merged_weights + 2 * self.merge_flops_per_tok)

    @property
    def recompute(self) -> float:
        """Gradient checkpointing re-runs the forward once (Chen et al. 2016)."""
        return self.forward if self.grad_ckpt else 0.0

    @property
    def total(self) -> float:
        return self.forward + self.backward + self.recompute


def train_flop_terms(card: ModelCard, method: str, seq_len_tok: int, grad_ckpt: bool,
                     lora_r: int = 16, lora_targets: str = "all-linear", micro_batch: int = 1) -> TrainFlops:
    """The terms of `train_flops_per_token` (validated the same way)."""
    if method not in TRAIN_METHODS:
        raise LifecostError(f"unknown training method {method!r}", field="method",
                            fix="use one of: " + ", ".join(TRAIN_METHODS))
    if isinstance(seq_len_tok, bool) or not isinstance(seq_len_tok, int) or seq_len_tok < 1:
        raise LifecostError(f"sequence length {seq_len_tok!r} must be a positive integer", field="seq_len_tok",
                            fix="pass the training sequence length in tokens")
    n = linear_matmul_params(card)
    attn = attn_flops_per_token(card, (seq_len_tok + 1) / 2)
    if method == "full":
        return TrainFlops(method, grad_ckpt, n, attn)
    if isinstance(micro_batch, bool) or not isinstance(micro_batch, int) or micro_batch < 1:
        raise LifecostError(f"micro_batch {micro_batch!r} must be a positive integer", field="micro_batch",
                            fix="pass sequences per GPU per step")
    return TrainFlops(method, grad_ckpt, n, attn,
                      adapter_params=lora_active_params(card, lora_r, lora_targets),
                      merged_weights=lora_merged_active_weights(card, lora_r, lora_targets),
                      merge_flops_per_tok=lora_merge_flops(card, lora_r, lora_targets) / (seq_len_tok * micro_batch))


def train_flops_per_token(card: ModelCard, method: str, seq_len_tok: int, grad_ckpt: bool,
                          lora_r: int = 16, lora_targets: str = "all-linear", micro_batch: int = 1) -> float:
    """Training FLOPs per token (forward + backward [+ recompute]) at causal-average context.

    full:        fwd 2N + A;  bwd 2N (activation grads) + 2N (weight grads) + 2A  → 6N + 3A
    lora/qlora:  fwd 2N + A + 2Nₐ + M/T;  bwd 2N + 2A + 4Nₐ + 2N_m + 2M/T
                 (frozen base: no base weight gradients except merged MoE experts)
    grad_ckpt:   + one more forward
    N = active matmul params, A = attention FLOPs at context (S+1)/2, Nₐ = active adapter params
    of per-token (nn.Linear) adapters, N_m = weights of merged ParamWrapper targets a token uses,
    M = FLOPs of one forward's B·A merges, T = seq_len_tok × micro_batch tokens per step.
    M and N_m are 0 for dense models. The terms themselves: `train_flop_terms`.
    """
    return train_flop_terms(card, method, seq_len_tok, grad_ckpt, lora_r=lora_r, lora_targets=lora_targets,
                            micro_batch=micro_batch).total
