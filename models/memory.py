"""Bytes: weights per quantization format, KV cache per token, serving and training memory plans.

Every term is a separate named field so calibration can fit the overhead terms on a real GPU.
Sizes are bytes inside the math and GiB (2^30) in the plans.

Weight formats (`weight_bytes`), per matmul weight of a d_in × d_out matrix:
- bf16 / fp16: 2 B for every parameter.
- fp8 / int8 (llm-compressor "FP8_DYNAMIC" / "W8A8" channel schemes, as vLLM loads them):
  1 B per weight + one fp32 scale per output channel. Embedding, lm_head, routers, norms and
  biases stay 16-bit (they are in the schemes' `ignore` lists or are not Linear).
- int4-awq (AutoAWQ GEMM layout): 4-bit weights packed in int32 + per group of 128 input
  features per output channel an fp16 scale (2 B) and a 4-bit zero point (0.5 B):
  0.5 + 2.5/128 B per weight. Embedding and lm_head stay 16-bit (AutoAWQ/GPTQ never quantize
  them), as do routers.
- int4-gptq (AutoGPTQ/GPTQModel layout): as AWQ plus `g_idx`, one int32 per input feature.
- int4-gguf (llama.cpp k-quants): Q4_K blocks, 144 B per 256 weights (4.5 bits incl. 6-bit
  scales/mins and fp16 super-block scales), for every 2-D weight including token_embd;
  output.weight (or the tied embedding) in Q6_K, 210 B / 256 (llama.cpp's rule for all k-quant
  mixes); routers (`ffn_gate_inp`), norms and biases kept f32. This is the "pure" Q4_K mix;
  Q4_K_M additionally bumps half the attn_v/ffn_down tensors to Q6_K (~+5 % bytes).

KV cache (`kv_bytes_per_token`): GQA stores K and V per layer per KV head:
2 · L · n_kv · head_dim · bytes (Llama-3.1-8B bf16 = 131,072). MLA (DeepSeek-V2 §2.1.2,
DeepSeek-V3) caches only the compressed latent plus the shared decoupled rope key:
L · (kv_lora_rank + qk_rope_head_dim) · bytes — head counts do not enter.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from models.catalog import ModelCard
from models.errors import LifecostError
from models.gpus import GpuCard
from models.lora import adapted_matrices, lora_trainable_params
from models.params import LinearShape, bias_params, embedding_params, linear_shapes, norm_params, params_total

GIB = 2**30
QUANTS = ("bf16", "fp16", "fp8", "int8", "int4-awq", "int4-gptq", "int4-gguf")
KV_DTYPES = ("bf16", "fp16", "fp8")
KV_BYTES = {"bf16": 2, "fp16": 2, "fp8": 1}
TRAIN_METHODS = ("full", "lora", "qlora")
OPTIMIZERS = ("adamw", "adamw-8bit", "sgd")

AWQ_GROUP = 128
Q4_K_BYTES_PER_WEIGHT = 144 / 256
Q6_K_BYTES_PER_WEIGHT = 210 / 256

# vLLM defaults that size the activation reserve (vllm/config: SchedulerConfig, v1 engine).
VLLM_MAX_NUM_BATCHED_TOKENS = 8192
VLLM_MAX_NUM_SEQS = 256
VLLM_BLOCK_SIZE_TOK = 16
# CUDA context + cuBLAS/NCCL workspaces + CUDA-graph pool outside PyTorch's tensors. vLLM counts
# this "non-torch" memory inside the gpu_memory_utilization budget. ~1 GiB on an H100 for
# vLLM 0.1x; calibration measures it.
RUNTIME_OVERHEAD_GIB = 1.0
# Training: the driver-reserved share of the datasheet capacity (0.82 GiB on an H100), CUDA
# context, cuBLAS workspace, caching-allocator fragmentation. Calibration refits it.
TRAIN_OVERHEAD_GIB = 1.5


def _check_choice(value: str, choices: tuple[str, ...], field: str) -> None:
    if value not in choices:
        raise LifecostError(f"unknown {field} {value!r}", field=field, fix="use one of: " + ", ".join(choices))


def _quantized(s: LinearShape) -> bool:
    """Matrices that 8/4-bit formats quantize: attention, MLP and expert projections."""
    return s.role in ("attn", "mlp", "expert", "shared_expert")


def _other_params(card: ModelCard) -> int:
    """Norm weights and biases (never quantized)."""
    return norm_params(card) + bias_params(card)


def weight_bytes(card: ModelCard, quant: str = "bf16") -> float:
    """Bytes of all weights in format `quant` (see module docstring for each layout)."""
    _check_choice(quant, QUANTS, "quant")
    shapes = linear_shapes(card)
    embed = embedding_params(card)
    head = 0 if card.tie_word_embeddings else card.vocab_size * card.hidden_size
    router = sum(s.weights for s in shapes if s.role == "router")
    other = _other_params(card)
    qs = [s for s in shapes if _quantized(s)]
    q_weights = sum(s.weights for s in qs)
    if quant in ("bf16", "fp16"):
        return 2.0 * (embed + head + router + q_weights + other)
    if quant in ("fp8", "int8"):
        scales = sum(s.out_features * s.count for s in qs)
        return 1.0 * q_weights + 4.0 * scales + 2.0 * (embed + head + router + other)
    if quant in ("int4-awq", "int4-gptq"):
        groups = sum(math.ceil(s.in_features / AWQ_GROUP) * s.out_features * s.count for s in qs)
        g_idx = sum(s.in_features * s.count for s in qs) if quant == "int4-gptq" else 0
        return 0.5 * q_weights + 2.5 * groups + 4.0 * g_idx + 2.0 * (embed + head + router + other)
    # int4-gguf
    if card.tie_word_embeddings:
        emb_bytes = Q6_K_BYTES_PER_WEIGHT * embed
    else:
        emb_bytes = Q4_K_BYTES_PER_WEIGHT * embed + Q6_K_BYTES_PER_WEIGHT * head
    return Q4_K_BYTES_PER_WEIGHT * q_weights + emb_bytes + 4.0 * (router + other)


def kv_bytes_per_token(card: ModelCard, kv_dtype: str = "bf16") -> int:
    """KV-cache bytes one token occupies across all layers (GQA or MLA; see module docstring)."""
    _check_choice(kv_dtype, KV_DTYPES, "kv_dtype")
    b = KV_BYTES[kv_dtype]
    if card.is_mla:
        return card.num_layers * (card.kv_lora_rank + card.qk_rope_head_dim) * b
    return 2 * card.num_layers * card.num_kv_heads * card.head_dim * b


def kv_bytes_per_token_per_gpu(card: ModelCard, kv_dtype: str, tensor_parallel: int) -> float:
    """Per-GPU share under tensor parallelism, as vLLM shards the cache.

    GQA: KV heads are split across ranks, replicated when there are fewer heads than ranks
    (each rank holds max(1, n_kv / tp) heads). MLA: every rank holds the whole latent.
    """
    full = kv_bytes_per_token(card, kv_dtype)
    if card.is_mla:
        return float(full)
    heads_per_rank = max(1.0, card.num_kv_heads / tensor_parallel)
    return full * heads_per_rank / card.num_kv_heads


def activation_reserve_bytes(card: ModelCard, max_num_batched_tokens: int = VLLM_MAX_NUM_BATCHED_TOKENS,
                             max_num_seqs: int = VLLM_MAX_NUM_SEQS, tensor_parallel: int = 1) -> float:
    """Peak transient memory of one engine step, as vLLM's `profile_run` measures it.

    vLLM (v1 `gpu_model_runner.profile_run`) runs one dummy forward of `max_num_batched_tokens`
    tokens and one sampler pass over `max_num_seqs` sequences, and reserves the peak. We model
    the peak as the largest per-layer working set (activations are freed layer to layer at
    inference) plus the sampler's logits:
      T · 2 B · (2·h + q_out + 2·kv_out + 3·i_eff) / tp   [residual, normed input, q/k/v, MLP]
      + S · V · 4 B · 2                                   [fp32 logits and probabilities]
    with i_eff = intermediate_size (dense), or top-k · moe_intermediate_size for MoE (vLLM's
    fused-MoE intermediate caches hold T·k rows) plus shared experts.
    """
    t, s = max_num_batched_tokens, max_num_seqs
    h = card.hidden_size
    attn_out = sum(x.out_features for x in linear_shapes(card) if x.role == "attn" and x.name != "o_proj")
    if card.is_moe:
        i_eff = card.num_experts_per_tok * card.moe_intermediate_size + card.num_shared_experts * card.moe_intermediate_size
        i_eff = max(i_eff, card.intermediate_size if card.num_layers > card.num_moe_layers else 0)
    else:
        i_eff = card.intermediate_size
    layer = t * 2.0 * (2 * h + attn_out + 3 * i_eff) / tensor_parallel
    sampler = s * card.vocab_size * 4.0 * 2
    return layer + sampler


@dataclass(frozen=True)
class ServingMemoryPlan:
    """Memory of one serving replica, per GPU (all GiB except `kv_bytes_per_token`/`max_kv_tokens`).

    usable = gpu_memory_utilization · the device total the runtime reports; kv = usable − weights − activation reserve − runtime
    overhead; max_kv_tokens = kv / kv_bytes_per_token rounded down to whole 16-token blocks.
    `needed_gib` = weights + reserve + overhead + the KV of one `max_model_len_tok` sequence —
    the least memory vLLM accepts; `fits` = needed ≤ usable.
    """

    gpu_total_gib: float
    usable_gib: float
    weights_gib: float
    activation_reserve_gib: float
    runtime_overhead_gib: float
    kv_gib: float
    kv_bytes_per_token: float
    max_kv_tokens: int
    max_model_len_tok: int
    tensor_parallel: int
    fits: bool
    needed_gib: float

    def as_dict(self) -> dict:
        return asdict(self)


def serving_memory_plan(card: ModelCard, gpu: GpuCard, quant: str = "bf16", kv_dtype: str = "bf16",
                        gpu_memory_utilization: float = 0.9, tensor_parallel: int = 1,
                        max_model_len_tok: int | None = None,
                        max_num_batched_tokens: int = VLLM_MAX_NUM_BATCHED_TOKENS,
                        max_num_seqs: int = VLLM_MAX_NUM_SEQS) -> ServingMemoryPlan:
    """How much KV cache is left per GPU after weights and the step's working memory."""
    if not (0 < gpu_memory_utilization <= 1):
        raise LifecostError(f"gpu_memory_utilization {gpu_memory_utilization} must be in (0, 1]",
                            field="gpu_memory_utilization", fix="use e.g. 0.9")
    if isinstance(tensor_parallel, bool) or not isinstance(tensor_parallel, int) or tensor_parallel < 1:
        raise LifecostError(f"tensor_parallel {tensor_parallel!r} must be a positive integer",
                            field="tensor_parallel", fix="use 1, 2, 4 or 8")
    if card.num_attention_heads % tensor_parallel:
        raise LifecostError(f"{card.num_attention_heads} attention heads do not split over {tensor_parallel} GPUs",
                            field="tensor_parallel", fix="use a divisor of the head count")
    max_len = max_model_len_tok or card.max_position_embeddings
    usable = gpu_memory_utilization * gpu.total_memory_gib
    weights = weight_bytes(card, quant) / tensor_parallel / GIB
    reserve = activation_reserve_bytes(card, max_num_batched_tokens, max_num_seqs, tensor_parallel) / GIB
    kv_tok = kv_bytes_per_token_per_gpu(card, kv_dtype, tensor_parallel)
    kv = usable - weights - reserve - RUNTIME_OVERHEAD_GIB
    blocks = max(0, math.floor(kv * GIB / (kv_tok * VLLM_BLOCK_SIZE_TOK)))
    needed = weights + reserve + RUNTIME_OVERHEAD_GIB + max_len * kv_tok / GIB
    return ServingMemoryPlan(
        gpu_total_gib=gpu.total_memory_gib, usable_gib=usable, weights_gib=weights, activation_reserve_gib=reserve,
        runtime_overhead_gib=RUNTIME_OVERHEAD_GIB, kv_gib=max(kv, 0.0), kv_bytes_per_token=kv_tok,
        max_kv_tokens=blocks * VLLM_BLOCK_SIZE_TOK, max_model_len_tok=max_len, tensor_parallel=tensor_parallel,
        fits=needed <= usable, needed_gib=needed,
    )


