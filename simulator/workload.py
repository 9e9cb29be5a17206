"""Workload generation: a `WorkloadSpec` and a seed → `Requests`, a struct of numpy arrays.

Why a struct of arrays: the engine keeps per-sequence state in numpy and a day of traffic is
millions of requests, so nothing here builds a Python object per request. Generation is fully
vectorised (1M requests in a fraction of a second: `benchmarks/workload_speed.py`).

Reproducibility (the BLIS rule): every subsystem draws from its own RNG stream, spawned from one
`numpy.random.SeedSequence(seed)` — arrivals, class mix, lengths (one stream per class and per
prompt/output) and prefixes. Changing the class weights therefore does not move the arrival
times, and changing the arrival rate does not reshuffle the lengths. Streams are consumed in
order, so the first k requests of an n-request workload are the first k of any longer one
(for poisson/gamma/diurnal arrivals and for per-class lengths).

Arrival processes (`ArrivalSpec.kind`):
- poisson: exponential gaps with mean 1/rate.
- gamma: Gamma gaps with shape 1/cv² and scale cv²/rate, so the mean gap stays 1/rate and
  the gaps' coefficient of variation is cv (cv = 1 is Poisson; cv > 1 bursty, cv < 1 smoother).
  This is the renewal model of bursty LLM traffic used by e.g. AlpaServe (Li et al., OSDI 2023).
- diurnal: a non-homogeneous Poisson process whose rate in hour h (of a day starting at t = 0)
  is rate_qps · shape[h] / mean(shape), sampled by thinning (Lewis & Shedler 1979): candidates
  at the peak rate, each kept with probability rate(t) / peak rate.
- trace: times (and lengths) from a file, see `simulator/traces.py`.

Lengths (`LengthDist.kind`), all in whole tokens ≥ 1:
- fixed `value`; uniform integers in [low, high] inclusive;
- lognormal with arithmetic mean `mean` and log-space std `sigma`, i.e. μ = ln(mean) − σ²/2
  because E[X] = exp(μ + σ²/2), rounded and clipped to [low, high] (clipping moves the mean
  when the bounds bite);
- empirical: resampled with replacement from column `column` of CSV/JSONL `path` (e.g. the
  arXiv summarization lengths), clipped to [low, high]. Prompt and output columns are resampled
  independently, so their correlation within one request is not kept.

Shared prefixes (`PrefixSpec`): with probability share_prob a request starts with one of its
class's num_prefixes system prompts, chosen by Zipf popularity p(k) ∝ k^(−zipf_s), k = 1..N.
The class's prompt distribution is the *whole* prompt (as traces report it); the shared part is
its first min(prefix_tok, prompt_tok) tokens. Prefix ids are unique across classes.

Reasoning (`ReasoningSpec`, per class): a fraction `on_frac` of the class's requests think
before answering ("detailed thinking on"). A thinking request draws `thinking_tok` from the
class's thinking-length distribution, capped at `thinking_budget_tok` when set (budget forcing:
the engine stops the thinking at the budget and forces the answer, Muennighoff et al. 2025,
"s1: Simple test-time scaling", §2.2); its output is thinking + answer tokens, the answer drawn
from `output_tok` as for any request. `Requests.thinking_tok` and `Requests.reasoning_on` keep
the split so results can be reported separately for reasoning on and off. The draws use their
own stream (a fifth child of the seed), so reasoning off leaves every other draw unchanged.

Context limit: vLLM refuses a prompt longer than `max_model_len` (its input processor raises)
and stops generation at the model length (finish reason "length"). So, when
`max_model_len_tok` is given, a prompt that leaves no room for one output token is an error
naming the class (or, with `clip_prompts=True`, is cut to max_model_len − 1 tokens), and
outputs are capped at max_model_len − prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.errors import LifecostError
from simulator.scenario import LengthDist, PrefixSpec, WorkloadSpec

_DIURNAL_CHUNK = 1 << 16  # thinning candidates per draw; fixed so results do not depend on n
_SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, eq=False)
class Requests:
    """Requests sorted by arrival, one entry per request in equal-length read-only arrays.

    `class_id` indexes `class_names`; `prefix_id` is −1 for a request without a shared prefix
    and `prefix_tok` (≤ prompt_tok) is how many leading prompt tokens it shares.
    `thinking_tok` (≤ output_tok) is how many of the output tokens are thinking (0 when
    `reasoning_on` is False); both default to "no reasoning" when not given.
    """

    arrival_s: np.ndarray
    prompt_tok: np.ndarray
    output_tok: np.ndarray
    class_id: np.ndarray
    priority: np.ndarray
    prefix_id: np.ndarray
    prefix_tok: np.ndarray
    class_names: tuple[str, ...] = field(default=("default",))
    thinking_tok: np.ndarray | None = None
    reasoning_on: np.ndarray | None = None

    _DTYPES = {
        "arrival_s": np.float64,
        "prompt_tok": np.int64,
        "output_tok": np.int64,
        "class_id": np.int16,
        "priority": np.int16,
        "prefix_id": np.int64,
        "prefix_tok": np.int64,
        "thinking_tok": np.int64,
        "reasoning_on": np.bool_,
    }

    def __post_init__(self) -> None:
        n = None
        for name, dtype in self._DTYPES.items():
            value = getattr(self, name)
            if value is None:  # optional columns (reasoning) default to zeros
                value = np.zeros(n or 0, dtype=dtype)
            arr = np.ascontiguousarray(value, dtype=dtype)
            if arr.ndim != 1:
                raise ValueError(f"Requests.{name} must be 1-D, got shape {arr.shape}")
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise ValueError(f"Requests.{name} has {arr.shape[0]} entries, expected {n}")
            if arr.base is not None or arr is value:
                arr = arr.copy()  # own the memory so freezing it cannot affect the caller
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if np.any(self.thinking_tok > self.output_tok) or np.any(self.thinking_tok < 0):
            raise ValueError("Requests.thinking_tok must lie in [0, output_tok]")

    def subset(self, mask: np.ndarray) -> "Requests":
        """The requests selected by a boolean mask or index array (arrival order kept)."""
        return Requests(**{name: getattr(self, name)[mask] for name in self._DTYPES}, class_names=self.class_names)

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    def to_frame(self) -> pd.DataFrame:
        """One row per request (index `request_id`), with the class name as a categorical
        (the reasoning columns only when some request reasons)."""
        names = [k for k in self._DTYPES if k not in ("thinking_tok", "reasoning_on") or self.reasoning_on.any()]
        frame = pd.DataFrame({name: getattr(self, name) for name in names})
        frame.insert(3, "class", pd.Categorical.from_codes(self.class_id, categories=list(self.class_names)))
        frame.index.name = "request_id"
        return frame


def mean_rate_qps(arrival_s: np.ndarray) -> float:
    """Mean arrival rate of sorted times: (n − 1) gaps over the span first → last arrival.

    Counting gaps rather than arrivals makes the estimate independent of where time zero is,
    so a trace that starts at t = 1000 s has the same rate as the same trace shifted to 0.
    """
    n = len(arrival_s)
    span = float(arrival_s[-1] - arrival_s[0]) if n else 0.0
    return (n - 1) / span if n > 1 and span > 0 else math.nan


def poisson_arrivals_s(rng: np.random.Generator, n: int, rate_qps: float) -> np.ndarray:
    """n arrival times of a Poisson process at `rate_qps`, starting after one gap from t = 0."""
    return np.cumsum(rng.exponential(1.0 / rate_qps, size=n))


def gamma_arrivals_s(rng: np.random.Generator, n: int, rate_qps: float, cv: float) -> np.ndarray:
    """n arrival times of a Gamma renewal process: mean gap 1/rate, gap CV `cv`."""
    shape = 1.0 / (cv * cv)
    return np.cumsum(rng.gamma(shape, (cv * cv) / rate_qps, size=n))


def diurnal_arrivals_s(rng: np.random.Generator, n: int, rate_qps: float, shape: list[float]) -> np.ndarray:
    """n arrival times of a Poisson process whose hourly rate follows `shape` (thinning)."""
    mult = np.asarray(shape, dtype=np.float64)
    mult = mult / mult.mean()
    keep_prob = mult / mult.max()
    peak_qps = rate_qps * mult.max()
    kept: list[np.ndarray] = []
    have, t0 = 0, 0.0
    while have < n:
        t = t0 + np.cumsum(rng.exponential(1.0 / peak_qps, size=_DIURNAL_CHUNK))
        u = rng.random(_DIURNAL_CHUNK)
        hour = (t // _SECONDS_PER_HOUR).astype(np.int64) % 24
        chosen = t[u < keep_prob[hour]]
        kept.append(chosen)
        have += chosen.shape[0]
        t0 = float(t[-1])
    return np.concatenate(kept)[:n]


def sample_lengths(dist: LengthDist, n: int, rng: np.random.Generator, *, what: str) -> np.ndarray:
    """n token lengths (int64, ≥ 1) from `dist`; `what` names the field in error messages."""
    high = dist.high if dist.high is not None else np.iinfo(np.int64).max
    match dist.kind:
        case "fixed":
            return np.full(n, dist.value, dtype=np.int64)
        case "uniform":
            return rng.integers(dist.low, dist.high, size=n, endpoint=True, dtype=np.int64)
        case "lognormal":
            mu = math.log(dist.mean) - 0.5 * dist.sigma**2
            draws = rng.lognormal(mu, dist.sigma, size=n)
            return np.clip(np.rint(draws), dist.low, min(high, 2**62)).astype(np.int64)
        case "empirical":
            from simulator import traces  # traces.py imports this module; import it lazily

            values = traces.read_length_column(dist.path, dist.column, what=what)
            return np.clip(values[rng.integers(0, values.shape[0], size=n)], dist.low, high)
    raise LifecostError(f"unknown length distribution {dist.kind!r}", field=what)


def zipf_choice(rng: np.random.Generator, n: int, num_items: int, s: float) -> np.ndarray:
    """n draws from {0..num_items−1} with P(k) ∝ (k+1)^(−s) (s = 0 is uniform)."""
    weights = np.arange(1, num_items + 1, dtype=np.float64) ** (-s)
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), num_items - 1)


def _assign_prefixes(
    prefix: PrefixSpec, prompt_tok: np.ndarray, rng: np.random.Generator, id_offset: int
) -> tuple[np.ndarray, np.ndarray]:
    """(prefix_id, prefix_tok) for one class's requests under its prefix model."""
    n = prompt_tok.shape[0]
    ids = np.full(n, -1, dtype=np.int64)
    toks = np.zeros(n, dtype=np.int64)
    if prefix.share_prob <= 0 or prefix.prefix_tok <= 0 or n == 0:
        return ids, toks
    uses = rng.random(n) < prefix.share_prob
    which = zipf_choice(rng, n, prefix.num_prefixes, prefix.zipf_s)
    ids[uses] = id_offset + which[uses]
    toks[uses] = np.minimum(prefix.prefix_tok, prompt_tok[uses])
    return ids, toks


