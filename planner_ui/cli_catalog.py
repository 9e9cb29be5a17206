"""`lifecost models`, `lifecost gpus` and `lifecost fit`: the catalog and its memory math.

Thin over `models/`. Exit codes: 0 answered (and, for `fit`, it fits); 1 `fit` answered "does
not fit" (a valid question with a negative answer, verdict on stdout); 2 a user error (unknown
name, bad value: one line on stderr, no traceback).
"""

from __future__ import annotations

from typing import Any

import typer

from models.catalog import ModelCard, list_models, load_model
from models.flops import attn_flops_per_token, flops_per_token_fwd, linear_flops_per_token
from models.gpus import list_gpus, load_gpu
from models.lora import lora_trainable_params
from models.memory import QUANTS, kv_bytes_per_token, serving_memory_plan, training_memory_plan, weight_bytes
from models.params import params_active, params_total
from planner_ui import output

models_app = typer.Typer(help="The LLM catalog: shapes, parameters, FLOPs, KV bytes, LoRA sizes.", no_args_is_help=True)
gpus_app = typer.Typer(help="GPU cards: datasheet peaks and default roofline efficiencies.", no_args_is_help=True)

JSON_OPT = typer.Option(False, "--json", help="Print JSON to stdout instead of a table.")
_CARD_FIELDS = ("model_type", "hidden_size", "num_layers", "num_attention_heads", "num_kv_heads", "head_dim",
                "intermediate_size", "vocab_size", "tie_word_embeddings", "max_position_embeddings", "num_experts",
                "num_experts_per_tok", "moe_intermediate_size", "num_shared_experts", "first_k_dense_layers",
                "num_moe_layers", "kv_lora_rank", "q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")