# ----------------------------------------------------------------------------- training


def nf4_weights(card: ModelCard) -> int:
    """Weights a QLoRA base stores in NF4 (`nf4_weight_bytes`): every attention, dense-MLP and
    shared-expert matrix — the ones bitsandbytes dequantizes to bf16 before each matmul."""
    return sum(s.weights for s in linear_shapes(card) if s.role in ("attn", "mlp", "shared_expert"))


def nf4_weight_bytes(card: ModelCard) -> float:
    """QLoRA base weights (Dettmers et al. 2023, "QLoRA", §3): NF4 for the quantized matrices.

    4-bit NF4 (0.5 B) + double-quantized constants: one 8-bit absmax per 64-weight block and one
    fp32 second-level constant per 256 blocks → 1/64 + 4/(64·256) B per weight (the paper's
    0.127 bits). transformers' bnb integration (`integrations/bitsandbytes.py`,
    `replace_with_bnb_linear`) swaps only `nn.Linear` modules, skipping lm_head: attention,
    dense-MLP and shared-expert matrices become NF4. transformers 5 stores routed MoE experts as
    fused 3-D parameters, which it does not quantize — they stay bf16, as do the embedding,
    lm_head, routers, norms and biases. (So QLoRA barely shrinks Mixtral/DeepSeek-V3 today.)
    """
    shapes = linear_shapes(card)
    nf4 = nf4_weights(card)
    head = 0 if card.tie_word_embeddings else card.vocab_size * card.hidden_size
    bf16 = sum(s.weights for s in shapes if s.role in ("router", "expert"))
    rest = embedding_params(card) + head + bf16 + _other_params(card)
    return nf4 * (0.5 + 1 / 64 + 4 / (64 * 256)) + 2.0 * rest


