"""Calibration training runs adapt the same matrices the analytic LoRA count assumes.

`TrainRun.lora_targets` is a lifecost target set ("all-linear" / "attention"), not a peft
argument: handed to peft as-is, "attention" is a module-name pattern that matches nothing. These
tests train for real on CPU (a 2-layer Llama and a 2-layer DeepSeek-V3 with MLA and routed
experts, hidden 64) and check that peft's own trainable count equals
`models.lora.lora_trainable_params` and that only the attention projections carry adapters.
The device machine has no pydantic, so `calibrate.train` must import without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from calibrate.model_build import load_config_dict
from calibrate.train import TrainRun, TrainSession
from models.catalog import card_from_config
from models.errors import LifecostError
from models.lora import lora_target_modules, lora_trainable_params

REPO_ROOT = Path(__file__).resolve().parent.parent

# DeepSeek-V3's published config shrunk to CPU size: MLA with a q bottleneck, one dense layer
# first, then a MoE layer with 4 routed experts (top-2) and a shared expert.
TINY_DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "attention_bias": False,
    "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32, "num_hidden_layers": 2,
    "first_k_dense_replace": 1, "num_attention_heads": 4, "num_key_value_heads": 4, "q_lora_rank": 32,
    "kv_lora_rank": 16, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
    "n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1, "n_group": 1, "topk_group": 1,
    "norm_topk_prob": True, "routed_scaling_factor": 2.5, "vocab_size": 256, "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6, "rope_theta": 10000, "tie_word_embeddings": False, "hidden_act": "silu",
    "bos_token_id": 0, "eos_token_id": 1,
}


def _adapted_module_suffixes(model: torch.nn.Module) -> set[str]:
    """The last name component of every module peft put a LoRA A matrix on."""
    return {name.split(".")[-1] for name, mod in model.named_modules()
            if hasattr(mod, "lora_A") and len(getattr(mod, "lora_A", {})) > 0}


def _run_and_inspect(session: TrainSession, run: TrainRun) -> tuple[dict, set[str]]:
    model, peft_trainable = session._wrap(run)
    try:
        suffixes = _adapted_module_suffixes(model)
    finally:
        session._unwrap(model, run)
    return {"peft_trainable_params": peft_trainable}, suffixes


@pytest.fixture(scope="module")
def llama_session() -> TrainSession:
    s = TrainSession("tiny-llama", device="cpu", dtype=torch.float32)
    yield s
    s.close()


@pytest.fixture(scope="module")
def deepseek_session(tmp_path_factory) -> TrainSession:
    path = tmp_path_factory.mktemp("dsv3") / "config.json"
    path.write_text(json.dumps(TINY_DEEPSEEK_V3), encoding="utf-8")
    s = TrainSession(str(path), device="cpu", dtype=torch.float32)
    yield s
    s.close()


@pytest.mark.parametrize("targets", ["attention", "all-linear"])
def test_llama_lora_run_adapts_what_the_analytic_count_assumes(llama_session, targets):
    card = card_from_config(load_config_dict("tiny-llama"), "tiny-llama")
    rec = llama_session.run(TrainRun("tiny-llama", lora_r=4, lora_targets=targets, seq_len_tok=16,
                                     warmup_steps=1, timed_steps=1))
    assert rec["oom"] is False
    assert rec["peft_trainable_params"] == rec["trainable_params"] == lora_trainable_params(card, 4, targets)


def test_llama_attention_targets_are_exactly_the_four_attention_projections(llama_session):
    _, suffixes = _run_and_inspect(llama_session, TrainRun("tiny-llama", lora_r=4, lora_targets="attention"))
    assert suffixes == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_deepseek_v3_attention_targets_are_every_mla_projection(deepseek_session):
    card = card_from_config(TINY_DEEPSEEK_V3, "tiny-dsv3")
    run = TrainRun(deepseek_session.model_name, lora_r=4, lora_targets="attention")
    rec, suffixes = _run_and_inspect(deepseek_session, run)
    assert suffixes == set(lora_target_modules(card, "attention")) == {
        "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"}
    assert rec["peft_trainable_params"] == lora_trainable_params(card, 4, "attention")


def test_deepseek_v3_lora_step_runs_and_counts_like_the_formula(deepseek_session):
    card = card_from_config(TINY_DEEPSEEK_V3, "tiny-dsv3")
    rec = deepseek_session.run(TrainRun(deepseek_session.model_name, lora_r=4, lora_targets="attention",
                                        seq_len_tok=16, warmup_steps=1, timed_steps=1))
    assert "error" not in rec and rec["oom"] is False and rec["step_time_s"] > 0
    assert rec["peft_trainable_params"] == lora_trainable_params(card, 4, "attention")


def test_an_unknown_lora_target_set_names_the_field():
    with pytest.raises(LifecostError) as e:
        TrainRun("tiny-llama", lora_targets="q_proj")
    assert e.value.field == "lora_targets" and "attention" in str(e.value)


def test_calibrate_train_imports_on_a_machine_without_pydantic():
    """The GPU machine has torch/transformers/peft but no pydantic."""
    code = ("import sys; sys.modules['pydantic'] = None\n"
            "import calibrate.train, calibrate.device_runs, models.lora, models.catalog\n"
            "assert 'pydantic' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
