"""LLM architecture cards, read from Hugging Face `config.json` files.

Why config.json: it is the one description of a model's shapes that every checkpoint publishes
and every engine (transformers, vLLM) reads, so a card built from it describes exactly the
network those engines instantiate. The bundled files under `configs/` are the published
configs of the catalog models (no weights); any user `config.json` path works the same way.

`ModelCard` normalises the differently-named fields of each architecture family
(`num_local_experts` vs `num_experts` vs `n_routed_experts`, MLA's `kv_lora_rank`, …) into one
flat record; `config` keeps the raw dict. The per-family rules mirror the transformers 5.x
modelling code (`modeling_<type>.py`), which is what `params.py` is checked against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import LifecostError, unknown_name

CONFIG_DIR = Path(__file__).parent / "configs"

# A decoder config.json is a few KB; anything far larger is not one (and must not be slurped).
MAX_CONFIG_BYTES = 1_000_000

# Families whose layer layout `params.py` reproduces exactly (checked against transformers 5.x on
# the meta device). Anything else is refused rather than silently approximated.
DENSE_TYPES = ("llama", "mistral", "qwen2", "qwen3")
MOE_TYPES = ("mixtral", "qwen3_moe", "deepseek_v3")
SUPPORTED_TYPES = DENSE_TYPES + MOE_TYPES


@dataclass(frozen=True)
class ModelCard:
    """One decoder-only LLM's shapes, normalised across architecture families.

    Field meanings (all counts are per model unless noted):
    - `head_dim`: query/key head width. For MLA (DeepSeek-V3) it is `qk_nope_head_dim +
      qk_rope_head_dim` (192), the width of q·kᵀ; values use `v_head_dim`.
    - `num_experts`: routed experts per MoE layer (0 = dense model); `num_experts_per_tok` the
      router's top-k; `moe_intermediate_size` one expert's FFN width; `num_shared_experts` the
      always-on experts (DeepSeek) of the same width.
    - `first_k_dense_layers`: leading layers with a dense MLP (DeepSeek `first_k_dense_replace`);
      `num_moe_layers` is the exact number of layers whose MLP is an MoE block (Qwen3-MoE's
      `mlp_only_layers`/`decoder_sparse_step` included).
    - `kv_lora_rank`/`q_lora_rank`/`qk_*_head_dim`/`v_head_dim`: MLA dims (None unless MLA).
    - `qkv_bias`, `o_bias`, `mlp_bias`, `qk_norm`: layout details that change the exact count
      (Qwen2 has q/k/v biases; Qwen3 RMS-normalises q and k per head).
    """

    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    num_shared_experts: int = 0
    first_k_dense_layers: int = 0
    kv_lora_rank: int | None = None
    q_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None
    num_moe_layers: int = 0
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    config: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def v_dim(self) -> int:
        """Width of one attention head's value vector."""
        return self.v_head_dim if self.v_head_dim is not None else self.head_dim


