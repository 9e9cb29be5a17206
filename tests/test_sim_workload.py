"""Workload generation: reproducible seeded streams, arrival statistics, lengths, classes, prefixes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.errors import LifecostError
from simulator.scenario import ArrivalSpec, LengthDist, PrefixSpec, RequestClass, WorkloadSpec
from simulator.workload import Requests, generate_requests, mean_rate_qps, zipf_choice

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
ARXIV = TRACES / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"

ARRAYS = ("arrival_s", "prompt_tok", "output_tok", "class_id", "priority", "prefix_id", "prefix_tok")


def workload(kind="poisson", rate=10.0, classes=None, **arrival) -> WorkloadSpec:
    return WorkloadSpec(
        arrival=ArrivalSpec(kind=kind, rate_qps=rate, **arrival),
        classes=classes or [RequestClass()],
        num_requests=1000,
    )


def same(a: Requests, b: Requests) -> bool:
    return a.class_names == b.class_names and all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ARRAYS)


def gap_cv(arrival_s: np.ndarray) -> float:
    gaps = np.diff(arrival_s)
    return float(gaps.std() / gaps.mean())


TWO_CLASSES = [
    RequestClass(name="chat", weight=3.0, priority=1),
    RequestClass(
        name="rag",
        weight=1.0,
        prompt_tok=LengthDist(kind="uniform", low=1000, high=3000),
        prefix=PrefixSpec(num_prefixes=5, prefix_tok=800, share_prob=0.5),
    ),
]


# --- reproducibility ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["poisson", "gamma", "diurnal"])
def test_the_same_seed_gives_identical_requests_and_another_seed_different_ones(kind):
    w = workload(kind, cv=2.0, classes=TWO_CLASSES)
    assert same(generate_requests(w, seed=7), generate_requests(w, seed=7))
    a, b = generate_requests(w, seed=7), generate_requests(w, seed=8)
    assert not np.array_equal(a.arrival_s, b.arrival_s)
    assert not np.array_equal(a.prompt_tok, b.prompt_tok)
    assert not np.array_equal(a.class_id, b.class_id)


@pytest.mark.parametrize("kind", ["poisson", "gamma", "diurnal"])
def test_a_shorter_workload_is_the_prefix_of_a_longer_one(kind):
    w = workload(kind, cv=2.0)
    long, short = generate_requests(w, seed=3, num_requests=5000), generate_requests(w, seed=3, num_requests=700)
    for k in ARRAYS:
        assert np.array_equal(getattr(long, k)[:700], getattr(short, k)), k


def test_changing_class_weights_does_not_move_arrivals_and_changing_rate_does_not_move_lengths():
    base = workload("gamma", cv=2.0, classes=TWO_CLASSES)
    reweighted = base.model_copy(
        update={"classes": [TWO_CLASSES[0].model_copy(update={"weight": 1.0}), TWO_CLASSES[1]]}
    )
    a, b = generate_requests(base, seed=5), generate_requests(reweighted, seed=5)
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert not np.array_equal(a.class_id, b.class_id)
    faster = generate_requests(base, seed=5, rate_qps=50.0)
    assert np.array_equal(a.prompt_tok, faster.prompt_tok) and np.array_equal(a.class_id, faster.class_id)
    assert np.allclose(faster.arrival_s * 50.0, a.arrival_s * 10.0)  # same gaps, rescaled


# --- arrival statistics ------------------------------------------------------------------------


def test_poisson_arrivals_have_the_requested_rate_and_unit_cv():
    r = generate_requests(workload("poisson", rate=25.0), seed=11, num_requests=200_000)
    assert mean_rate_qps(r.arrival_s) == pytest.approx(25.0, rel=0.02)
    assert gap_cv(r.arrival_s) == pytest.approx(1.0, rel=0.02)
    assert r.arrival_s[0] > 0 and np.all(np.diff(r.arrival_s) >= 0)


@pytest.mark.parametrize("cv", [0.5, 2.0, 3.0])
def test_gamma_arrivals_keep_the_rate_and_have_the_requested_cv(cv):
    r = generate_requests(workload("gamma", rate=8.0, cv=cv), seed=12, num_requests=200_000)
    assert mean_rate_qps(r.arrival_s) == pytest.approx(8.0, rel=0.03)
    assert gap_cv(r.arrival_s) == pytest.approx(cv, rel=0.05)


def test_bursty_gamma_traffic_is_clumpier_than_poisson_at_the_same_rate():
    counts = {}
    for cv in (1.0, 4.0):
        r = generate_requests(workload("gamma", rate=10.0, cv=cv), seed=2, num_requests=100_000)
        per_second = np.bincount(r.arrival_s.astype(np.int64))
        counts[cv] = per_second.var() / per_second.mean()  # index of dispersion
    assert counts[1.0] == pytest.approx(1.0, abs=0.1)
    assert counts[4.0] > 5 * counts[1.0]


def test_diurnal_arrivals_follow_the_hourly_shape_and_keep_the_mean_rate():
    shape = [0.2, 0.1, 0.1, 0.1, 0.2, 0.4, 0.8, 1.2, 1.6, 1.8, 1.9, 2.0,
             2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4, 1.2, 1.0, 0.8, 0.5, 0.3]  # fmt: skip
    r = generate_requests(workload("diurnal", rate=2.0, diurnal_shape=shape), seed=4, num_requests=4 * 24 * 3600 * 2)
    hours = (r.arrival_s // 3600).astype(np.int64)
    whole_days = int(r.arrival_s[-1] // 86400)
    assert whole_days >= 3
    in_days = hours < whole_days * 24
    hourly = np.bincount(hours[in_days] % 24, minlength=24) / (whole_days * 3600.0)
    assert np.corrcoef(hourly, shape)[0, 1] > 0.99
    expected = 2.0 * np.array(shape) / np.mean(shape)
    assert np.allclose(hourly, expected, rtol=0.1)
    assert mean_rate_qps(r.arrival_s) == pytest.approx(2.0, rel=0.03)


def test_a_diurnal_hour_with_zero_multiplier_gets_no_requests():
    shape = [0.0] * 6 + [1.0] * 18
    r = generate_requests(workload("diurnal", rate=1.0, diurnal_shape=shape), seed=1, num_requests=50_000)
    assert not np.any((r.arrival_s // 3600).astype(np.int64) % 24 < 6)


# --- lengths -----------------------------------------------------------------------------------


def one_class(prompt: LengthDist, output: LengthDist | None = None) -> WorkloadSpec:
    return workload(classes=[RequestClass(prompt_tok=prompt, output_tok=output or LengthDist(kind="fixed", value=7))])


def test_fixed_and_uniform_lengths():
    r = generate_requests(one_class(LengthDist(kind="uniform", low=10, high=20)), seed=0, num_requests=100_000)
    assert np.all(r.output_tok == 7)
    assert r.prompt_tok.min() == 10 and r.prompt_tok.max() == 20
    assert r.prompt_tok.mean() == pytest.approx(15.0, rel=0.01)
    assert np.bincount(r.prompt_tok)[10:21].min() > 0.8 * 100_000 / 11


def test_lognormal_lengths_have_the_requested_mean_and_log_std():
    dist = LengthDist(kind="lognormal", mean=600, sigma=0.8, low=1, high=10**7)
    r = generate_requests(one_class(dist), seed=1, num_requests=300_000)
    assert r.prompt_tok.mean() == pytest.approx(600, rel=0.02)
    assert np.log(r.prompt_tok).std() == pytest.approx(0.8, rel=0.03)


def test_lognormal_lengths_are_clipped_to_their_bounds():
    dist = LengthDist(kind="lognormal", mean=600, sigma=1.5, low=100, high=1000)
    r = generate_requests(one_class(dist), seed=1, num_requests=50_000)
    assert r.prompt_tok.min() == 100 and r.prompt_tok.max() == 1000


@pytest.mark.skipif(not ARXIV.is_file(), reason=f"shared arXiv trace not found at {ARXIV}")
def test_empirical_lengths_resample_the_arxiv_columns():
    import pandas as pd

    col = pd.read_csv(ARXIV)
    prompt = LengthDist(kind="empirical", path=str(ARXIV), column="num_prefill_tokens")
    output = LengthDist(kind="empirical", path=str(ARXIV), column="num_decode_tokens")
    r = generate_requests(one_class(prompt, output), seed=2, num_requests=200_000)
    assert set(np.unique(r.prompt_tok)) <= set(col["num_prefill_tokens"])
    assert r.prompt_tok.mean() == pytest.approx(col["num_prefill_tokens"].mean(), rel=0.01)
    assert r.output_tok.mean() == pytest.approx(col["num_decode_tokens"].mean(), rel=0.02)


def test_empirical_lengths_from_a_small_file_and_their_bad_column(tmp_path):
    f = tmp_path / "lens.csv"
    f.write_text("n\n5\n10\n15\n")
    r = generate_requests(one_class(LengthDist(kind="empirical", path=str(f), column="n", high=12)), seed=0)
    assert set(np.unique(r.prompt_tok)) == {5, 10, 12}
    with pytest.raises(LifecostError, match=r"workload.classes\[0\].prompt_tok.column.*no column 'tokens'.*\['n'\]"):
        generate_requests(one_class(LengthDist(kind="empirical", path=str(f), column="tokens")), seed=0)


# --- classes and prefixes ----------------------------------------------------------------------


def test_classes_are_mixed_by_weight_and_carry_their_priority_and_lengths():
    r = generate_requests(workload(classes=TWO_CLASSES), seed=9, num_requests=100_000)
    assert r.class_names == ("chat", "rag")
    frac_chat = np.mean(r.class_id == 0)
    assert frac_chat == pytest.approx(0.75, abs=0.01)
    assert np.all(r.priority[r.class_id == 0] == 1) and np.all(r.priority[r.class_id == 1] == 0)
    rag = r.prompt_tok[r.class_id == 1]
    assert rag.min() >= 1000 and rag.max() <= 3000
    frame = r.to_frame()
    assert list(frame["class"].cat.categories) == ["chat", "rag"]
    assert (frame["class"] == "rag").sum() == (r.class_id == 1).sum()


def test_prefixes_follow_share_probability_and_zipf_popularity():
    cls = RequestClass(
        prompt_tok=LengthDist(kind="uniform", low=200, high=2000),
        prefix=PrefixSpec(num_prefixes=10, prefix_tok=500, share_prob=0.6, zipf_s=1.0),
    )
    r = generate_requests(workload(classes=[cls]), seed=3, num_requests=200_000)
    uses = r.prefix_id >= 0
    assert uses.mean() == pytest.approx(0.6, abs=0.01)
    counts = np.bincount(r.prefix_id[uses], minlength=10)
    expected = (1.0 / np.arange(1, 11)) / np.sum(1.0 / np.arange(1, 11))
    assert np.allclose(counts / counts.sum(), expected, atol=0.005)
    assert np.array_equal(r.prefix_tok[uses], np.minimum(500, r.prompt_tok[uses]))
    assert np.all(r.prefix_tok[~uses] == 0)


def test_prefix_ids_are_unique_across_classes():
    r = generate_requests(
        workload(classes=[
            RequestClass(name="a", prefix=PrefixSpec(num_prefixes=3, prefix_tok=50, share_prob=1.0)),
            RequestClass(name="b", prefix=PrefixSpec(num_prefixes=4, prefix_tok=50, share_prob=1.0)),
        ]),
        seed=0,
        num_requests=20_000,
    )  # fmt: skip
    assert set(np.unique(r.prefix_id[r.class_id == 0])) == {0, 1, 2}
    assert set(np.unique(r.prefix_id[r.class_id == 1])) == {3, 4, 5, 6}


def test_zipf_with_zero_exponent_is_uniform():
    draws = zipf_choice(np.random.default_rng(0), 100_000, 4, 0.0)
    assert np.allclose(np.bincount(draws) / 100_000, 0.25, atol=0.01)


# --- context limit and bad input ---------------------------------------------------------------


def test_a_prompt_longer_than_max_model_len_names_the_class_and_field():
    w = workload(classes=[RequestClass(name="chat"), RequestClass(name="long", prompt_tok=LengthDist(kind="fixed", value=9000))])
    with pytest.raises(LifecostError, match=r"workload.classes\[1\].prompt_tok: .* class 'long' .*max_model_len_tok=8192"):
        generate_requests(w, seed=0, max_model_len_tok=8192)


def test_clipping_prompts_to_max_model_len_and_capping_outputs():
    w = one_class(LengthDist(kind="uniform", low=100, high=3000), LengthDist(kind="fixed", value=500))
    r = generate_requests(w, seed=0, max_model_len_tok=2048, clip_prompts=True)
    assert r.prompt_tok.max() == 2047
    assert np.all(r.prompt_tok + r.output_tok <= 2048) and r.output_tok.min() >= 1
    short = r.prompt_tok <= 2048 - 500
    assert np.all(r.output_tok[short] == 500)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, r"seed: must be a whole number ≥ 0"),
        ({"seed": 0, "num_requests": 0}, r"workload.num_requests: must be a whole number ≥ 1"),
        ({"seed": 0, "rate_qps": -2.0}, r"rate_qps: must be a positive number"),
        ({"seed": 0, "rate_qps": float("nan")}, r"rate_qps: must be a positive number"),
    ],
)
def test_bad_arguments_are_one_line_errors_naming_the_field(kwargs, message):
    with pytest.raises(LifecostError, match=message):
        generate_requests(workload(), **kwargs)


def test_duplicate_class_names_are_refused():
    with pytest.raises(LifecostError, match="workload.classes: class names must be unique"):
        generate_requests(workload(classes=[RequestClass(name="x"), RequestClass(name="x")]), seed=0)


# --- traces through the workload ---------------------------------------------------------------


def test_a_trace_workload_maps_its_classes_and_keeps_its_lengths(tmp_path):
    f = tmp_path / "t.jsonl"
    rows = [
        {"arrival_time_s": 0.5 * i, "prompt_tokens": 100 + i, "output_tokens": 10, "class": ["rag", "chat"][i % 2]}
        for i in range(10)
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    w = WorkloadSpec(arrival=ArrivalSpec(kind="trace", trace_path=str(f), rate_qps=None), classes=TWO_CLASSES)
    r = generate_requests(w, seed=0)
    assert r.class_names == ("chat", "rag")
    assert list(r.class_id) == [1, 0] * 5
    assert list(r.priority) == [0, 1] * 5
    assert list(r.prompt_tok) == list(range(100, 110))
    assert np.array_equal(r.arrival_s, 0.5 * np.arange(10))
    rag = r.class_id == 1
    assert np.all(r.prefix_tok[rag & (r.prefix_id >= 0)] == np.minimum(800, r.prompt_tok[rag & (r.prefix_id >= 0)]))
    assert len(generate_requests(w, seed=0, num_requests=4)) == 4
    assert mean_rate_qps(generate_requests(w, seed=0, rate_qps=8.0).arrival_s) == pytest.approx(8.0, rel=1e-12)

    unknown = w.model_copy(update={"classes": [RequestClass(name="chat")]})
    with pytest.raises(LifecostError, match=r"workload.classes: trace classes \['rag'\] are not workload classes \['chat'\]"):
        generate_requests(unknown, seed=0)


def test_a_trace_without_classes_is_mixed_by_weight(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n" + "".join(f"{i},{50 + i},5\n" for i in range(4000)))
    w = WorkloadSpec(arrival=ArrivalSpec(kind="trace", trace_path=str(f), rate_qps=None), classes=TWO_CLASSES, num_requests=4000)
    r = generate_requests(w, seed=1)
    assert np.mean(r.class_id == 0) == pytest.approx(0.75, abs=0.03)
    assert np.array_equal(r.prompt_tok, 50 + np.arange(4000))


def test_a_trace_prompt_beyond_max_model_len_names_the_trace():
    f = TRACES / "splitwise_conv.csv"
    if not f.is_file():
        pytest.skip(f"shared Splitwise trace not found at {f}")
    w = WorkloadSpec(arrival=ArrivalSpec(kind="trace", trace_path=str(f), rate_qps=None), num_requests=100_000)
    with pytest.raises(LifecostError, match=r"workload.arrival.trace_path: .*trace .*splitwise_conv.csv.*max_model_len_tok=8192"):
        generate_requests(w, seed=0, max_model_len_tok=8192)
    assert len(generate_requests(w, seed=0, max_model_len_tok=16384)) == 19_366


# --- invariants --------------------------------------------------------------------------------


length_dists = st.one_of(
    st.builds(lambda v: LengthDist(kind="fixed", value=v), st.integers(1, 5000)),
    st.builds(lambda lo, d: LengthDist(kind="uniform", low=lo, high=lo + d), st.integers(1, 3000), st.integers(0, 3000)),
    st.builds(
        lambda m, s, lo, d: LengthDist(kind="lognormal", mean=m, sigma=s, low=lo, high=lo + d),
        st.floats(1, 5000),
        st.floats(0, 2.5),
        st.integers(1, 100),
        st.integers(0, 8000),
    ),
)
classes = st.builds(
    lambda name, w, p, o, pr, n, pt, sp, s: RequestClass(
        name=name, weight=w, prompt_tok=p, output_tok=o, priority=pr,
        prefix=PrefixSpec(num_prefixes=n, prefix_tok=pt, share_prob=sp, zipf_s=s),
    ),
    st.text("abcdefgh", min_size=1, max_size=6),
    st.floats(0.01, 10),
    length_dists,
    length_dists,
    st.integers(-5, 5),
    st.integers(1, 50),
    st.integers(0, 4000),
    st.floats(0, 1),
    st.floats(0, 3),
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["poisson", "gamma", "diurnal"]),
    rate=st.floats(0.01, 1000),
    cv=st.floats(0.1, 10),
    cls=st.lists(classes, min_size=1, max_size=4, unique_by=lambda c: c.name),
    n=st.integers(1, 3000),
    seed=st.integers(0, 2**32),
    max_len=st.one_of(st.none(), st.integers(10_000, 20_000)),
)
def test_generated_requests_are_well_formed(kind, rate, cv, cls, n, seed, max_len):
    w = WorkloadSpec(arrival=ArrivalSpec(kind=kind, rate_qps=rate, cv=cv), classes=cls)
    r = generate_requests(w, seed=seed, num_requests=n, max_model_len_tok=max_len)
    assert len(r) == n and all(getattr(r, k).shape == (n,) for k in ARRAYS)
    assert r.arrival_s.dtype == np.float64 and r.class_id.dtype == np.int16 and r.prompt_tok.dtype == np.int64
    assert np.all(np.isfinite(r.arrival_s)) and r.arrival_s[0] >= 0 and np.all(np.diff(r.arrival_s) >= 0)
    assert r.prompt_tok.min() >= 1 and r.output_tok.min() >= 1
    assert np.all((r.prefix_tok >= 0) & (r.prefix_tok <= r.prompt_tok))
    assert np.all((r.prefix_id >= 0) | (r.prefix_tok == 0))
    assert 0 <= r.class_id.min() and r.class_id.max() < len(cls)
    for k, c in enumerate(cls):
        mine = r.class_id == k
        assert np.all(r.priority[mine] == c.priority)
        low, high = c.prompt_tok.low, c.prompt_tok.high
        if c.prompt_tok.kind == "fixed":
            low = high = c.prompt_tok.value
        assert np.all(r.prompt_tok[mine] >= low) and (high is None or np.all(r.prompt_tok[mine] <= high))
    if max_len is not None:
        assert np.all(r.prompt_tok + r.output_tok <= max_len)


def test_requests_are_frozen_and_checked():
    r = generate_requests(workload(), seed=0, num_requests=10)
    with pytest.raises(ValueError):
        r.prompt_tok[0] = 5
    with pytest.raises(ValueError, match="prompt_tok has 2 entries, expected 3"):
        Requests(np.zeros(3), np.ones(2), np.ones(3), np.zeros(3), np.zeros(3), -np.ones(3), np.zeros(3))
    source = np.arange(3, dtype=np.int64)
    Requests(np.zeros(3), source, source, np.zeros(3), np.zeros(3), -np.ones(3), np.zeros(3))
    source[0] = 9  # the caller's array stays writable: Requests copied it
    assert list(r.to_frame().columns) == ["arrival_s", "prompt_tok", "output_tok", "class", "class_id", "priority", "prefix_id", "prefix_tok"]
