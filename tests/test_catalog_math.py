"""The analytic math of `models/`: published reference values, hand-checked formulas, and
invariants over random architectures (hypothesis), including exactness against transformers and
peft for randomly shaped models of every supported family."""

from __future__ import annotations

import math
import warnings

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from models.catalog import card_from_config, list_models, load_model
from models.flops import (attn_flops_per_token, attn_flops_prefill, flops_per_token_fwd, linear_flops_per_token,
                          linear_matmul_params, train_flops_per_token)
from models.gpus import load_gpu
from models.lora import lora_trainable_params
from models.memory import (GIB, QUANTS, kv_bytes_per_token, kv_bytes_per_token_per_gpu, serving_memory_plan,
                           training_memory_plan, weight_bytes)
from models.params import embedding_params, norm_params, params_active, params_total

H100 = load_gpu("H100-SXM")


# ------------------------------------------------------------------ KV cache


def test_kv_bytes_per_token_gqa_reference_values():
    assert kv_bytes_per_token(load_model("Llama-3.1-8B"), "bf16") == 131_072
    assert kv_bytes_per_token(load_model("Llama-3.1-70B"), "bf16") == 327_680
    assert kv_bytes_per_token(load_model("Llama-3.1-8B"), "fp8") == 65_536


def test_mla_kv_cache_comes_from_the_latent_rank_not_the_head_count():
    card = load_model("DeepSeek-V3")
    assert kv_bytes_per_token(card, "bf16") == 61 * (512 + 64) * 2 == 70_272
    more_heads = card_from_config({**card.config, "num_attention_heads": 64, "num_key_value_heads": 64})
    assert kv_bytes_per_token(more_heads, "bf16") == 70_272
    # every tensor-parallel rank holds the whole latent
    assert kv_bytes_per_token_per_gpu(card, "bf16", 8) == 70_272


def test_gqa_kv_heads_split_over_tp_and_replicate_past_the_head_count():
    card = load_model("Llama-3.1-70B")  # 8 KV heads
    assert kv_bytes_per_token_per_gpu(card, "bf16", 4) == 327_680 / 4
    assert kv_bytes_per_token_per_gpu(card, "bf16", 8) == 327_680 / 8
    assert kv_bytes_per_token_per_gpu(card, "bf16", 16) == 327_680 / 8


# ------------------------------------------------------------------ weights


def test_weight_bytes_16bit_is_two_bytes_per_parameter():
    for name in list_models():
        card = load_model(name)
        assert weight_bytes(card, "bf16") == weight_bytes(card, "fp16") == 2 * params_total(card)


def test_int4_formats_carry_their_group_overheads():
    card = load_model("Llama-3.1-8B")
    bf16 = weight_bytes(card, "bf16")
    awq, gptq, gguf = (weight_bytes(card, q) for q in ("int4-awq", "int4-gptq", "int4-gguf"))
    # linear weights of the 32 layers: 32 · (q 4096² + k,v 2·4096·1024 + o 4096² + 3·4096·14336)
    linear = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
    embed_head = 2 * 128_256 * 4096
    norms = 4096 * 65
    groups = linear // 128
    assert awq == 0.5 * linear + 2.5 * groups + 2 * (embed_head + norms)
    # GPTQ adds one int32 g_idx per input feature of every quantized matrix
    g_idx = 32 * (4 * 4096 + 2 * 4096 + 14336)
    assert gptq == awq + 4 * g_idx
    assert gguf == linear * 144 / 256 + 128_256 * 4096 * (144 + 210) / 256 + 4 * norms
    assert bf16 > weight_bytes(card, "fp8") > awq > gguf


@pytest.mark.parametrize("quant", QUANTS)
def test_every_format_shrinks_monotonically_with_fewer_layers(quant):
    card = load_model("Qwen2.5-7B")
    smaller = card_from_config({**card.config, "num_hidden_layers": 20})
    assert weight_bytes(smaller, quant) < weight_bytes(card, quant)


# ------------------------------------------------------------------ FLOPs