def _check_positive(value: float | int | None, name: str) -> None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise LifecostError(f"must be a positive number, got {value!r}", field=name)


def _apply_context_limit(
    prompt_tok: np.ndarray,
    output_tok: np.ndarray,
    class_id: np.ndarray,
    class_names: tuple[str, ...],
    max_model_len_tok: int,
    clip_prompts: bool,
    source: str,
) -> None:
    """Refuse (or clip) prompts with no room for an output token; cap outputs at the limit.

    Mutates the arrays in place (they are fresh, not yet frozen into `Requests`).
    """
    too_long = prompt_tok >= max_model_len_tok
    if too_long.any():
        if not clip_prompts:
            first = int(np.argmax(too_long))
            cid = int(class_id[first])
            raise LifecostError(
                f"{int(too_long.sum())} of {len(prompt_tok)} prompts of class {class_names[cid]!r} "
                f"({source}) leave no room for output within engine.max_model_len_tok={max_model_len_tok} "
                f"(longest {int(prompt_tok[too_long].max())} tokens; vLLM rejects such requests)",
                field=f"workload.classes[{cid}].prompt_tok" if source == "generated" else "workload.arrival.trace_path",
                fix=f"lower the prompt lengths below {max_model_len_tok} or raise engine.max_model_len_tok",
            )
        np.minimum(prompt_tok, max_model_len_tok - 1, out=prompt_tok)
    np.minimum(output_tok, max_model_len_tok - prompt_tok, out=output_tok)


