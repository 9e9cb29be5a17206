"""Build a small, self-contained model directory for serving runs: `config.json` + a tokenizer.

Why: the serving backends measure an *engine* (scheduler, KV cache, kernels), not a model's
quality, so vLLM's `load_format="dummy"` fills random weights from a `config.json` alone — no
hub download. The OpenAI-compatible server still needs a tokenizer to stream text, so we build
one offline with the `tokenizers` library: a word-level vocabulary `t0 … t{V-1}` in which every
token is one whitespace-separated word. A prompt of n such words encodes to exactly n token ids,
which makes prompt lengths exact on the HTTP path too. Generated text is never read (the load
generator counts token ids), so no decoder is set.

The architecture is Llama (`LlamaForCausalLM`), the shape every serving engine supports; the
parameter count follows the usual decoder formula (embeddings + L·(4·h² attention with GQA
shrinkage + 3·h·i MLP) + untied LM head) — `models.params.params_total` computes the same from
the card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from calibrate.runlog import write_atomic
from models.errors import LifecostError

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
N_SPECIAL = 3  # ids 0, 1, 2; the word tokens t0… start at id 3


@dataclass(frozen=True)
class TinyLlamaShape:
    """A Llama shape small enough for a CPU run; defaults ≈ 1.1 M parameters."""

    hidden_size: int = 128
    num_layers: int = 2
    num_attention_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    vocab_size: int = 1024
    max_position_embeddings: int = 4096

    def params_total(self) -> int:
        """Exact parameter count of `LlamaForCausalLM` with untied embeddings and no biases."""
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        head_dim = h // self.num_attention_heads
        kv = self.num_kv_heads * head_dim
        attn = h * h + 2 * h * kv + h * h  # q, k, v, o projections
        mlp = 3 * h * i  # gate, up, down
        per_layer = attn + mlp + 2 * h  # + two RMSNorm weights
        return v * h * 2 + self.num_layers * per_layer + h  # embed + lm_head + final norm


# ~21 M parameters: big enough that a CPU step is dominated by real GEMMs, small enough that a
# calibration sweep finishes in minutes on two cores.
CPU_CALIBRATION_SHAPE = TinyLlamaShape(
    hidden_size=512, num_layers=4, num_attention_heads=8, num_kv_heads=4,
    intermediate_size=1536, vocab_size=8192, max_position_embeddings=4096,
)


def llama_config(shape: TinyLlamaShape) -> dict:
    """A HF `config.json` dict for a Llama of `shape` (fields as transformers' `LlamaConfig`)."""
    if shape.hidden_size % shape.num_attention_heads:
        raise LifecostError(
            f"hidden_size {shape.hidden_size} is not a multiple of num_attention_heads "
            f"{shape.num_attention_heads}", field="hidden_size", fix="pick a divisible pair")
    if shape.num_attention_heads % shape.num_kv_heads:
        raise LifecostError(
            f"num_attention_heads {shape.num_attention_heads} is not a multiple of num_kv_heads "
            f"{shape.num_kv_heads}", field="num_kv_heads", fix="pick a divisor of the head count")
    if shape.vocab_size <= N_SPECIAL + 16:
        raise LifecostError(f"vocab_size {shape.vocab_size} is too small", field="vocab_size",
                            fix="use at least 64")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "head_dim": shape.hidden_size // shape.num_attention_heads,
        "hidden_act": "silu",
        "max_position_embeddings": shape.max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": shape.vocab_size,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "torch_dtype": "bfloat16",
    }


def word_vocab(vocab_size: int) -> dict[str, int]:
    """Special tokens first, then `t0 … t{vocab_size-4}`: one id per whitespace word."""
    vocab = {BOS: 0, EOS: 1, UNK: 2}
    for k in range(vocab_size - N_SPECIAL):
        vocab[f"t{k}"] = N_SPECIAL + k
    return vocab


def build_tokenizer_files(vocab_size: int, max_len_tok: int) -> tuple[str, str]:
    """(tokenizer.json, tokenizer_config.json) texts for a WordLevel tokenizer, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab=word_vocab(vocab_size), unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([BOS, EOS, UNK])
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "model_max_length": max_len_tok,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    return tok.to_str(), json.dumps(tok_cfg, indent=2)


def prompt_token_ids(n_tok: int, seed: int, vocab_size: int) -> list[int]:
    """A deterministic prompt of exactly `n_tok` word-token ids (never a special token).

    Distinct seeds give distinct prompts so prefix caching cannot turn a measured prefill into a
    cache hit by accident.
    """
    n_words = vocab_size - N_SPECIAL
    # A multiplicative hash walk: cheap, deterministic, spreads ids over the vocabulary.
    return [N_SPECIAL + (seed * 7919 + k * 104729 + (seed * k) % 997) % n_words for k in range(n_tok)]


def prompt_text(ids: list[int]) -> str:
    """The text that our word-level tokenizer encodes back to exactly `ids`."""
    return " ".join(f"t{i - N_SPECIAL}" for i in ids)


def build_tiny_model(out_dir: str | Path, shape: TinyLlamaShape = TinyLlamaShape(),
                     *, tokenizer: bool = True) -> Path:
    """Write `config.json` (+ tokenizer files) into `out_dir`; return the directory.

    Files are written via temp file + rename; re-running with the same shape rewrites the same
    bytes, so the directory can be shared between runs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "config.json", json.dumps(llama_config(shape), indent=2))
    write_atomic(out / "generation_config.json",
                 json.dumps({"bos_token_id": 0, "eos_token_id": 1, "do_sample": False}, indent=2))
    if tokenizer:
        tok_json, tok_cfg = build_tokenizer_files(shape.vocab_size, shape.max_position_embeddings)
        write_atomic(out / "tokenizer.json", tok_json)
        write_atomic(out / "tokenizer_config.json", tok_cfg)
    return out