def optimizer_bytes_per_param(optimizer: str, state_bytes: float = 4.0) -> float:
    """Optimizer state per trained parameter.

    adamw: fp32 m and v (8 B; Loshchilov & Hutter 2019). adamw-8bit: bitsandbytes block-wise
    8-bit m and v (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization"), 1 B each
    + an fp32 absmax per 2048-value block. sgd: SGD with momentum, one fp32 buffer (4 B).
    `state_bytes` = 2 for states kept in bf16 (torch optimizers allocate states in the parameter
    dtype, so a pure-bf16 full fine-tune has bf16 m and v).
    """
    _check_choice(optimizer, OPTIMIZERS, "optimizer")
    return {"adamw": 2.0 * state_bytes, "adamw-8bit": 2.0 * (1 + 4 / 2048), "sgd": state_bytes}[optimizer]


def _layer_adapters(card: ModelCard, method: str, lora_r: int, lora_targets: str, moe_layer: bool):
    """Adapted matrices present in one layer of the given kind (empty for full fine-tuning)."""
    if method == "full":
        return []
    roles = {"attn"} | ({"router", "expert", "shared_expert"} if moe_layer else {"mlp"})
    return [m for m in adapted_matrices(card, lora_r, lora_targets) if m.shape.role in roles]


def activation_bytes_per_token_layer(card: ModelCard, moe_layer: bool, method: str = "full", lora_r: int = 16,
                                     lora_targets: str = "all-linear") -> float:
    """Bytes one decoder layer keeps for backward, per token, in a bf16 transformers+peft step.

    Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
    §4.1) count 34·s·b·h + 5·a·s²·b per GPT layer by listing every tensor autograd saves. We do
    the same listing for today's stack — transformers 5 with SDPA/FlashAttention (no s² scores,
    only O and the log-sum-exp), no dropout, SwiGLU, RMSNorm that upcasts to fp32 — and checked
    it tensor by tensor with `torch.autograd.graph.saved_tensors_hooks` on Llama/Qwen2 shapes
    (within 0.1 %). h = hidden, q = heads·head_dim, kv = kv_heads·head_dim, i = intermediate:
      RMSNorm ×2: fp32 input 4h (+ bf16 normalised 2h when its weight is trained);
      attention: Q 2q, K and V 2kv each, O 2q, lse/softmax stats 8·heads;
      SwiGLU: gate 2i, up 2i, silu(gate) 2i;
      matmul inputs, full FT: normed x 2h (shared by q/k/v), MLP input 2h, down input 2i;
      matmul inputs, LoRA: peft casts each adapted module's input to the adapters' fp32
      (`autocast_adapter_dtype=True`), so 4·d_in per adapted module + its r-wide fp32 x·A;
      frozen, unadapted matmuls save no input.
    MLA and MoE layers follow the same rules over their own tensors (see the code).
    """
    h, heads = card.hidden_size, card.num_attention_heads
    full = method == "full"
    norm = 4.0 * h + (2.0 * h if full else 0.0)
    total = 2 * norm
    if card.is_mla:
        qk = card.qk_nope_head_dim + card.qk_rope_head_dim
        total += 2.0 * (heads * qk * 2 + heads * card.v_head_dim * 2) + 8.0 * heads  # Q, K, V, O, stats
        latents = [card.kv_lora_rank] + ([card.q_lora_rank] if card.q_lora_rank is not None else [])
        for d in latents:  # q_a / kv_a RMSNorms and, in full FT, the bf16 inputs of q_b / kv_b
            total += 4.0 * d + (2.0 * d + 2.0 * d if full else 0.0)
        if full:
            total += 2.0 * h + 2.0 * heads * card.v_head_dim  # q_a/kv_a input, o_proj input
    else:
        q, kv = heads * card.head_dim, card.num_kv_heads * card.head_dim
        total += 2.0 * (q + 2 * kv + q) + 8.0 * heads
        if full:
            total += 2.0 * h  # q/k/v input (o_proj's input is O itself)
        if card.qk_norm:  # Qwen3's per-head RMSNorm of q and k: fp32 input (+ normalised if trained)
            total += (4.0 + (2.0 if full else 0.0)) * (q + kv) + 4.0 * (heads + card.num_kv_heads)
    if moe_layer:
        k, m = card.num_experts_per_tok, card.moe_intermediate_size
        # per routed copy: gathered input 2h, gate_up 4m, silu 2m, product 2m, expert output 2h
        total += k * (4.0 * h + 8.0 * m) + 4.0 * card.num_experts * 2  # + fp32 router logits/probs
        if card.num_shared_experts:
            s = m * card.num_shared_experts
            total += 6.0 * s + (2.0 * s if full else 0.0)
        if full:
            total += 2.0 * h
    else:
        i = card.intermediate_size
        total += 6.0 * i + (2.0 * h + 2.0 * i if full else 0.0)
    return total