def generate_requests(
    workload: WorkloadSpec,
    *,
    seed: int,
    num_requests: int | None = None,
    rate_qps: float | None = None,
    max_model_len_tok: int | None = None,
    clip_prompts: bool = False,
) -> Requests:
    """Draw the requests of `workload` (see the module docstring for every model).

    `num_requests` and `rate_qps` override the spec's (the CLI's --requests / --qps). For a
    trace, `num_requests` replays at most the first N rows and a rate (argument or spec) time-
    scales the trace to that mean rate; set `rate_qps: null` in the scenario to keep the trace's
    own timestamps. A trace with a `class` column must use the workload's class names; without
    one, requests are assigned to classes by weight (lengths stay the trace's).
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LifecostError(f"must be a whole number ≥ 0, got {seed!r}", field="seed")
    n = workload.num_requests if num_requests is None else num_requests
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise LifecostError(f"must be a whole number ≥ 1, got {n!r}", field="workload.num_requests")
    _check_positive(rate_qps, "rate_qps")
    rate = rate_qps if rate_qps is not None else workload.arrival.rate_qps
    classes = workload.classes
    class_names = tuple(c.name for c in classes)
    if len(set(class_names)) != len(class_names):
        raise LifecostError("class names must be unique", field="workload.classes", fix="rename the duplicates")

    # spawn(5)[:4] are spawn(4)'s children, so the reasoning stream leaves the others unchanged
    arrival_ss, class_ss, length_ss, prefix_ss, reasoning_ss = np.random.SeedSequence(int(seed)).spawn(5)
    arrival_rng = np.random.default_rng(arrival_ss)
    weights = np.array([c.weight for c in classes], dtype=np.float64)

    trace_cols: frozenset[str] = frozenset()
    if workload.arrival.kind == "trace":
        from simulator import traces  # traces.py imports this module; import it lazily

        trace, trace_cols = traces.read_trace_with_columns(
            workload.arrival.trace_path, rate_qps=rate, max_rows=n, seed=int(arrival_ss.generate_state(1)[0])
        )
        n = len(trace)
        arrival_s = np.array(trace.arrival_s)
        prompt_tok = np.array(trace.prompt_tok)
        output_tok = np.array(trace.output_tok)
        if "class" in trace_cols:
            index = {name: i for i, name in enumerate(class_names)}
            unknown = [c for c in trace.class_names if c not in index]
            if unknown:
                raise LifecostError(
                    f"trace classes {unknown} are not workload classes {list(class_names)}",
                    field="workload.classes",
                    fix="name a workload class after each class in the trace",
                )
            remap = np.array([index[c] for c in trace.class_names], dtype=np.int16)
            class_id = remap[trace.class_id]
        else:
            class_id = _mix_classes(np.random.default_rng(class_ss), n, weights)
    else:
        match workload.arrival.kind:
            case "poisson":
                arrival_s = poisson_arrivals_s(arrival_rng, n, rate)
            case "gamma":
                arrival_s = gamma_arrivals_s(arrival_rng, n, rate, workload.arrival.cv)
            case "diurnal":
                shape = workload.arrival.diurnal_shape or [1.0] * 24
                arrival_s = diurnal_arrivals_s(arrival_rng, n, rate, shape)
        class_id = _mix_classes(np.random.default_rng(class_ss), n, weights)
        prompt_tok = np.empty(n, dtype=np.int64)
        output_tok = np.empty(n, dtype=np.int64)

    priority = np.array([c.priority for c in classes], dtype=np.int16)[class_id]
    prefix_id = np.full(n, -1, dtype=np.int64)
    prefix_tok = np.zeros(n, dtype=np.int64)
    id_offset = 0
    class_length_ss = length_ss.spawn(len(classes))
    class_prefix_ss = prefix_ss.spawn(len(classes))
    for k, cls in enumerate(classes):
        members = np.flatnonzero(class_id == k)
        if workload.arrival.kind != "trace":
            prompt_rng, output_rng = (np.random.default_rng(s) for s in class_length_ss[k].spawn(2))
            where = f"workload.classes[{k}]"
            prompt_tok[members] = sample_lengths(cls.prompt_tok, members.shape[0], prompt_rng, what=f"{where}.prompt_tok")
            output_tok[members] = sample_lengths(cls.output_tok, members.shape[0], output_rng, what=f"{where}.output_tok")
        ids, toks = _assign_prefixes(cls.prefix, prompt_tok[members], np.random.default_rng(class_prefix_ss[k]), id_offset)
        prefix_id[members], prefix_tok[members] = ids, toks
        id_offset += cls.prefix.num_prefixes

    if workload.arrival.kind == "trace":
        if "priority" in trace_cols:
            priority = np.array(trace.priority)
        if "prefix_id" in trace_cols:
            # The trace says who shares; its `prefix_tokens` column (or else the class's
            # prefix length) says how much.
            prefix_id = np.array(trace.prefix_id)
            if "prefix_tokens" in trace_cols:
                prefix_tok = np.array(trace.prefix_tok)
            else:
                class_prefix_tok = np.array([c.prefix.prefix_tok for c in classes], dtype=np.int64)
                prefix_tok = np.where(prefix_id >= 0, np.minimum(class_prefix_tok[class_id], prompt_tok), 0)

    thinking_tok, reasoning_on = _add_reasoning(classes, class_id, output_tok, reasoning_ss)

    if max_model_len_tok is not None:
        source = "generated" if workload.arrival.kind != "trace" else f"trace {workload.arrival.trace_path}"
        _apply_context_limit(prompt_tok, output_tok, class_id, class_names, int(max_model_len_tok), clip_prompts, source)
        np.minimum(prefix_tok, prompt_tok, out=prefix_tok)
        np.minimum(thinking_tok, output_tok, out=thinking_tok)  # thinking comes first: a cut output loses the answer

    return Requests(
        arrival_s=arrival_s,
        prompt_tok=prompt_tok,
        output_tok=output_tok,
        class_id=class_id,
        priority=priority,
        prefix_id=prefix_id,
        prefix_tok=prefix_tok,
        class_names=class_names,
        thinking_tok=thinking_tok,
        reasoning_on=reasoning_on,
    )


def _add_reasoning(classes, class_id: np.ndarray, output_tok: np.ndarray, reasoning_ss: np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
    """Per request: thinking tokens (added to `output_tok` in place) and whether reasoning is on.

    Per class, each request thinks with probability `on_frac`; its thinking length is drawn from
    `thinking_tok` and capped at `thinking_budget_tok` (budget forcing). One stream per class,
    spawned from `reasoning_ss`, consumed in request order (a longer workload extends a shorter one).
    """
    n = class_id.shape[0]
    thinking = np.zeros(n, dtype=np.int64)
    on = np.zeros(n, dtype=np.bool_)
    for k, (cls, ss) in enumerate(zip(classes, reasoning_ss.spawn(len(classes)))):
        spec = cls.reasoning
        if spec.on_frac <= 0:
            continue
        members = np.flatnonzero(class_id == k)
        on_rng, len_rng = (np.random.default_rng(s) for s in ss.spawn(2))
        thinks = on_rng.random(members.shape[0]) < spec.on_frac
        lengths = sample_lengths(spec.thinking_tok, members.shape[0], len_rng, what=f"workload.classes[{k}].reasoning.thinking_tok")
        if spec.thinking_budget_tok is not None:
            np.minimum(lengths, spec.thinking_budget_tok, out=lengths)
        thinking[members] = np.where(thinks, lengths, 0)
        on[members] = thinks
    output_tok += thinking
    return thinking, on


def _mix_classes(rng: np.random.Generator, n: int, weights: np.ndarray) -> np.ndarray:
    """Class of each request, independently with probability ∝ weight."""
    if weights.shape[0] == 1:
        return np.zeros(n, dtype=np.int16)
    cdf = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), weights.shape[0] - 1).astype(np.int16)


def multi_turn_sessions(n_sessions: int, turns: int = 5, start_tok: int = 8000, grow_tok: int = 4000, out_tok: int = 150,
                        think_s: float = 20.0, seed: int = 0) -> Requests:
    """Multi-turn chats, the workload where KV offload pays: each of `n_sessions` sessions starts
    at a uniform time in [0, n_sessions/4) s and sends `turns` requests `think_s` (exponential)
    apart; each turn re-sends the session's whole history (`start_tok`, growing by `grow_tok` per
    turn) plus a 300-token new message, and the history is the shared prefix (prefix id = session)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sessions):
        t, hist = rng.uniform(0, n_sessions * 0.25), start_tok
        for _ in range(turns):
            rows.append((t, hist + 300, out_tok, s, hist))
            t += rng.exponential(think_s)
            hist += grow_tok
    a = np.array(sorted(rows))
    n = len(a)
    return Requests(arrival_s=a[:, 0], prompt_tok=a[:, 1].astype(np.int64), output_tok=a[:, 2].astype(np.int64), class_id=np.zeros(n, np.int16),
                    priority=np.zeros(n, np.int64), prefix_id=a[:, 3].astype(np.int64), prefix_tok=a[:, 4].astype(np.int64), class_names=("chat",))
