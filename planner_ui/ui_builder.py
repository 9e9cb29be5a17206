"""The scenario builder in the sidebar: widgets over the fields of one `Scenario`.

Why a field table: each widget is keyed by the Scenario field's dotted path (`sc.engine.max_num_seqs`),
seeded from the current scenario the first time it renders, and read back as a dict of
changes validated by pydantic — so the builder cannot drift from the schema, and loading a YAML
file simply reseeds the keys. Anything the widgets do not cover (extra request classes, prefix
specs, diurnal shapes) is carried over untouched from the loaded scenario.

Every section gets an error slot right under its widgets (`Built.slots`); pages route a
`LifecostError` whose `field` names a section (`slo.ttft_p99_s`, `model`, ...) into that slot, so
the message appears next to the field that caused it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import streamlit as st
from pydantic import ValidationError

from planner_ui import ui_uploads
from simulator.scenario import ArrivalSpec, Scenario, parse_scenario, scenario_to_yaml

KEY = "sc."  # prefix of every widget key that mirrors a Scenario field
SECTIONS = ("model", "gpu", "engine", "workload", "slo", "speculative", "offload", "cluster", "prices", "horizon", "training")
WEIGHT_QUANTS = ("bf16", "fp16", "fp8", "int8", "int4-awq", "int4-gptq", "int4-gguf")
KV_DTYPES = ("bf16", "fp16", "fp8")


@dataclass
class Built:
    """What the builder hands the pages: the scenario (None while the inputs are invalid) and
    one error slot per section."""

    scenario: Scenario | None
    slots: dict[str, Any] = field(default_factory=dict)


def get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def set_path(data: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node: Any = data
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    node[int(leaf) if leaf.isdigit() else leaf] = value


def base_scenario() -> Scenario:
    """The scenario the widgets start from: the last loaded YAML, or the embedded default."""
    if "base_yaml" not in st.session_state:
        st.session_state["base_yaml"] = scenario_to_yaml(Scenario())
    return parse_scenario(st.session_state["base_yaml"], source="scenario")


def reseed(s: Scenario) -> None:
    """Replace the base scenario and forget every widget value so they re-read it."""
    st.session_state["base_yaml"] = scenario_to_yaml(s)
    for k in [k for k in st.session_state if isinstance(k, str) and k.startswith((KEY, "ui."))]:
        del st.session_state[k]


def _seed(path: str, base: Scenario, default: Any = None) -> str:
    key = KEY + path
    if key not in st.session_state:
        value = get_path(base, path)
        st.session_state[key] = default if value is None else value
    return key


def _widget_value(path: str) -> Any:
    return st.session_state.get(KEY + path)


# --------------------------------------------------------------------------- sections


def _model_section(base: Scenario) -> None:
    from models.catalog import list_models

    choices = list(list_models()) + list(st.session_state.get("uploaded_models", []))
    current = base.model.name
    if current not in choices:
        choices.append(current)
    key = _seed("model.name", base)
    if st.session_state[key] not in choices:
        choices.append(st.session_state[key])
    st.selectbox("Model", choices, key=key, format_func=ui_uploads.model_label,
                 help="A catalog card (`lifecost models list`) or an uploaded HF config.json")
    c1, c2 = st.columns(2)
    c1.selectbox("Weights", WEIGHT_QUANTS, key=_seed("model.quant", base))
    c2.selectbox("KV cache", KV_DTYPES, key=_seed("model.kv_dtype", base))
    ui_uploads.config_uploader()  # selects the uploaded card (callback) when it is a model


def _gpu_section(base: Scenario) -> None:
    from models.gpus import list_gpus

    choices = list(list_gpus())
    key = _seed("gpu.name", base)
    if st.session_state[key] not in choices:
        choices.append(st.session_state[key])
    c1, c2 = st.columns([2, 1])
    c1.selectbox("GPU", choices, key=key, help="`lifecost gpus list`")
    c2.number_input("TP", min_value=1, max_value=64, step=1, key=_seed("gpu.tensor_parallel", base),
                    help="Tensor-parallel GPUs per replica")


def _engine_section(base: Scenario) -> None:
    c1, c2 = st.columns(2)
    c1.number_input("max_num_seqs", min_value=1, max_value=4096, step=16, key=_seed("engine.max_num_seqs", base))
    c2.number_input("Token budget / step", min_value=16, max_value=1_048_576, step=512,
                    key=_seed("engine.max_num_batched_tokens", base), help="max_num_batched_tokens")
    c1.number_input("max_model_len (tok)", min_value=16, max_value=1_048_576, step=1024,
                    key=_seed("engine.max_model_len_tok", base))
    c2.number_input("Block size (tok)", min_value=1, max_value=1024, step=16, key=_seed("engine.block_size_tok", base))
    st.slider("gpu_memory_utilization", min_value=0.30, max_value=1.00, step=0.01,
              key=_seed("engine.gpu_memory_utilization", base))
    c1, c2 = st.columns(2)
    c1.toggle("Chunked prefill", key=_seed("engine.enable_chunked_prefill", base))
    c2.toggle("Prefix caching", key=_seed("engine.enable_prefix_caching", base))
    c1.selectbox("Scheduling", ("fcfs", "priority"), key=_seed("engine.scheduling_policy", base))
    c2.selectbox("Preemption", ("recompute", "swap"), key=_seed("engine.preemption_mode", base))
    st.text_input("Step-time profile", key=_seed("engine.profile", base),
                  help="auto: the measured Profile for this GPU if one exists; roofline: datasheet model; or a Profile key/path")


def _length_widgets(label: str, path: str, base: Scenario) -> None:
    dist = get_path(base, path)
    kinds = ["fixed", "uniform", "lognormal"] + (["empirical"] if dist.kind == "empirical" else [])
    typical = int(dist.value or dist.mean or dist.high or dist.low)
    st.selectbox(f"{label} length", kinds, key=_seed(f"{path}.kind", base))
    kind = _widget_value(f"{path}.kind")
    c1, c2 = st.columns(2)
    if kind == "fixed":
        c1.number_input("tokens", min_value=1, step=16, key=_seed(f"{path}.value", base, typical))
    elif kind == "uniform":
        c1.number_input("low (tok)", min_value=1, step=16, key=_seed(f"{path}.low", base))
        c2.number_input("high (tok)", min_value=1, step=16, key=_seed(f"{path}.high", base, max(typical, dist.low)))
    elif kind == "lognormal":
        c1.number_input("mean (tok)", min_value=1.0, step=16.0, key=_seed(f"{path}.mean", base, float(typical)))
        c2.number_input("sigma", min_value=0.0, max_value=4.0, step=0.05, key=_seed(f"{path}.sigma", base))
        c1.number_input("low (tok)", min_value=1, step=16, key=_seed(f"{path}.low", base))
        c2.number_input("high (tok)", min_value=1, step=256, key=_seed(f"{path}.high", base, max(4 * typical, dist.low)))
    else:
        st.caption(f"empirical: column `{dist.column}` of `{dist.path}` (edit in YAML)")


def _workload_section(base: Scenario) -> None:
    c1, c2 = st.columns(2)
    c1.selectbox("Arrivals", ("poisson", "gamma", "diurnal", "trace"), key=_seed("workload.arrival.kind", base))
    c2.number_input("Rate (req/s)", min_value=0.01, max_value=100_000.0, step=1.0, format="%.2f",
                    key=_seed("workload.arrival.rate_qps", base, ArrivalSpec.model_fields["rate_qps"].default))
    kind = _widget_value("workload.arrival.kind")
    if kind == "gamma":
        c1.number_input("Burstiness (CV)", min_value=0.05, max_value=20.0, step=0.25, key=_seed("workload.arrival.cv", base))
    _seed("workload.arrival.trace_path", base, "")
    if kind == "trace":
        st.caption(f"trace `{ui_uploads.short_path(_widget_value('workload.arrival.trace_path'))}`")
        if "ui.trace_scaled" not in st.session_state:
            st.session_state["ui.trace_scaled"] = base.workload.arrival.rate_qps is not None
        st.toggle("Time-scale the trace to the rate", key="ui.trace_scaled",
                  help="off: replay at the trace's own timestamps")
    c2.number_input("Requests simulated", min_value=10, max_value=1_000_000, step=500, key=_seed("workload.num_requests", base))
    classes = base.workload.classes
    if len(classes) > 1:
        st.caption("Request classes (mix from the loaded YAML): " + ", ".join(f"{c.name} {c.weight:g}" for c in classes))
    if kind != "trace":
        _length_widgets(f"Prompt ({classes[0].name})", "workload.classes.0.prompt_tok", base)
        _length_widgets(f"Output ({classes[0].name})", "workload.classes.0.output_tok", base)
    st.slider(f"Reasoning on ({classes[0].name})", min_value=0.0, max_value=1.0, step=0.05,
              key=_seed("workload.classes.0.reasoning.on_frac", base),
              help="Share of requests that think first (extra thinking tokens before the answer)")
    if _widget_value("workload.classes.0.reasoning.on_frac"):
        think = base.workload.classes[0].reasoning.thinking_tok
        c1, c2 = st.columns(2)
        if think.kind == "lognormal":
            c1.number_input("Thinking mean (tok)", min_value=1.0, step=250.0,
                            key=_seed("workload.classes.0.reasoning.thinking_tok.mean", base))
        c2.number_input("Thinking budget (tok)", min_value=0, step=500,
                        key=_seed("workload.classes.0.reasoning.thinking_budget_tok", base, 0), help="0 = no cap (budget forcing off)")
    ui_uploads.trace_uploader()  # switches arrivals to the trace (callback) when it reads cleanly


def _slo_section(base: Scenario) -> None:
    c1, c2 = st.columns(2)
    c1.number_input("p99 TTFT (s)", min_value=0.0, step=0.1, format="%.3f", key=_seed("slo.ttft_p99_s", base, 0.0),
                    help="0 = no TTFT objective")
    c2.number_input("p99 TPOT (s)", min_value=0.0, step=0.005, format="%.3f", key=_seed("slo.tpot_p99_s", base, 0.0),
                    help="0 = no TPOT objective")
    c1.number_input("p99 E2E (s)", min_value=0.0, step=1.0, format="%.1f", key=_seed("slo.e2e_p99_s", base, 0.0),
                    help="0 = no end-to-end objective")
    c2.number_input("Attainment", min_value=0.50, max_value=1.0, step=0.005, format="%.3f", key=_seed("slo.attainment", base))


def _speculative_section(base: Scenario) -> None:
    st.selectbox("Method", ("none", "draft", "eagle", "ngram"), key=_seed("speculative.method", base))
    if _widget_value("speculative.method") != "none":
        c1, c2 = st.columns(2)
        c1.number_input("Draft tokens k", min_value=1, max_value=64, step=1, key=_seed("speculative.num_draft_tok", base))
        c2.number_input("Acceptance α", min_value=0.0, max_value=0.99, step=0.05, format="%.2f",
                        key=_seed("speculative.acceptance_rate", base))
        if _widget_value("speculative.method") == "draft":
            from models.catalog import list_models

            options = [""] + list(list_models())
            key = _seed("speculative.draft_model", base, "")
            if st.session_state[key] not in options:
                options.append(st.session_state[key])
            st.selectbox("Draft model", options, key=key)


def _offload_section(base: Scenario) -> None:
    st.toggle("Offload KV to host / NVMe tiers", key=_seed("offload.enabled", base))
    tiers = base.offload.tiers
    st.caption("tiers: " + " → ".join(f"{t.name} {t.capacity_gib:,.0f} GiB" for t in tiers) + " (edit in YAML)")


def _cluster_section(base: Scenario) -> None:
    c1, c2 = st.columns(2)
    c1.number_input("Replicas", min_value=1, max_value=256, step=1, key=_seed("cluster.replicas", base),
                    help="Simulated behind one router in 'Inside one run' (capacity and cost size the fleet themselves)")
    c2.selectbox("Router", ("round_robin", "random", "least_outstanding_tokens", "prefix_affinity"), key=_seed("cluster.router", base))
    st.toggle("Autoscale (cold starts)", key=_seed("cluster.autoscale.enabled", base))
    if _widget_value("cluster.autoscale.enabled"):
        c1, c2 = st.columns(2)
        c1.number_input("min replicas", min_value=1, step=1, key=_seed("cluster.autoscale.min_replicas", base))
        c2.number_input("max replicas", min_value=1, step=1, key=_seed("cluster.autoscale.max_replicas", base))
        c1.number_input("cold start (s)", min_value=0.0, step=30.0, key=_seed("cluster.autoscale.cold_start_s", base))
    st.toggle("Disaggregated prefill / decode", key=_seed("cluster.disaggregated.enabled", base))
    if _widget_value("cluster.disaggregated.enabled"):
        c1, c2 = st.columns(2)
        c1.number_input("prefill replicas", min_value=1, step=1, key=_seed("cluster.disaggregated.prefill_replicas", base))
        c2.number_input("decode replicas", min_value=1, step=1, key=_seed("cluster.disaggregated.decode_replicas", base))
        st.selectbox("KV transfer link", ("nvlink", "infiniband", "ethernet"), key=_seed("cluster.disaggregated.link", base))


def _prices_section(base: Scenario) -> None:
    from models.prices import load_prices

    sheet = load_prices(base.prices.sheet)
    providers = sorted({row.provider for row in sheet.cloud})
    key = _seed("prices.provider", base)
    if st.session_state[key] not in providers:
        providers.append(st.session_state[key])
    c1, c2 = st.columns(2)
    c1.selectbox("Provider", providers, key=key, help=f"price sheet as of {sheet.as_of}")
    c2.selectbox("Pricing", ("on_demand", "reserved_1y", "reserved_3y", "spot", "on_prem"), key=_seed("prices.pricing", base))
    st.number_input("$/GPU-hour override", min_value=0.0, step=0.25, format="%.2f",
                    key=_seed("prices.usd_per_gpu_hour", base, 0.0), help="0 = use the dated price sheet")


def _horizon_section(base: Scenario) -> None:
    c1, c2 = st.columns(2)
    c1.number_input("Months", min_value=1, max_value=240, step=1, key=_seed("horizon.months", base))
    c2.number_input("Requests / day", min_value=1.0, step=100_000.0, format="%.0f", key=_seed("horizon.requests_per_day", base))
    c1.number_input("Growth / month", min_value=-0.99, max_value=10.0, step=0.01, format="%.2f", key=_seed("horizon.monthly_growth", base))
    c2.number_input("Peak / mean", min_value=1.0, max_value=20.0, step=0.1, key=_seed("horizon.diurnal_peak_to_mean", base))
    st.toggle("Autoscale serving", key=_seed("horizon.autoscale", base))


def _training_section(base: Scenario) -> None:
    c1, c2 = st.columns(2)
    c1.selectbox("Method", ("none", "lora", "qlora", "full"), key=_seed("training.method", base))
    c2.number_input("LoRA r", min_value=1, max_value=1024, step=8, key=_seed("training.lora_r", base))
    c1.number_input("Samples", min_value=1, step=1000, key=_seed("training.samples", base))
    c2.number_input("Epochs", min_value=0.1, step=0.5, key=_seed("training.epochs", base))
    c1.number_input("Mean tokens", min_value=1, step=100, key=_seed("training.mean_tokens", base))
    c2.number_input("Training GPUs", min_value=1, max_value=4096, step=1, key=_seed("training.num_gpus", base))
    st.number_input("Retrain every (months)", min_value=0, max_value=240, step=1,
                    key=_seed("training.retrain_every_months", base, 0), help="0 = never retrain")


_SECTION_UI = {
    "model": ("Model", _model_section),
    "gpu": ("GPU", _gpu_section),
    "engine": ("Engine", _engine_section),
    "workload": ("Workload", _workload_section),
    "slo": ("SLOs", _slo_section),
    "speculative": ("Speculative decoding", _speculative_section),
    "offload": ("KV offload", _offload_section),
    "cluster": ("Replicas & routing", _cluster_section),
    "prices": ("Pricing", _prices_section),
    "horizon": ("Horizon & traffic", _horizon_section),
    "training": ("Fine-tuning", _training_section),
}
_OPEN = {"model", "gpu", "workload", "slo"}
# Widget value 0 means "not set" for these optional fields.
_ZERO_IS_NONE = {"slo.ttft_p99_s", "slo.tpot_p99_s", "slo.e2e_p99_s", "prices.usd_per_gpu_hour", "training.retrain_every_months",
                 "workload.classes.0.reasoning.thinking_budget_tok", "speculative.draft_model"}


def scenario_from_widgets(base: Scenario) -> Scenario:
    """Apply every `sc.*` widget value onto the base scenario and validate (pydantic raises)."""
    data = base.model_dump(mode="python")
    for key, value in sorted(st.session_state.to_dict().items()):
        if not (isinstance(key, str) and key.startswith(KEY)):
            continue
        path = key[len(KEY):]
        if path in _ZERO_IS_NONE and not value:
            value = None
        if path == "workload.arrival.trace_path" and not value:
            value = None
        if path == "workload.arrival.rate_qps" and _widget_value("workload.arrival.kind") == "trace" \
                and not st.session_state.get("ui.trace_scaled", True):
            value = None
        try:
            set_path(data, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # a widget for a part the base scenario does not have (e.g. class 0 of a reloaded file)
    return Scenario.model_validate(data)


def section_of(field_name: str | None) -> str | None:
    """Which builder section an error's `field` belongs to (`slo.ttft_p99_s`, `--slo-ttft-p99` → `slo`)."""
    aliases = {"trace": "workload", "arrival": "workload", "classes": "workload", "config": "model",
               "price": "prices", "pricing": "prices", "months": "horizon", "train": "training"}
    for token in re.findall(r"[a-z_]+", (field_name or "").lower()):
        if token in SECTIONS:
            return token
        if token in aliases:
            return aliases[token]
    return None