def test_dense_forward_flops_are_twice_the_matmul_weights():
    card = load_model("Llama-3.1-8B")
    matmul = params_total(card) - embedding_params(card) - norm_params(card)
    assert linear_flops_per_token(card) == 2 * matmul
    # attention at 4096 keys: 2 · L · c · H · (d_qk + d_v) (PaLM appendix B)
    assert attn_flops_per_token(card, 4096) == 2 * 32 * 4096 * 32 * (128 + 128)
    assert flops_per_token_fwd(card, 4096) == linear_flops_per_token(card) + attn_flops_per_token(card, 4096)


def test_tied_embeddings_still_cost_the_lm_head_matmul():
    card = load_model("Llama-3.2-1B")
    assert card.tie_word_embeddings
    assert linear_matmul_params(card) == params_total(card) - norm_params(card)


def test_mla_attention_flops_use_its_own_head_dims():
    card = load_model("DeepSeek-V3")
    assert attn_flops_per_token(card, 1000) == 2 * 61 * 1000 * 128 * (192 + 128)


def test_moe_forward_counts_only_routed_top_k():
    card = load_model("Mixtral-8x7B-v0.1")
    unused = (8 - 2) * 3 * 4096 * 14336 * 32
    dense_equiv = params_total(card) - embedding_params(card) - norm_params(card)
    assert linear_matmul_params(card) == dense_equiv - unused


@given(p=st.integers(1, 600), cached=st.integers(0, 5000))
def test_prefill_attention_is_the_sum_over_its_causal_tokens(p, cached):
    card = load_model("Llama-3.2-1B")
    total = sum(attn_flops_per_token(card, cached + i) for i in range(1, p + 1))
    assert attn_flops_prefill(card, p, cached) == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("name", ["Llama-3.1-8B", "Mixtral-8x7B-v0.1", "DeepSeek-V3"])
def test_training_flops_follow_forward_backward_recompute(name):
    card = load_model(name)
    seq = 2048
    fwd = flops_per_token_fwd(card, (seq + 1) / 2)
    assert train_flops_per_token(card, "full", seq, False) == pytest.approx(3 * fwd)
    assert train_flops_per_token(card, "full", seq, True) == pytest.approx(4 * fwd)
    lora = train_flops_per_token(card, "lora", seq, False)
    assert lora == train_flops_per_token(card, "qlora", seq, False)
    assert train_flops_per_token(card, "lora", seq, True) > lora
    if not card.is_moe:
        assert 2 * fwd < lora < 3 * fwd  # no base weight gradients, plus small adapter matmuls
    else:
        # peft merges B·A into the fused experts: their full weight gradient is computed, and the
        # per-step merge FLOPs spread over more tokens as the micro-batch grows
        assert lora > 2.5 * fwd
        assert train_flops_per_token(card, "lora", seq, False, micro_batch=8) < lora


def test_merged_expert_lora_flops_by_hand():
    card = load_model("Mixtral-8x7B-v0.1")
    seq, r = 1024, 16
    from models.flops import linear_matmul_params

    n = linear_matmul_params(card)
    attn = attn_flops_per_token(card, (seq + 1) / 2)
    n_a = r * (4096 + 4096 + 2 * (4096 + 1024) + 4096 + 4096) * 32  # q, k, v, o adapters
    n_m = (2 * 3 * 4096 * 14336 + 4096 * 8) * 32  # top-2 experts + router, per token
    merge = 2 * (2 * r * 4096 * 28672 + r * 14336 * 4096) * 8 * 32 + 2 * r * 4096 * 8 * 32
    expected = (2 * n + attn + 2 * n_a + merge / seq) + (2 * n + 2 * attn + 4 * n_a + 2 * n_m + 2 * merge / seq)
    assert train_flops_per_token(card, "lora", seq, False, lora_r=r) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------ memory plans


