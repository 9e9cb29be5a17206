"""Library calls from the pages: cached by Scenario digest, wrapped so errors stay one line.

Why here: Streamlit reruns the whole script on every widget change, in one process, so results
must be cached *outside* module globals — `st.cache_data` keyed on `Scenario.digest()` (the
scenario object itself is passed as an unhashed `_scenario` argument: the digest already is its
content hash). A second look at a scenario is therefore instant, across pages and tabs.

`call()` is the one place that turns exceptions into what the user sees: a `LifecostError`
prints its one-line message on the page *and* in the sidebar section its `field` names (so an
impossible SLO shows up under the SLO inputs); any other exception shows a short
"unexpected error" line — never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from models.errors import LifecostError
from planner_ui.ui_builder import Built, section_of
from planner_ui.ui_uploads import short_error
from simulator.scenario import Scenario

T = TypeVar("T")


def report(e: BaseException, built: Built | None = None) -> None:
    """Show an error on the page and next to the sidebar field it names."""
    msg = short_error(e)
    shown = st.session_state.setdefault("_errors_this_run", set())
    if msg in shown:  # two calls failing for one reason (e.g. a model that does not fit): say it once
        return
    shown.add(msg)
    st.error(msg)
    if isinstance(e, LifecostError) and built is not None:
        section = section_of(e.field)
        if section and section in built.slots:
            built.slots[section].error(msg)


def report_message(msg: str, section: str, built: Built | None = None) -> None:
    """A finding that is the user's to fix (not an exception): on the page and next to `section`."""
    st.error(msg)
    if built is not None and section in built.slots:
        built.slots[section].error(msg)


def call(fn: Callable[..., T], *args: Any, built: Built | None = None, status: str | None = None, **kwargs: Any) -> T | None:
    """Run a library call; on failure show the error (see module doc) and return None.

    With `status`, the call runs inside an `st.status` box that appears before the work starts
    (so an edit never leaves the page silent) and disappears when the results are drawn.
    """
    try:
        if status is None:
            return fn(*args, **kwargs)
        slot = st.empty()
        with slot.status(status, expanded=False):
            value = fn(*args, **kwargs)
        slot.empty()  # done: the results replace the progress box
        return value
    except Exception as e:  # noqa: BLE001 — every failure becomes one line, never a traceback
        report(e, built)
        return None


def need_scenario(built: Built) -> Scenario | None:
    """The current scenario, or a hint to fix the builder's errors first."""
    if built.scenario is None:
        st.warning("Fix the scenario inputs marked in the sidebar to see results.")
    return built.scenario


# --------------------------------------------------------------------------- cached library calls


def gpu_card(name: str):
    from models.gpus import load_gpu

    return load_gpu(name)


def profile_in_use(scenario: Scenario):
    """(how it was chosen, the Profile whose step-time fit the simulator uses — None = roofline,
    a Profile measured for this GPU that is shown for its ceilings even if it has no fit).

    Asks the simulator's own `make_predictor`, so the page cannot disagree with what runs."""
    from simulator.predictor import make_predictor

    predictor = make_predictor(scenario)
    used = getattr(predictor, "profile", None)
    how = f"engine.profile = {scenario.engine.profile}"
    if used is None and scenario.engine.profile == "auto":
        from models.profile import find_profile

        partial = find_profile(gpu_card(scenario.gpu.name).name)
        if partial is not None:  # measured ceilings, shown; its fit is not used for steps
            why = (f"{partial.key} is a fit of another engine ({partial.engine.name}), used only when named: "
                   f"engine.profile: {partial.key}" if partial.step_time is not None else f"{partial.key} has no step-time fit")
            return f"{how}; {why}", None, partial
    return how, used, used


@st.cache_data(show_spinner=False, max_entries=64)
def decode_step_curve(digest: str, _scenario: Scenario):
    """The step-time predictor the simulator uses, asked for one decode step at growing batch
    sizes, each sequence holding the workload's mean context (mean prompt + half the mean output,
    from `simulator.cost.mean_tokens_per_request`)."""
    import pandas as pd

    from simulator.cost import mean_tokens_per_request
    from simulator.predictor import StepFeatures, make_predictor

    s = _scenario
    predictor = make_predictor(s)
    prompt_tok, output_tok = mean_tokens_per_request(s)
    ctx = max(1, round(prompt_tok + output_tok / 2))
    sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, s.engine.max_num_seqs} & set(range(1, s.engine.max_num_seqs + 1)))
    rows = []
    for b in sizes:
        t = predictor.step_time_s(StepFeatures(decode_tok=b, decode_ctx_tok=b * ctx, num_seqs=b))
        rows.append({"batch": b, "step_s": t, "tok_s": b / t})
    return pd.DataFrame(rows), ctx, predictor.name


