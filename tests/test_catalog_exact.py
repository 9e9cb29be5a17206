"""The catalog's parameter and LoRA counts equal what transformers and peft instantiate.

Every catalog model is built from its bundled config.json with
`AutoModelForCausalLM.from_config` under `torch.device("meta")` (shapes only, no memory, no
download, never `trust_remote_code`), and peft wraps it with the same rank and targets.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from models.catalog import ModelCard, list_models, load_model  # noqa: E402
from models.flops import linear_matmul_params  # noqa: E402
from models.lora import lora_target_modules, lora_trainable_params  # noqa: E402
from models.params import expert_params, params_active, params_total  # noqa: E402

# Keys of a published config.json that are loader metadata, not architecture: remote-code
# pointers (we never trust remote code) and the checkpoint's quantization recipe.
_NOT_ARCHITECTURE = ("auto_map", "quantization_config")


def build_on_meta(card: ModelCard):
    cfg = {k: v for k, v in card.config.items() if k not in _NOT_ARCHITECTURE}
    hf_config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            return transformers.AutoModelForCausalLM.from_config(hf_config)


def peft_trainable(card: ModelCard, r: int, targets: str) -> int:
    model = build_on_meta(card)
    # Inside the meta context too: otherwise peft allocates and initialises the adapters in host
    # memory (7.6 B fp32 values for DeepSeek-V3 all-linear).
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        wrapped = peft.get_peft_model(model, peft.LoraConfig(r=r, target_modules=lora_target_modules(card, targets)))
    return sum(p.numel() for p in wrapped.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", list_models())
def test_params_total_equals_transformers_on_meta(name):
    card = load_model(name)
    model = build_on_meta(card)
    assert params_total(card) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_matmul_params_and_experts_match_the_built_tensors(name):
    """FLOPs count exactly the weights a token multiplies by: every ≥2-D weight but the input
    embedding (lm_head counted even when tied), routed experts scaled by top-k / E."""
    card = load_model(name)
    model = build_on_meta(card)
    embed = model.get_input_embeddings().weight
    matmul, experts = 0.0, 0
    for pname, p in model.named_parameters():
        if p is embed or p.dim() < 2:
            continue
        if ".experts." in pname:
            experts += p.numel()
            matmul += p.numel() * card.num_experts_per_tok / card.num_experts
        else:
            matmul += p.numel()
    if card.tie_word_embeddings:
        matmul += embed.numel()
    assert linear_matmul_params(card) == pytest.approx(matmul, rel=1e-12)
    if card.is_moe:
        assert experts == expert_params(card) * card.num_experts * card.num_moe_layers
        unused = (card.num_experts - card.num_experts_per_tok) * expert_params(card) * card.num_moe_layers
        assert params_active(card) == params_total(card) - unused < params_total(card)
    else:
        assert params_active(card) == params_total(card)


@pytest.mark.parametrize("targets", ["all-linear", "attention"])
@pytest.mark.parametrize("name", list_models())
def test_lora_trainable_params_equal_peft(name, targets):
    card = load_model(name)
    assert lora_trainable_params(card, 16, targets) == peft_trainable(card, 16, targets)


@pytest.mark.parametrize("name", ["Llama-3.2-1B", "Mixtral-8x7B-v0.1"])
def test_lora_count_equals_peft_at_another_rank(name):
    card = load_model(name)
    assert lora_trainable_params(card, 8, "all-linear") == peft_trainable(card, 8, "all-linear")


def test_published_reference_counts():
    card = load_model("Llama-3.1-8B")
    assert params_total(card) == 8_030_261_248
    assert lora_trainable_params(card, 16, "all-linear") == 41_943_040
