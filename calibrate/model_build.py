"""Build a model with random weights from a config — the thing every measurement runs on.

Why random weights: step time and memory depend on the architecture's shapes and the kernels,
not on the values in the weights (the same reason vLLM offers `load_format="dummy"`). Building
from a bundled `config.json` needs no hub download and no licence gate, so a calibration runs on
a machine that cannot reach the internet. A local directory or `config.json` path also works.

The model is built directly on the target device (`with torch.device(...)`) so an 8B model is
initialised by GPU kernels in seconds instead of minutes of CPU init followed by a copy.

Imports torch, transformers and `models.errors` (stdlib only): runs on the device machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from models.errors import LifecostError, unknown_name

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIRS = (REPO_ROOT / "models" / "configs", REPO_ROOT / "tests" / "fixtures" / "calibrate_configs")


def known_configs() -> list[str]:
    return sorted({p.stem for d in CONFIG_DIRS if d.is_dir() for p in d.glob("*.json")})


def config_path(name_or_path: str) -> Path:
    """A catalog name (models/configs/<name>.json) or a path to a config.json / model directory."""
    p = Path(name_or_path)
    if p.is_dir() and (p / "config.json").is_file():
        return p / "config.json"
    if p.is_file():
        return p
    for d in CONFIG_DIRS:
        cand = d / f"{name_or_path}.json"
        if cand.is_file():
            return cand
    raise unknown_name("model", name_or_path, known_configs())


def load_config_dict(name_or_path: str) -> dict[str, Any]:
    path = config_path(name_or_path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LifecostError(f"{path} is not valid JSON ({e.msg}, line {e.lineno})", field="model",
                            fix="point at a HF config.json") from None


def build_random_model(name_or_path: str, device: torch.device | str, dtype: torch.dtype = torch.bfloat16,
                       attn_implementation: str = "sdpa", seed: int = 0) -> torch.nn.Module:
    """`AutoModelForCausalLM.from_config` with seeded random weights, built on `device`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(str(config_path(name_or_path)))
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=attn_implementation)
    return model


def param_count(model: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; tied embeddings are counted once (as peft does)."""
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def quantize_nf4(model: torch.nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> int:
    """Swap every `nn.Linear` except `skip` for a bitsandbytes NF4 `Linear4bit` holding the same
    weights, in place — the QLoRA base (Dettmers et al. 2023): NF4 storage, double-quantized
    constants, bf16 compute. The set matches transformers' bnb integration
    (`integrations/bitsandbytes.replace_with_bnb_linear`, which skips lm_head) and so
    `models.memory.nf4_weight_bytes`; we quantize a model built from a config, where
    `from_pretrained(quantization_config=...)` would need a checkpoint on disk. Returns how many
    linears were swapped. Needs `bitsandbytes` (the `calibrate` extra)."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise LifecostError("QLoRA needs the bitsandbytes package", field="method",
                            fix="pip install bitsandbytes (in the `calibrate` extra), or use lora / full") from None
    swapped = 0
    for parent in list(model.modules()):
        for cname, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or cname in skip:
                continue
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=child.weight.dtype, compress_statistics=True, quant_type="nf4",
                                  device="meta")
            q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                         quant_type="nf4")
            if child.bias is not None:
                q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, cname, q.to(child.weight.device))  # `.to` quantizes the weight
            swapped += 1
    return swapped
