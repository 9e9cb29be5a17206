"""Uploaded files: a scenario YAML, a model's config.json, a request trace.

Uploads are untrusted. Each is size-limited, parsed strictly as data by the same loader the CLI
uses (`parse_scenario` → `yaml.safe_load`; the catalog's path loader for a config; the trace
reader of `simulator.traces`), and a failure is shown as an inline `st.error` right under the
uploader with the loader's one-line `LifecostError` message. Config and trace files are stored
content-addressed (`<tmp>/lifecost-ui/<sha256[:16]>/...`, written via temp file + rename), so a
rerun or a second browser tab reuses the same path and the Scenario digest stays stable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import streamlit as st

from models.errors import LifecostError
from simulator.scenario import MAX_SCENARIO_BYTES, parse_scenario

MAX_CONFIG_BYTES = 1_000_000  # an HF config.json is a few KB
MAX_TRACE_BYTES = 20_000_000  # matches `--server.maxUploadSize 20` in cli_ui
UPLOAD_ROOT = Path(tempfile.gettempdir()) / "lifecost-ui"


def safe_name(text: str, fallback: str) -> str:
    """A file-system-safe name: letters, digits, `.`, `_`, `-` only (no path tricks)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")[:80]
    return name or fallback


def store_upload(content: bytes, filename: str, subdir: str = "") -> Path:
    """Write bytes to a content-addressed path (atomic: temp file + rename) and return it."""
    digest = hashlib.sha256(content).hexdigest()[:16]
    path = UPLOAD_ROOT / digest / safe_name(subdir, "") / safe_name(filename, "upload") if subdir \
        else UPLOAD_ROOT / digest / safe_name(filename, "upload")
    if path.is_file() and path.stat().st_size == len(content):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def short_error(e: BaseException) -> str:
    """The one-line message for the user: a LifecostError as written; anything else named briefly."""
    if isinstance(e, LifecostError):
        return str(e)
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return f"unexpected error ({type(e).__name__}: {first})" if first else f"unexpected error ({type(e).__name__})"


def short_path(path: str | None) -> str:
    if not path:
        return ""
    p = Path(path)
    return p.name if UPLOAD_ROOT in p.parents else str(path)


def model_label(name: str) -> str:
    """Catalog names as they are; an uploaded config as '<its model name> (uploaded)'."""
    p = Path(name)
    if UPLOAD_ROOT in p.parents:
        return f"{p.parent.name} (uploaded)"
    return name


def _too_big(file, limit: int, field: str) -> LifecostError | None:
    if file.size > limit:
        return LifecostError(f"{file.name} is {file.size:,} bytes; at most {limit:,} are accepted", field=field,
                             fix="upload a smaller file")
    return None


def parse_config_upload(content: bytes, filename: str) -> str:
    """Validate an uploaded config.json as a model card; return the stored path for `model.name`."""
    from models.catalog import load_model

    try:
        data = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LifecostError(f"{filename} is not JSON ({e})", field="model config", fix="upload a HF config.json") from None
    if not isinstance(data, dict):
        raise LifecostError(f"{filename} holds a JSON {type(data).__name__}, not an object", field="model config",
                            fix="upload a HF config.json (a JSON object with hidden_size, num_hidden_layers, ...)")
    stem = Path(filename).stem
    if stem.lower() == "config":  # name the card after the checkpoint the config came from
        stem = Path(str(data.get("_name_or_path") or data.get("model_type") or "custom")).name
    path = store_upload(content, "config.json", subdir=safe_name(stem, "custom"))
    load_model(str(path))  # raises LifecostError when the config does not describe a model
    return str(path)