def test_serving_plan_arithmetic_closes():
    card = load_model("Llama-3.1-8B")
    plan = serving_memory_plan(card, H100, "bf16", "bf16", 0.9)
    assert plan.usable_gib == pytest.approx(0.9 * H100.total_memory_gib)
    assert plan.kv_gib == pytest.approx(plan.usable_gib - plan.weights_gib - plan.activation_reserve_gib
                                        - plan.runtime_overhead_gib)
    assert plan.max_kv_tokens % 16 == 0
    assert plan.max_kv_tokens * plan.kv_bytes_per_token <= plan.kv_gib * GIB
    assert (plan.max_kv_tokens + 16) * plan.kv_bytes_per_token > plan.kv_gib * GIB
    assert plan.fits and plan.needed_gib < plan.usable_gib


def test_a_70b_model_needs_tensor_parallelism_on_h100s():
    card = load_model("Llama-3.1-70B")
    one = serving_memory_plan(card, H100, "bf16", "bf16", 0.9)
    assert not one.fits and one.max_kv_tokens == 0 and one.needed_gib > 130
    two = serving_memory_plan(card, H100, "bf16", "bf16", 0.9, tensor_parallel=2)
    assert two.weights_gib == pytest.approx(one.weights_gib / 2) and two.max_kv_tokens > 0
    # ~22k KV tokens per replica: too few for one 128k-token sequence, enough for 8k ones
    assert not two.fits and two.max_kv_tokens < 131_072
    assert serving_memory_plan(card, H100, "bf16", "bf16", 0.9, tensor_parallel=2, max_model_len_tok=8192).fits
    assert serving_memory_plan(card, H100, "bf16", "bf16", 0.9, tensor_parallel=4).fits
    assert serving_memory_plan(card, H100, "int4-awq", "bf16", 0.9, max_model_len_tok=32768).fits


@settings(max_examples=40, deadline=None)
@given(util=st.floats(0.3, 1.0), quant=st.sampled_from(QUANTS), kv=st.sampled_from(["bf16", "fp8"]),
       tp=st.sampled_from([1, 2, 4, 8]), name=st.sampled_from(list_models()))
def test_serving_plan_invariants(util, quant, kv, tp, name):
    card = load_model(name)
    assume(card.num_attention_heads % tp == 0)
    plan = serving_memory_plan(card, H100, quant, kv, util, tensor_parallel=tp)
    assert plan.fits == (plan.needed_gib <= plan.usable_gib)
    assert plan.max_kv_tokens * plan.kv_bytes_per_token <= plan.kv_gib * GIB + 1e-6
    lower = serving_memory_plan(card, H100, quant, kv, util * 0.9, tensor_parallel=tp)
    assert lower.max_kv_tokens <= plan.max_kv_tokens
    if kv == "fp8":
        assert plan.max_kv_tokens >= serving_memory_plan(card, H100, quant, "bf16", util, tensor_parallel=tp).max_kv_tokens


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(list_models()), method=st.sampled_from(["full", "lora", "qlora"]),
       seq=st.integers(128, 16384), mb=st.integers(1, 8), ckpt=st.booleans(),
       opt=st.sampled_from(["adamw", "adamw-8bit", "sgd"]))
def test_training_plan_terms_sum_to_needed_and_grow_with_tokens(name, method, seq, mb, ckpt, opt):
    card = load_model(name)
    plan = training_memory_plan(card, H100, method, seq, mb, ckpt, opt)
    terms = (plan.weights_gib + plan.adapters_gib + plan.gradients_gib + plan.optimizer_gib
             + plan.master_weights_gib + plan.activations_gib + plan.lora_activations_gib + plan.logits_gib
             + plan.overhead_gib)
    assert plan.needed_gib == pytest.approx(terms)
    assert plan.fits == (plan.needed_gib <= plan.available_gib)
    longer = training_memory_plan(card, H100, method, seq * 2, mb, ckpt, opt)
    assert longer.activations_gib > plan.activations_gib and longer.logits_gib == pytest.approx(2 * plan.logits_gib)
    if not ckpt:
        assert training_memory_plan(card, H100, method, seq, mb, True, opt).activations_gib < plan.activations_gib