def lora_activation_bytes_per_token_layer(card: ModelCard, moe_layer: bool, lora_r: int = 16,
                                          lora_targets: str = "all-linear") -> float:
    """LoRA's own saved tensors per token in one layer: for each adapted `nn.Linear` the fp32
    copy of its input that peft makes (inputs are cast to the fp32 adapter dtype; autograd keeps
    it for lora_A's gradient) and the r-wide fp32 x·A kept for lora_B's. Fused experts
    (`ParamWrapper`) instead cost a per-layer constant, `lora_merged_expert_bytes`."""
    total = 0.0
    for a in _layer_adapters(card, "lora", lora_r, lora_targets, moe_layer):
        if a.shape.role == "router":
            total += 2.0 * a.shape.in_features  # the router's merged weight needs grad: its bf16 input is kept
        elif a.shape.role != "expert":
            total += 4.0 * (a.shape.in_features + a.rank)
    return total


def lora_merged_expert_bytes(card: ModelCard, lora_r: int, lora_targets: str) -> float:
    """Per MoE layer: peft's `ParamWrapper` folds B·A into the fused expert (and router) weight on
    every forward (`get_delta_factors` + `baddbmm`; its adapters are cast to the bf16 parameter
    dtype) and autograd keeps that merged weight for backward — a full bf16 copy of the layer's
    routed experts, independent of the token count — plus reshaped copies of the experts' A and B
    factors. Measured with saved-tensor hooks on a Mixtral-shaped layer to the byte."""
    if not card.is_moe:
        return 0.0
    wrapped = [a for a in adapted_matrices(card, lora_r, lora_targets) if a.shape.role in ("expert", "router")]
    per_layer = 0.0
    for a in wrapped:
        per_layer += 2.0 * a.shape.weights  # the merged weight
        if a.shape.role == "expert":
            per_layer += 2.0 * a.params  # bf16 copies of the reshaped A and B factors
    return per_layer / card.num_moe_layers