def list_models() -> list[str]:
    """Names of the bundled catalog models (file stems under `configs/`), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_model(name_or_path: str | Path) -> ModelCard:
    """A card for a catalog name (case-insensitive) or a path to any HF `config.json`.

    Unknown names raise `unknown_name` with the nearest catalog matches.
    """
    text = str(name_or_path).strip()
    by_lower = {n.lower(): n for n in list_models()}
    if text.lower() in by_lower:
        canonical = by_lower[text.lower()]
        return card_from_config(_read_json(CONFIG_DIR / f"{canonical}.json"), name=canonical)
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if path.is_file():
        return card_from_config(_read_json(path), name=_name_for(path))
    if path.suffix == ".json" or "/" in text or "\\" in text:
        raise LifecostError(f"config file {text!r} not found", field="model",
                            fix="give a catalog name (`lifecost models list`) or an existing config.json path")
    raise unknown_name("model", text, list_models())


def _name_for(path: Path) -> str:
    """A card name for a user file: the folder for `.../Model/config.json`, else the stem."""
    return path.parent.name if path.name == "config.json" and path.parent.name else path.stem


def _read_json(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise LifecostError(f"{path} is {size:,} bytes; a config.json is a few KB", field="model",
                            fix="pass the model's config.json, not a weights or index file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise LifecostError(f"{path} is not UTF-8 text ({e.reason})", field="model",
                            fix="pass a JSON config.json") from None
    except json.JSONDecodeError as e:
        raise LifecostError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}",
                            field="model", fix="fix the JSON syntax") from None
    if not isinstance(data, dict):
        raise LifecostError(f"{path} holds a JSON {type(data).__name__}, not an object", field="model",
                            fix="pass a Hugging Face config.json")
    return data


def _int(cfg: dict[str, Any], key: str, *, src: str, default: int | None = None, minimum: int = 1) -> int:
    """A required positive integer field, with a one-line error naming it when missing/bad."""
    value = cfg.get(key, default)
    if value is None:
        raise LifecostError(f"{src} has no {key!r}; not a decoder LLM config", field=key,
                            fix="pass the config.json of a decoder-only LLM")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LifecostError(f"{src}: {key} = {value!r} must be an integer ≥ {minimum}", field=key,
                            fix=f"correct {key} in the config")
    return value


def card_from_config(cfg: dict[str, Any], name: str = "custom") -> ModelCard:
    """Normalise one HF config dict into a `ModelCard` (rules per transformers 5.x modelling code)."""
    src = f"config {name!r}"
    model_type = cfg.get("model_type")
    if not model_type:
        raise LifecostError(f"{src} has no 'model_type'; not a Hugging Face model config", field="model_type",
                            fix="pass the config.json of a decoder-only LLM")
    if model_type not in SUPPORTED_TYPES:
        raise LifecostError(f"{src}: model_type {model_type!r} is not supported", field="model_type",
                            fix="supported: " + ", ".join(SUPPORTED_TYPES))
    hidden = _int(cfg, "hidden_size", src=src)
    layers = _int(cfg, "num_hidden_layers", src=src)
    heads = _int(cfg, "num_attention_heads", src=src)
    kv_heads = _int(cfg, "num_key_value_heads", src=src, default=heads)
    vocab = _int(cfg, "vocab_size", src=src)
    inter = _int(cfg, "intermediate_size", src=src)
    max_pos = _int(cfg, "max_position_embeddings", src=src, default=2048)
    if heads % kv_heads:
        raise LifecostError(f"{src}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}",
                            field="num_key_value_heads", fix="correct the head counts")
    head_dim = cfg.get("head_dim") or hidden // heads
    extra: dict[str, Any] = {}

    if model_type == "deepseek_v3":
        kv_rank = _int(cfg, "kv_lora_rank", src=src)
        q_rank = cfg.get("q_lora_rank")
        nope = _int(cfg, "qk_nope_head_dim", src=src)
        rope = _int(cfg, "qk_rope_head_dim", src=src)
        v_hd = _int(cfg, "v_head_dim", src=src)
        first_dense = _int(cfg, "first_k_dense_replace", src=src, default=0, minimum=0)
        experts = _int(cfg, "n_routed_experts", src=src)
        extra = dict(
            kv_lora_rank=kv_rank, q_lora_rank=None if q_rank is None else int(q_rank), qk_nope_head_dim=nope,
            qk_rope_head_dim=rope, v_head_dim=v_hd, num_experts=experts,
            num_experts_per_tok=_int(cfg, "num_experts_per_tok", src=src),
            moe_intermediate_size=_int(cfg, "moe_intermediate_size", src=src),
            num_shared_experts=_int(cfg, "n_shared_experts", src=src, default=0, minimum=0),
            first_k_dense_layers=min(first_dense, layers), num_moe_layers=max(layers - first_dense, 0),
            qkv_bias=bool(cfg.get("attention_bias", False)), o_bias=bool(cfg.get("attention_bias", False)),
        )
        head_dim = nope + rope
        # MLA has no grouped KV heads; transformers keeps num_key_value_heads = num_attention_heads.
    elif model_type == "mixtral":
        extra = dict(num_experts=_int(cfg, "num_local_experts", src=src),
                     num_experts_per_tok=_int(cfg, "num_experts_per_tok", src=src),
                     moe_intermediate_size=inter, num_moe_layers=layers)
    elif model_type == "qwen3_moe":
        experts = _int(cfg, "num_experts", src=src, minimum=0)
        step = _int(cfg, "decoder_sparse_step", src=src, default=1)
        mlp_only = set(cfg.get("mlp_only_layers") or [])
        moe_layers = sum(1 for i in range(layers) if i not in mlp_only and experts > 0 and (i + 1) % step == 0)
        extra = dict(num_experts=experts,
                     num_experts_per_tok=_int(cfg, "num_experts_per_tok", src=src) if experts else 0,
                     moe_intermediate_size=_int(cfg, "moe_intermediate_size", src=src) if experts else 0,
                     num_moe_layers=moe_layers, first_k_dense_layers=0,
                     qkv_bias=bool(cfg.get("attention_bias", False)), o_bias=bool(cfg.get("attention_bias", False)),
                     qk_norm=True)
    elif model_type == "qwen2":
        extra = dict(qkv_bias=True)
    elif model_type == "qwen3":
        extra = dict(qkv_bias=bool(cfg.get("attention_bias", False)), o_bias=bool(cfg.get("attention_bias", False)),
                     qk_norm=True)
    elif model_type == "llama":
        extra = dict(qkv_bias=bool(cfg.get("attention_bias", False)), o_bias=bool(cfg.get("attention_bias", False)),
                     mlp_bias=bool(cfg.get("mlp_bias", False)))
    # mistral: no biases, no extras.

    if extra.get("num_experts", 0) and extra["num_experts_per_tok"] > extra["num_experts"]:
        raise LifecostError(f"{src}: num_experts_per_tok {extra['num_experts_per_tok']} exceeds the expert count "
                            f"{extra['num_experts']}", field="num_experts_per_tok", fix="correct the config")
    return ModelCard(
        name=name, model_type=model_type, hidden_size=hidden, num_layers=layers, num_attention_heads=heads,
        num_kv_heads=kv_heads, head_dim=int(head_dim), intermediate_size=inter, vocab_size=vocab,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)), max_position_embeddings=max_pos,
        config=dict(cfg), **extra,
    )