def test_training_plan_reference_breakdown():
    card = load_model("Llama-3.1-8B")
    full = training_memory_plan(card, H100, "full", 2048, 1, True, "adamw")
    n = params_total(card)
    assert full.weights_gib + full.gradients_gib + full.master_weights_gib + full.optimizer_gib == pytest.approx(16 * n / GIB)
    bf16_only = training_memory_plan(card, H100, "full", 2048, 1, True, "adamw", master_weights=False)
    assert bf16_only.master_weights_gib == 0 and bf16_only.optimizer_gib == pytest.approx(4 * n / GIB)
    lora = training_memory_plan(card, H100, "lora", 2048, 1, True, "adamw", lora_r=16)
    assert lora.trainable_params == 41_943_040
    assert lora.optimizer_gib == pytest.approx(8 * 41_943_040 / GIB)
    qlora = training_memory_plan(card, H100, "qlora", 2048, 1, True, "adamw", lora_r=16)
    # NF4 + double-quant constants ≈ 4.127 bits on the quantized matrices (QLoRA §3)
    assert qlora.weights_gib < lora.weights_gib / 2.5
    assert qlora.logits_gib == pytest.approx(128_256 * 2048 * 10 / GIB)


# ------------------------------------------------------------------ activations vs autograd


def _saved_activation_bytes(cfg: dict, method: str, layers: int, seq: int) -> int:
    """Bytes autograd keeps for backward (parameters excluded), measured with saved-tensor hooks."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    c = dict(cfg, num_hidden_layers=layers)
    hf = transformers.AutoConfig.for_model(c.pop("model_type"), **c)
    hf._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_config(hf, dtype=torch.bfloat16)
        if method == "lora":
            model = peft.get_peft_model(model, peft.LoraConfig(r=16, target_modules="all-linear"))
        else:
            for p in model.parameters():
                p.requires_grad_(True)
    model.train()
    owned = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in owned:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=torch.randint(0, c["vocab_size"], (1, seq)))
    return sum(seen.values())


_TINY = dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=2, vocab_size=512, intermediate_size=512,
             max_position_embeddings=2048, tie_word_embeddings=False)


@pytest.mark.parametrize("family,method", [("llama", "full"), ("llama", "lora"), ("qwen3_moe", "full"),
                                           ("mixtral", "lora")])
def test_activation_plan_matches_the_tensors_autograd_saves(family, method):
    from models.memory import (activation_bytes_per_token_layer, activation_terms,
                               lora_activation_bytes_per_token_layer, lora_merged_expert_bytes)

    if family == "llama":
        cfg = dict(_TINY, model_type="llama")
    elif family == "qwen3_moe":
        cfg = dict(_TINY, model_type="qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=128,
                   head_dim=64)
    else:
        cfg = dict(_TINY, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2, intermediate_size=128)
    seq = 64
    # one layer's share: the difference between a 2-layer and a 1-layer model
    measured = _saved_activation_bytes(cfg, method, 2, seq) - _saved_activation_bytes(cfg, method, 1, seq)
    card = card_from_config(dict(cfg, num_hidden_layers=1))
    moe = card.is_moe
    planned = activation_bytes_per_token_layer(card, moe, method) * seq
    if method == "lora":
        planned += lora_activation_bytes_per_token_layer(card, moe) * seq + lora_merged_expert_bytes(card, 16, "all-linear")
    assert planned == pytest.approx(measured, rel=0.01)
    # the whole-step total adds only the one-off transient weight gradient of merged experts
    base, lora = activation_terms(card, seq, grad_ckpt=False, method=method)
    assert base + lora >= planned


# ------------------------------------------------------------------ random architectures vs transformers/peft


def _random_config(draw):
    family = draw(st.sampled_from(["llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen3_moe", "deepseek_v3"]))
    kv = draw(st.sampled_from([1, 2, 4]))
    heads = kv * draw(st.integers(1, 4))
    head_dim = draw(st.sampled_from([16, 32]))
    # transformers validates hidden_size % heads == 0 (and RoPE needs an even implied head_dim)
    hidden = heads * draw(st.sampled_from([16, 32]))
    cfg = dict(model_type=family, hidden_size=hidden, num_attention_heads=heads,
               num_key_value_heads=kv, num_hidden_layers=draw(st.integers(1, 4)),
               intermediate_size=draw(st.sampled_from([64, 160])), vocab_size=draw(st.sampled_from([97, 256])),
               tie_word_embeddings=draw(st.booleans()), max_position_embeddings=512)
    if family in ("llama", "qwen3", "qwen3_moe"):
        cfg["head_dim"] = head_dim
        cfg["attention_bias"] = draw(st.booleans())
    if family == "llama":
        cfg["mlp_bias"] = draw(st.booleans())
    if family == "mixtral":
        cfg.update(num_local_experts=draw(st.integers(2, 5)), num_experts_per_tok=2)
    if family == "qwen3_moe":
        cfg.update(num_experts=draw(st.integers(2, 5)), num_experts_per_tok=2, moe_intermediate_size=48,
                   decoder_sparse_step=draw(st.integers(1, 2)), mlp_only_layers=draw(st.sampled_from([[], [0]])))
    if family == "deepseek_v3":
        cfg.update(num_key_value_heads=heads, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=48,
                   n_shared_experts=draw(st.integers(0, 2)), first_k_dense_replace=draw(st.integers(0, 2)),
                   kv_lora_rank=32, q_lora_rank=draw(st.sampled_from([None, 48])), qk_nope_head_dim=16,
                   qk_rope_head_dim=8, v_head_dim=16, n_group=1, topk_group=1)
    return cfg


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), r=st.sampled_from([2, 8]), targets=st.sampled_from(["all-linear", "attention"]))
def test_random_architectures_match_transformers_and_peft(data, r, targets):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from models.lora import lora_target_modules

    cfg = _random_config(data.draw)
    card = card_from_config(cfg, name="random")
    c = dict(cfg)
    hf = transformers.AutoConfig.for_model(c.pop("model_type"), **c)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_config(hf)
        assert params_total(card) == sum(p.numel() for p in model.parameters())
        if card.num_moe_layers == 0 and targets == "all-linear" and card.model_type in ("qwen3_moe", "deepseek_v3"):
            return  # peft's MoE name remapping needs at least one MoE block to target
        wrapped = peft.get_peft_model(model, peft.LoraConfig(r=r, target_modules=lora_target_modules(card, targets)))
    assert lora_trainable_params(card, r, targets) == sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    assert params_active(card) <= params_total(card)
    assert math.isfinite(flops_per_token_fwd(card, 100))


@given(name=st.sampled_from(list_models()), r=st.integers(1, 256), targets=st.sampled_from(["all-linear", "attention"]))
def test_lora_size_is_linear_in_rank_and_attention_is_a_subset(name, r, targets):
    card = load_model(name)
    assert lora_trainable_params(card, 2 * r, targets) == 2 * lora_trainable_params(card, r, targets)
    assert lora_trainable_params(card, r, "attention") < lora_trainable_params(card, r, "all-linear")


@pytest.mark.parametrize("r,targets,field", [(0, "all-linear", "lora_r"), (8, "mlp", "lora_targets"),
                                             (True, "attention", "lora_r")])
def test_bad_lora_arguments_name_their_field(r, targets, field):
    from models.errors import LifecostError

    with pytest.raises(LifecostError, match=field):
        lora_trainable_params(load_model("Llama-3.2-1B"), r, targets)


def test_qlora_quantizes_only_nn_linear_modules():
    """transformers' bnb integration swaps nn.Linear only; fused 3-D experts stay bf16."""
    from models.memory import nf4_weight_bytes

    dense = load_model("Llama-3.1-8B")
    linear = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
    rest = params_total(dense) - linear
    assert nf4_weight_bytes(dense) == pytest.approx(linear * (0.5 + 1 / 64 + 4 / 16384) + 2 * rest)
    moe = load_model("Mixtral-8x7B-v0.1")
    attn = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024)
    assert weight_bytes(moe, "bf16") - nf4_weight_bytes(moe) == pytest.approx(attn * (2 - 0.5 - 1 / 64 - 4 / 16384))