def parse_trace_upload(content: bytes, filename: str, rate_qps: float | None = None) -> str:
    """Validate an uploaded trace with the simulator's reader; return the stored path.

    `rate_qps` is the builder's rate: a lengths-only trace needs it to draw arrivals."""
    from simulator.traces import read_trace

    suffix = Path(filename).suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise LifecostError(f"{filename} is neither .csv nor .jsonl", field="workload.arrival.trace_path",
                            fix="upload a CSV or JSONL trace")
    path = store_upload(content, "trace" + suffix)
    read_trace(str(path), rate_qps=rate_qps)  # raises LifecostError on missing columns, bad rows, non-monotonic times
    return str(path)


# The uploaders act in `on_change` callbacks: Streamlit runs those before the script reruns, so
# a successful upload can set the builder's widgets (select the uploaded model, switch arrivals to
# the trace, reseed every field from a YAML file) wherever the uploader sits on the page.


def _on_scenario() -> None:
    from planner_ui.ui_builder import reseed

    file = st.session_state.get("up.scenario")
    st.session_state["err.scenario"] = None
    if file is None:
        return
    try:
        if err := _too_big(file, MAX_SCENARIO_BYTES, "scenario"):
            raise err
        try:
            text = file.getvalue().decode("utf-8")
        except UnicodeDecodeError:
            raise LifecostError(f"{file.name} is not UTF-8 text", field="scenario", fix="upload a YAML file") from None
        reseed(parse_scenario(text, source=file.name))
    except Exception as e:  # LifecostError, or a reader bug: one line, never a traceback
        st.session_state["err.scenario"] = short_error(e)


def _on_config() -> None:
    from planner_ui.ui_builder import KEY

    file = st.session_state.get("up.config")
    st.session_state["err.config"] = None
    if file is None:
        return
    try:
        if err := _too_big(file, MAX_CONFIG_BYTES, "model config"):
            raise err
        path = parse_config_upload(file.getvalue(), file.name)
        uploaded = st.session_state.setdefault("uploaded_models", [])
        if path not in uploaded:
            uploaded.append(path)
        st.session_state[KEY + "model.name"] = path
    except Exception as e:  # LifecostError, or a reader bug: one line, never a traceback
        st.session_state["err.config"] = short_error(e)


def _on_trace() -> None:
    from planner_ui.ui_builder import KEY, base_scenario

    file = st.session_state.get("up.trace")
    st.session_state["err.trace"] = None
    if file is None:
        return
    try:
        if err := _too_big(file, MAX_TRACE_BYTES, "workload.arrival.trace_path"):
            raise err
        rate = st.session_state.get(KEY + "workload.arrival.rate_qps") or base_scenario().workload.arrival.rate_qps
        path = parse_trace_upload(file.getvalue(), file.name, rate)
        st.session_state[KEY + "workload.arrival.kind"] = "trace"
        st.session_state[KEY + "workload.arrival.trace_path"] = path
    except Exception as e:  # LifecostError, or a reader bug: one line, never a traceback
        st.session_state["err.trace"] = short_error(e)


def _show_error(key: str) -> None:
    if st.session_state.get(key):
        st.error(st.session_state[key])


def scenario_uploader() -> None:
    """'Load scenario YAML': parsed with `parse_scenario` (safe_load + pydantic); reseeds the widgets."""
    st.file_uploader("Load scenario YAML", type=["yaml", "yml"], key="up.scenario", on_change=_on_scenario)
    _show_error("err.scenario")


def config_uploader() -> None:
    """'…or upload a config.json': validated with the catalog's path loader; selects it on success."""
    st.file_uploader("…or upload a HF config.json", type=["json"], key="up.config", on_change=_on_config)
    _show_error("err.config")


def trace_uploader() -> None:
    """'Replay a trace': validated with `simulator.traces`; switches arrivals to `trace` on success."""
    st.file_uploader("Replay a trace (CSV/JSONL)", type=["csv", "jsonl"], key="up.trace", on_change=_on_trace,
                     help="columns arrival_time_s, prompt_tokens, output_tokens (or Splitwise/Vidur names)")
    _show_error("err.trace")