def _cell(v: Any) -> Any:
    """Table cell: booleans as yes/no (rich tables would show them as 1/0), floats rounded."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    return round(v, 3) if isinstance(v, float) else v


def model_summary(card: ModelCard, *, kv_dtype: str = "bf16", context_tok: int = 0, lora_r: int | None = None,
                  lora_targets: str = "all-linear") -> dict[str, Any]:
    """Everything `models show` reports, as a plain dict (the `--json` payload)."""
    data: dict[str, Any] = {"name": card.name}
    data.update({f: getattr(card, f) for f in _CARD_FIELDS})
    data.update(
        params_total=params_total(card),
        params_active=params_active(card),
        kv_dtype=kv_dtype,
        kv_bytes_per_token=kv_bytes_per_token(card, kv_dtype),
        context_tok=context_tok,
        linear_flops_per_token=linear_flops_per_token(card),
        attn_flops_per_token=attn_flops_per_token(card, context_tok),
        flops_per_token_fwd=flops_per_token_fwd(card, context_tok),
        weight_gib={q: weight_bytes(card, q) / 2**30 for q in QUANTS},
    )
    if lora_r is not None:
        data.update(lora_r=lora_r, lora_targets=lora_targets,
                    lora_trainable_params=lora_trainable_params(card, lora_r, lora_targets))
    return data


@models_app.command("list")
def models_list(as_json: bool = JSON_OPT) -> None:
    """List the bundled catalog models."""
    rows = []
    for name in list_models():
        card = load_model(name)
        rows.append({"name": name, "model_type": card.model_type, "params_total": params_total(card),
                     "params_active": params_active(card), "kv_bytes_per_token": kv_bytes_per_token(card)})
    if as_json:
        output.print_json(rows)
        return
    from rich.table import Table

    t = Table(title="lifecost models", title_justify="left")
    for col in ("name", "type", "params total", "params active", "KV B/token (bf16)"):
        t.add_column(col, justify="left" if col in ("name", "type") else "right")
    for r in rows:
        t.add_row(r["name"], r["model_type"], f"{r['params_total']:,}", f"{r['params_active']:,}",
                  f"{r['kv_bytes_per_token']:,}")
    output.out.print(t)


@models_app.command("show")
def models_show(
    name_or_path: str = typer.Argument(..., help="Catalog name (case-insensitive) or a path to a config.json."),
    lora_r: int | None = typer.Option(None, "--lora-r", help="Also count LoRA trainable parameters at this rank."),
    lora_targets: str = typer.Option("all-linear", "--lora-targets", help="all-linear | attention"),
    kv_dtype: str = typer.Option("bf16", "--kv-dtype", help="KV-cache dtype: bf16 | fp16 | fp8"),
    context_tok: int = typer.Option(0, "--context", help="Context length (tokens) for the attention FLOPs.", min=0),
    as_json: bool = JSON_OPT,
) -> None:
    """Shapes, parameter counts, KV bytes per token, forward FLOPs per token (and LoRA size)."""
    card = load_model(name_or_path)
    data = model_summary(card, kv_dtype=kv_dtype, context_tok=context_tok, lora_r=lora_r, lora_targets=lora_targets)
    if as_json:
        output.print_json(data)
        return
    rows = [(k, _cell(v)) for k, v in data.items() if k != "weight_gib" and v is not None]
    rows += [(f"weights {q} (GiB)", round(v, 2)) for q, v in data["weight_gib"].items()]
    output.out.print(output.kv_table(card.name, rows))


@gpus_app.command("list")
def gpus_list(as_json: bool = JSON_OPT) -> None:
    """List the GPU cards."""
    cards = [load_gpu(n) for n in list_gpus()]
    if as_json:
        output.print_json([c.model_dump() for c in cards])
        return
    from rich.table import Table

    t = Table(title="lifecost gpus", title_justify="left")
    for col in ("name", "HBM GiB", "HBM TB/s", "bf16 TFLOP/s", "fp8 TFLOP/s", "TDP W"):
        t.add_column(col, justify="left" if col == "name" else "right")
    for c in cards:
        t.add_row(c.name, f"{c.hbm_gib:g}", f"{c.hbm_tb_s:g}", f"{c.bf16_tflops:g}",
                  "-" if c.fp8_tflops is None else f"{c.fp8_tflops:g}", f"{c.tdp_w:g}")
    output.out.print(t)


@gpus_app.command("show")
def gpus_show(name: str = typer.Argument(..., help="Card name, alias or pynvml device name."),
              as_json: bool = JSON_OPT) -> None:
    """One GPU card, with the source of its figures."""
    card = load_gpu(name)
    if as_json:
        output.print_json(card.model_dump())
        return
    rows = [(k, ", ".join(v) if isinstance(v, list) else ("-" if v is None else v)) for k, v in card.model_dump().items()]
    output.out.print(output.kv_table(card.name, rows))


def fit(
    model: str = typer.Argument(..., help="Catalog name or config.json path."),
    gpu: str = typer.Option(..., "--gpu", help="GPU card name or alias (see `lifecost gpus list`)."),
    quant: str = typer.Option("bf16", "--quant", help="Serving weights: " + " | ".join(QUANTS)),
    kv_dtype: str = typer.Option("bf16", "--kv-dtype", help="KV-cache dtype: bf16 | fp16 | fp8"),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel GPUs per replica (serving)."),
    gpu_memory_utilization: float = typer.Option(0.9, "--gpu-memory-utilization", help="vLLM's memory fraction."),
    max_model_len: int | None = typer.Option(None, "--max-model-len", help="Longest sequence (default: the model's)."),
    train: str | None = typer.Option(None, "--train", help="Plan a fine-tuning step instead: lora | qlora | full"),
    seq: int = typer.Option(2048, "--seq", help="Training sequence length (tokens)."),
    micro_batch: int = typer.Option(1, "--micro-batch", help="Training micro-batch (sequences per GPU)."),
    grad_ckpt: bool = typer.Option(True, "--grad-ckpt/--no-grad-ckpt", help="Gradient checkpointing."),
    lora_r: int = typer.Option(16, "--lora-r", help="LoRA rank (lora/qlora)."),
    lora_targets: str = typer.Option("all-linear", "--lora-targets", help="all-linear | attention"),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw | adamw-8bit | sgd"),
    as_json: bool = JSON_OPT,
) -> None:
    """Does MODEL fit on GPU? GiB needed vs available; KV tokens left, or the training breakdown.

    Serving by default (vLLM-style: weights, activation reserve, KV cache at
    --gpu-memory-utilization); with --train lora|qlora|full, one fine-tuning step's memory.

    Exit code 0: it fits. Exit code 1: it does not fit (the verdict "does not fit: needs X GiB,
    has Y GiB" is still printed). Exit code 2: a bad name or value.
    """
    card = load_model(model)
    gpu_card = load_gpu(gpu)
    if train is None:
        plan = serving_memory_plan(card, gpu_card, quant=quant, kv_dtype=kv_dtype,
                                   gpu_memory_utilization=gpu_memory_utilization, tensor_parallel=tp,
                                   max_model_len_tok=max_model_len)
        data = {"mode": "serving", "model": card.name, "gpu": gpu_card.name, "quant": quant, "kv_dtype": kv_dtype,
                **plan.as_dict(), "available_gib": plan.usable_gib}
    else:
        plan = training_memory_plan(card, gpu_card, train, seq, micro_batch, grad_ckpt=grad_ckpt,
                                    optimizer=optimizer, lora_r=lora_r, lora_targets=lora_targets)
        data = {"mode": "training", "model": card.name, "gpu": gpu_card.name, "seq_len_tok": seq,
                "micro_batch": micro_batch, "grad_ckpt": grad_ckpt, **plan.as_dict()}
    need, have = data["needed_gib"], data["available_gib"]
    if data["fits"]:
        verdict = f"fits: needs {need:.1f} GiB of {have:.1f} GiB"
        if train is None:
            verdict += f"; {data['max_kv_tokens']:,} KV tokens"
    else:
        verdict = f"does not fit: needs {need:.1f} GiB, has {have:.1f} GiB"
    data["verdict"] = verdict
    if as_json:
        output.print_json(data)
    else:
        rows = [(k, _cell(v)) for k, v in data.items() if k != "verdict"]
        output.out.print(output.kv_table(f"{card.name} on {gpu_card.name}", rows))
        output.out.print(verdict)
    if not data["fits"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.add_typer(gpus_app, name="gpus")
    app.command("fit")(fit)