def render_sidebar() -> Built:
    """Draw the builder; return the validated scenario (or None) and the per-section error slots."""
    sb = st.sidebar
    with sb:
        st.markdown("### Scenario")
        load_slot = st.expander("Load / save YAML", expanded=bool(st.session_state.get("err.scenario")))
        with load_slot:
            ui_uploads.scenario_uploader()
            save_slot = st.container()
        base = base_scenario()
        slots: dict[str, Any] = {}
        for name in SECTIONS:
            title, draw = _SECTION_UI[name]
            with st.expander(title, expanded=name in _OPEN):
                try:
                    draw(base)
                except Exception as e:  # a catalog/reader error: one line next to the section, never a traceback
                    st.error(ui_uploads.short_error(e))
                slots[name] = st.container()
        try:
            scenario = scenario_from_widgets(base)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            msg = f"{loc}: {err['msg'].removeprefix('Value error, ')}"
            slots.get(section_of(loc) or "model", load_slot).error(msg)
            scenario = None
        if scenario is not None:
            save_slot.download_button("Save scenario YAML", scenario_to_yaml(scenario), file_name=f"{scenario.name}.yaml",
                                      mime="application/x-yaml", width="stretch", key="dl_scenario_sidebar")
            save_slot.caption(f"digest `{scenario.digest()}`")
    return Built(scenario=scenario, slots=slots)