def activation_terms(card: ModelCard, tokens: int, grad_ckpt: bool, method: str = "full", lora_r: int = 16,
                     lora_targets: str = "all-linear") -> tuple[float, float]:
    """(base, lora) saved-activation bytes of a step over `tokens` tokens.

    Without checkpointing every layer keeps its set. With gradient checkpointing (Chen et al.
    2016; transformers checkpoints each decoder layer) each layer keeps only its bf16 input
    (2·h per token) and one layer's full set exists at a time, while it is recomputed. LoRA on
    merged MoE experts adds one layer's transient weight gradient dW' (bf16) to the peak.
    """
    kinds = []  # (layer count, base bytes, lora bytes) per layer kind
    n_moe = card.num_moe_layers
    for n, moe in ((card.num_layers - n_moe, False), (n_moe, True)):
        if not n:
            continue
        base = activation_bytes_per_token_layer(card, moe, method, lora_r, lora_targets) * tokens
        lora = 0.0
        if method != "full":
            lora = lora_activation_bytes_per_token_layer(card, moe, lora_r, lora_targets) * tokens
            if moe:
                lora += lora_merged_expert_bytes(card, lora_r, lora_targets)
        kinds.append((n, base, lora))
    # Backward of a merged (ParamWrapper) layer materialises dW', one more bf16 expert stack,
    # transiently, one layer at a time.
    grad_transient = 0.0
    if method != "full" and n_moe:
        merged = [a for a in adapted_matrices(card, lora_r, lora_targets) if a.shape.role in ("expert", "router")]
        grad_transient = sum(2.0 * a.shape.weights for a in merged) / n_moe
    if not grad_ckpt:
        return sum(n * b for n, b, _ in kinds), sum(n * a for n, _, a in kinds) + grad_transient
    _, base, lora = max(kinds, key=lambda k: k[1] + k[2])
    return card.num_layers * 2.0 * card.hidden_size * tokens + base, lora + grad_transient