def fidelity_frame(scenario: Scenario, profile):
    """The fidelity report's per-run rows (measured, predicted, signed relative error per metric)
    from `fidelity.json` beside the Profile in use, or None when no validation was written."""
    import pandas as pd

    from planner_ui.report import read_fidelity

    data = read_fidelity(scenario, profile)
    if data is None:
        return None
    rows = []
    for kind in ("serving", "training"):
        for run in data.get(kind) or []:
            for metric, v in (run.get("metrics") or {}).items():
                if v.get("measured") is None or v.get("predicted") is None:
                    continue
                rows.append({"kind": kind, "set": run.get("set", ""), "model": run.get("model", ""),
                             "run": run.get("workload") or run.get("run") or "", "metric": metric,
                             "measured": float(v["measured"]), "predicted": float(v["predicted"]),
                             "error": v.get("error")})
    return pd.DataFrame(rows)


# Each cached function takes the scenario's digest as its only hashed argument (plus plain
# numbers): the digest is the Scenario's content hash, so equal scenarios share one entry.


@st.cache_data(show_spinner=False, max_entries=64)
def simulation(digest: str, _scenario: Scenario):
    """One replica serving the scenario's workload — `lifecost simulate --json` is its summary()."""
    from simulator.engine import simulate

    return simulate(_scenario)


@st.cache_data(show_spinner=False, max_entries=64)
def memory_plan(digest: str, _scenario: Scenario):
    """The serving memory plan (weights, activation reserve, KV) for one replica's GPU."""
    from models.catalog import load_model
    from models.memory import serving_memory_plan

    s = _scenario
    e = s.engine  # the same arguments as the simulator's `kv_capacity_blocks`
    return serving_memory_plan(load_model(s.model.name), gpu_card(s.gpu.name), s.model.quant, s.model.kv_dtype,
                               e.gpu_memory_utilization, tensor_parallel=s.gpu.tensor_parallel, max_model_len_tok=e.max_model_len_tok,
                               max_num_batched_tokens=e.max_num_batched_tokens, max_num_seqs=e.max_num_seqs)


@st.cache_data(show_spinner=False, max_entries=64)
def training_plan(digest: str, _scenario: Scenario):
    """The fine-tune plan (`lifecost train --json`), or None when the scenario trains nothing."""
    from simulator.training import plan_training

    return None if _scenario.training.method == "none" else plan_training(_scenario)


@st.cache_data(show_spinner=False, max_entries=64)
def replica_capacity(digest: str, _scenario: Scenario):
    """The highest rate one replica sustains within the SLO (a bisection of simulations);
    raises a `slo` LifecostError when even a trickle of traffic misses the SLO."""
    from simulator.cost import capacity_from_simulation

    return capacity_from_simulation(_scenario)


@st.cache_data(show_spinner=False, max_entries=64)
def lifetime(digest: str, _scenario: Scenario):
    """Month-by-month lifetime cost — the same calls as `lifecost cost SCENARIO.yaml --json`."""
    from simulator.cost import lifetime_cost

    return lifetime_cost(_scenario, replica_capacity(digest, _scenario))


@st.cache_data(show_spinner=False, max_entries=32)
def capacity_answer(digest: str, _scenario: Scenario, peak_qps: float, search_spec: str = ""):
    """The capacity search (`lifecost capacity SCENARIO.yaml --peak-qps X --search SPEC --json`):
    the scenario's own configuration, or the cheapest over the dimensions named in `search_spec`."""
    from simulator.capacity import parse_search, search

    return search(_scenario, peak_qps, parse_search(search_spec, _scenario))


@st.cache_data(show_spinner=False, max_entries=32)
def headroom(digest: str, _scenario: Scenario, replicas: int, peak_qps: float):
    """SLO attainment and latency percentiles vs fleet rate, a quarter to 1.5× the peak."""
    from simulator.capacity import headroom_curve, headroom_rates

    return headroom_curve(_scenario, replicas, headroom_rates(peak_qps))


@st.cache_data(show_spinner=False, max_entries=32)
def replicas_at(digest: str, _scenario: Scenario, peak_qps: float, max_rate_qps: float):
    """Fewest replicas at one peak rate: `simulator.capacity.replicas_needed`'s split-stream answer
    from the per-replica capacity the search found (no fleet verification: that is the search's)."""
    from simulator.capacity import replicas_needed

    return replicas_needed(_scenario, peak_qps, verify=False, max_rate=max_rate_qps).replicas


@st.cache_data(show_spinner=False, max_entries=16)
def report_files(digest: str, _scenario: Scenario, peak_qps: float, search_spec: str = "") -> tuple[str, str]:
    """The capacity report (`lifecost report -o report.html|md`) as (HTML, Markdown) text."""
    from planner_ui.report import build_report, to_html, to_markdown

    rep = build_report(_scenario, peak_qps=peak_qps, search_spec=search_spec)
    return to_html(rep), to_markdown(rep)
