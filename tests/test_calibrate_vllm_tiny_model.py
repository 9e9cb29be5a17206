"""The tiny serving model: config matches transformers' parameter count, tokenizer is exact."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibrate.tiny_model import (
    CPU_CALIBRATION_SHAPE,
    N_SPECIAL,
    TinyLlamaShape,
    build_tiny_model,
    prompt_text,
    prompt_token_ids,
)
from models.errors import LifecostError


@pytest.mark.parametrize("shape", [TinyLlamaShape(), CPU_CALIBRATION_SHAPE])
def test_params_total_equals_transformers_on_meta(tmp_path, shape):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    d = build_tiny_model(tmp_path / "m", shape, tokenizer=False)
    cfg = AutoConfig.from_pretrained(d)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    assert sum(p.numel() for p in model.parameters()) == shape.params_total()


def test_offline_tokenizer_encodes_prompt_text_to_exact_ids(tmp_path):
    from transformers import AutoTokenizer

    d = build_tiny_model(tmp_path / "m", TinyLlamaShape(vocab_size=512))
    tok = AutoTokenizer.from_pretrained(d)
    ids = prompt_token_ids(37, seed=5, vocab_size=512)
    assert tok(prompt_text(ids), add_special_tokens=False)["input_ids"] == ids
    assert tok.eos_token_id == json.loads((d / "config.json").read_text())["eos_token_id"]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 600), seed=st.integers(0, 10**6), vocab=st.integers(64, 200_000))
def test_prompt_ids_have_exact_length_and_avoid_special_tokens(n, seed, vocab):
    ids = prompt_token_ids(n, seed, vocab)
    assert len(ids) == n
    assert all(N_SPECIAL <= i < vocab for i in ids)
    assert ids == prompt_token_ids(n, seed, vocab)  # deterministic


def test_distinct_seeds_give_distinct_prompts():
    assert prompt_token_ids(64, 1, 1024) != prompt_token_ids(64, 2, 1024)


def test_rebuilding_writes_identical_files(tmp_path):
    d = build_tiny_model(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    build_tiny_model(tmp_path / "m")
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


@pytest.mark.parametrize("shape, field", [
    (TinyLlamaShape(hidden_size=130, num_attention_heads=4), "hidden_size"),
    (TinyLlamaShape(num_attention_heads=4, num_kv_heads=3), "num_kv_heads"),
    (TinyLlamaShape(vocab_size=10), "vocab_size"),
])
def test_bad_shape_names_the_field(tmp_path, shape, field):
    with pytest.raises(LifecostError, match=field):
        build_tiny_model(tmp_path / "m", shape)