@dataclass(frozen=True)
class TrainingMemoryPlan:
    """Peak memory of one data-parallel training rank (GiB per term).

    needed = weights + adapters + gradients + optimizer + master_weights + activations
    + lora_activations + logits + overhead; available = the datasheet capacity (`hbm_gib`; the
    ~1 % the driver reserves is inside `overhead_gib`, which calibration refits); fits = needed ≤ available.
    """

    method: str
    optimizer: str
    trainable_params: int
    weights_gib: float
    adapters_gib: float
    gradients_gib: float
    optimizer_gib: float
    master_weights_gib: float
    activations_gib: float
    lora_activations_gib: float
    logits_gib: float
    overhead_gib: float
    needed_gib: float
    available_gib: float
    fits: bool

    def as_dict(self) -> dict:
        return asdict(self)


# Logits memory per element (vocab × seq × micro-batch): bf16 logits kept for backward (2 B),
# the fp32 upcast the cross-entropy computes on (4 B) and its fp32 gradient during backward (4 B).
LOGITS_BYTES_PER_ELEMENT = 2 + 4 + 4


def training_memory_plan(card: ModelCard, gpu: GpuCard, method: str, seq_len_tok: int, micro_batch: int,
                         grad_ckpt: bool = True, optimizer: str = "adamw", lora_r: int = 16,
                         lora_targets: str = "all-linear", master_weights: bool = True) -> TrainingMemoryPlan:
    """Memory of a fine-tuning step on one GPU.

    full (mixed precision as in ZeRO, Rajbhandari et al. 2020 §3.1): bf16 weights (2 B) and
    gradients (2 B), an fp32 master copy (4 B) and the optimizer states → 16 B/param with AdamW.
    lora: frozen bf16 base, fp32 adapters (peft's default `autocast_adapter_dtype=True`), fp32
    adapter gradients and optimizer states, no master copy. qlora: as lora over an NF4 base.
    `master_weights=False` plans a pure-bf16 full fine-tune instead (no fp32 copy; the optimizer
    states in bf16, as torch allocates them in the parameter dtype): 8 B/param with AdamW.
    Activations from `activation_terms` over seq × micro-batch tokens; `lora_activations_gib` is
    the adapters' own share (fp32 input copies, x·A, merged expert weights) — measured on an
    H100 (models/profiles/h100-sxm), LoRA runs came out ~1.9x the plan without the input copies.
    """
    _check_choice(method, TRAIN_METHODS, "method")
    _check_choice(optimizer, OPTIMIZERS, "optimizer")
    for value, field in ((seq_len_tok, "seq_len_tok"), (micro_batch, "micro_batch")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LifecostError(f"{field} {value!r} must be a positive integer", field=field, fix="pass a whole number")
    total = params_total(card)
    tokens = seq_len_tok * micro_batch
    opt_b = optimizer_bytes_per_param(optimizer)
    if method == "full":
        trainable = total
        weights, adapters = 2.0 * total, 0.0
        grads, master = 2.0 * total, (4.0 * total if master_weights else 0.0)
        if not master_weights:
            opt_b = optimizer_bytes_per_param(optimizer, state_bytes=2.0)
    else:
        trainable = lora_trainable_params(card, lora_r, lora_targets)
        weights = nf4_weight_bytes(card) if method == "qlora" else weight_bytes(card, "bf16")
        adapters, grads, master = 4.0 * trainable, 4.0 * trainable, 0.0
    optim = opt_b * trainable
    acts, lora_act = activation_terms(card, tokens, grad_ckpt, method, lora_r, lora_targets)
    logits = LOGITS_BYTES_PER_ELEMENT * card.vocab_size * tokens
    needed_b = weights + adapters + grads + optim + master + acts + lora_act + logits
    needed = needed_b / GIB + TRAIN_OVERHEAD_GIB
    return TrainingMemoryPlan(
        method=method, optimizer=optimizer, trainable_params=trainable, weights_gib=weights / GIB,
        adapters_gib=adapters / GIB, gradients_gib=grads / GIB, optimizer_gib=optim / GIB,
        master_weights_gib=master / GIB, activations_gib=acts / GIB, lora_activations_gib=lora_act / GIB,
        logits_gib=logits / GIB, overhead_gib=TRAIN_OVERHEAD_GIB, needed_gib=needed,
        available_gib=gpu.hbm_gib, fits=needed <= gpu.hbm_gib,
    )
