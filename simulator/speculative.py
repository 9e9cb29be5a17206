"""Speculative decoding inside one replica: draft k tokens cheaply, verify k+1 with the target.

The method (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding";
Chen et al. 2023): each target step of a decoding sequence is k draft proposals followed by one
target forward over the k+1 positions; the drafted tokens are accepted left to right, each with
probability α, and the target always contributes one token of its own. Tokens per target step X
follow a truncated geometric law,

    P(X = j) = α^(j−1)·(1−α)  for j = 1…k,    P(X = k+1) = α^k,
    E[X] = (1 − α^(k+1)) / (1 − α)                                  (Leviathan et al., eq. 1)

and the wall-clock speed-up at batch 1 is E[X] / (1 + k·c) with c = draft step ÷ target step
(their §3.4, "improvement factor").

How it enters the simulator (no side path: same scheduler, same predictor, same block manager):

* Per request, seeded (its own RNG stream): draw X for every target step until its output_tok − 1
  decode tokens are covered (the first token comes from the prefill); the last step is
  truncated, so each request emits exactly output_tok tokens. `target_steps[r]` is how many
  verification steps it needs, and `tok_per_step[r]` = (output_tok − 1) / target_steps its own
  rate.
* The scheduler keeps working in tokens (one token per decoding sequence per iteration, its
  closed-form runs unchanged, KV blocks exact) and sums the decoding sequences' rates
  (`StepFeatures.spec_tok_per_step`). One scheduler iteration then stands for D / Σ rates of a
  real target step: the wrapped predictor charges a real speculative step — k draft steps plus a
  target step whose decodes are (k+1)-token chunks over their context (prefill-like causal
  attention: n·c + n(n+1)/2 pairs) — scaled by that fraction, so the batch emits tokens at
  Σ rates per real step as it would. The mean rate stands in for each sequence's own: within a
  batch every sequence advances together (the batch's token throughput is exact; a sequence with
  a luckier draw finishes a little later than it would).
* Draft cost: a draft model's own decode step from the same predictor built on the draft card
  (its prefill chunk too, as the draft must see the prompt); an EAGLE head `head_step_frac` of a
  target decode step per draft token (Li et al. 2024, "EAGLE": one decoder layer + the LM head);
  n-gram lookup (prompt lookup decoding) runs on the CPU: free.
* Memory: a draft model's weights and its KV per token come out of the target's KV budget
  (`draft_memory`); an EAGLE head holds one decoder layer's weights and KV.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from models.errors import LifecostError
from simulator.predictor import Line, StepFeatures, StepTimePredictor, piecewise_max, run_time_of, steps_within

SPEC_SEED_STREAM = 0x5BEC  # the speculative draws' own RNG stream (BLIS: one stream per subsystem)


def expected_tok_per_step(alpha: float, k: int) -> float:
    """E[X] = (1 − α^(k+1)) / (1 − α): tokens one target step emits (Leviathan et al. 2023, eq. 1)."""
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def analytic_speedup(alpha: float, k: int, draft_cost_frac: float) -> float:
    """Batch-1 improvement factor E[X] / (1 + k·c), c = draft step ÷ target step (Leviathan et al. §3.4)."""
    return expected_tok_per_step(alpha, k) / (1.0 + k * draft_cost_frac)


def draw_tok_per_step(rng: np.random.Generator, alpha: float, k: int, size: int) -> np.ndarray:
    """`size` draws of X, the truncated geometric law above: 1 + accepted drafts, capped at k+1."""
    if alpha <= 0.0:
        return np.ones(size, np.int64)
    accepted = rng.geometric(1.0 - alpha, size) - 1  # failures before the first rejection
    return np.minimum(accepted, k) + 1


def target_steps_for(output_tok: np.ndarray, alpha: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Verification steps each request needs for its output_tok − 1 decode tokens (seeded draws).

    Returns an int array; 0 for one-token outputs. The final step is truncated: the draws' sum
    is cut at exactly output_tok − 1 (`emitted_tok_per_step` gives the per-step counts)."""
    rng = np.random.default_rng([seed, SPEC_SEED_STREAM])
    out = np.zeros(len(output_tok), np.int64)
    for r, (n, a) in enumerate(zip(np.asarray(output_tok, np.int64) - 1, alpha)):
        if n <= 0:
            continue
        out[r] = int(np.searchsorted(np.cumsum(draw_tok_per_step(rng, float(a), k, int(n))), n) + 1)
    return out


def emitted_tok_per_step(n_decode_tok: int, alpha: float, k: int, rng: np.random.Generator) -> np.ndarray:
    """The per-step token counts of one request: draws, the last truncated so they sum to `n_decode_tok`."""
    x = draw_tok_per_step(rng, alpha, k, max(n_decode_tok, 1))
    c = np.cumsum(x)
    s = int(np.searchsorted(c, n_decode_tok)) + 1
    x = x[:s].copy()
    x[-1] -= int(c[s - 1]) - n_decode_tok
    return x


def check_speculative(scenario, card) -> None:
    """Refuse nonsense speculative configs with the field and the fix (pydantic checks α ∈ [0,1), k ≥ 1)."""
    sp = scenario.speculative
    if sp.method == "none":
        return
    if sp.num_draft_tok < 1:
        raise LifecostError(f"num_draft_tok {sp.num_draft_tok}", field="speculative.num_draft_tok", fix="draft at least 1 token per step")
    if sp.method == "draft":
        if not sp.draft_model:
            raise LifecostError("method: draft needs a draft model", field="speculative.draft_model", fix="name a small catalog model (e.g. Llama-3.2-1B) or use method: eagle / ngram")
        from models.catalog import load_model
        from models.params import params_total

        draft = load_model(sp.draft_model)
        if draft.vocab_size != card.vocab_size:
            raise LifecostError(
                f"draft model {draft.name} has a {draft.vocab_size}-token vocabulary, the target {card.name} {card.vocab_size}: drafts must share the target's tokenizer",
                field="speculative.draft_model",
                fix="use a draft from the target's family (e.g. Llama-3.2-1B for Llama-3.1-8B), or method: eagle / ngram",
            )
        if params_total(draft) >= params_total(card):
            raise LifecostError(
                f"draft model {draft.name} ({params_total(draft) / 1e9:.1f}B) is not smaller than the target {card.name} ({params_total(card) / 1e9:.1f}B)",
                field="speculative.draft_model",
                fix="use a draft model much smaller than the target (e.g. Llama-3.2-1B for Llama-3.1-8B)",
            )
    for c in scenario.workload.classes:
        a = sp.acceptance_rate if c.spec_acceptance_rate is None else c.spec_acceptance_rate
        if not 0.0 <= a < 1.0:
            raise LifecostError(f"acceptance rate {a}", field=f"workload.classes[{c.name}].spec_acceptance_rate", fix="use a value in [0, 1)")


def draft_memory(scenario, card) -> tuple[float, float]:
    """(weight bytes, KV bytes per token) per GPU the draft adds beside the target.

    draft: the draft model's weights (same weight format as the target) and its KV per token;
    eagle: one target decoder layer's share of weights and KV (the EAGLE head is one decoder
    layer; it reuses the target's embeddings and LM head); ngram: nothing."""
    from models.memory import kv_bytes_per_token_per_gpu, weight_bytes

    sp, m, tp = scenario.speculative, scenario.model, scenario.gpu.tensor_parallel
    if sp.method == "draft":
        from models.catalog import load_model

        d = load_model(sp.draft_model)
        return weight_bytes(d, m.quant) / tp, kv_bytes_per_token_per_gpu(d, m.kv_dtype, tp)
    if sp.method == "eagle":
        return weight_bytes(card, m.quant) / card.num_layers / tp, kv_bytes_per_token_per_gpu(card, m.kv_dtype, tp) / card.num_layers
    return 0.0, 0.0


def request_rates(scenario, requests, output_tok: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(target steps, tokens per target step) of each request; rate 1.0 for one-token outputs."""
    sp = scenario.speculative
    alphas = np.array([sp.acceptance_rate if c.spec_acceptance_rate is None else c.spec_acceptance_rate for c in scenario.workload.classes], float)
    cls = np.asarray(requests.class_id, np.int64)
    alpha = alphas[np.minimum(cls, len(alphas) - 1)] if len(alphas) else np.full(len(cls), sp.acceptance_rate)
    steps = target_steps_for(output_tok, alpha, sp.num_draft_tok, seed)
    decode = np.asarray(output_tok, np.int64) - 1
    rate = np.where(steps > 0, decode / np.maximum(steps, 1), 1.0)
    return steps, rate


@dataclass(frozen=True, slots=True)
class SpecConfig:
    method: str  # draft | eagle | ngram
    k: int
    head_step_frac: float = 0.0


class SpeculativePredictor:
    """Wraps the target's predictor (and a draft model's): one scheduler iteration of speculative decoding.

    A real step with D decoding sequences at contexts ctx_i (and any prefill chunks) costs
      target: the same features with each decode replaced by a (k+1)-token chunk after ctx_i − 1
              cached tokens — (k+1)·D tokens through the GEMMs, Σ((k+1)(ctx_i−1) + (k+1)(k+2)/2)
              attention pairs, each context's KV read once;
      draft:  k decode steps of the draft model (the first also runs the step's prefill chunks),
              or k · head_step_frac of a target decode step (EAGLE), or nothing (n-gram);
    and one scheduler iteration (one token per sequence) is D / Σ rates of it for the decode
    part; a prefill chunk's own cost is charged whole, once.
    Over a decode run the contexts grow by one per iteration: every term is linear in the
    iteration index, so the closed-form run sums of `predictor.py` still apply (each line's slope
    is read off by evaluating the wrapped predictor at two consecutive iterations; for the draft
    model, the line that is its max at the run's start).
    """

    def __init__(self, target: StepTimePredictor, cfg: SpecConfig, draft: StepTimePredictor | None = None):
        self.target, self.cfg, self.draft = target, cfg, draft
        self.name = f"{target.name}+spec-{cfg.method}"

    # the wrapped predictors' lines at one set of features
    def _target_lines(self, f: StepFeatures) -> tuple[Line, ...]:
        return self.target._lines(f)  # type: ignore[attr-defined]

    def _verify_features(self, f: StepFeatures, j: int) -> StepFeatures:
        n, d = self.cfg.k + 1, f.decode_tok
        ctx = f.decode_ctx_tok + d * j  # Σ keys incl. the new token, at iteration j of a run
        cached = ctx - d
        return replace(
            f,
            prefill_tok=f.prefill_tok + n * d,
            decode_tok=0,
            decode_ctx_tok=0,
            prefill_ctx_tok=f.prefill_ctx_tok + cached + n * d,
            prefill_attn_pairs=f.prefill_attn_pairs + n * cached + d * n * (n + 1) // 2,
        )

    def _decode_only(self, f: StepFeatures) -> StepFeatures:
        return replace(f, prefill_tok=0, prefill_ctx_tok=0, prefill_attn_pairs=0, swap_in_tok=0, swap_out_tok=0, kv_load_s=0.0, num_seqs=f.decode_tok)

    def _draft_line(self, f: StepFeatures) -> Line:
        """(a, b): draft cost of a real step at iteration j = a + b·j."""
        k, m = self.cfg.k, self.cfg.method
        if m == "ngram" or not f.decode_tok:
            return (0.0, 0.0)
        dec = self._decode_only(f)
        if m == "eagle":
            a, b = piecewise_max(self._target_lines(dec))[:2]
            frac = k * self.cfg.head_step_frac
            return (a * frac, b * frac)
        da, db = piecewise_max(self.draft._lines(dec))[:2]  # type: ignore[union-attr]
        extra = 0.0
        if f.prefill_tok:  # the first draft step also runs the prompt chunks
            extra = self.draft.step_time_s(f) - self.draft.step_time_s(dec)  # type: ignore[union-attr]
        return (k * da + extra, k * db)

    def _lines(self, f: StepFeatures) -> tuple[Line, ...]:
        d = f.decode_tok
        if not d:
            return self._target_lines(f)
        v0, v1 = self._target_lines(self._verify_features(f, 0)), self._target_lines(self._verify_features(f, 1))
        da, db = self._draft_line(f)
        frac = d / f.spec_tok_per_step if f.spec_tok_per_step > 0 else 1.0  # one iteration = frac of a real step
        if not f.prefill_tok:
            return tuple(((a0 + da) * frac, (a1 - a0 + db) * frac) for (a0, _), (a1, _) in zip(v0, v1))
        # mixed step: the prefill chunks' own time once, the decodes' share scaled
        p = self.target.step_time_s(replace(f, decode_tok=0, decode_ctx_tok=0, num_seqs=f.num_seqs - d))
        full = max(a for a, _ in v0) + da
        return ((p + max(full - p, 0.0) * frac, 0.0),)

    def step_time_s(self, f: StepFeatures) -> float:
        return max(a for a, _ in self._lines(f))

    def run_time_s(self, f: StepFeatures, num_steps: int) -> float:
        return run_time_of(piecewise_max(self._lines(f)), num_steps)

    def run_until_s(self, f: StepFeatures, max_steps: int, until_s: float) -> tuple[int, float]:
        pw = piecewise_max(self._lines(f))
        k = max_steps
        if until_s != float("inf"):
            k = min(k, steps_within(pw, until_s))
        if k == 1:
            return 1, pw[0]
        return k, run_time_of(pw, k)


def make_speculative_predictor(scenario, target: StepTimePredictor, card, gpu) -> SpeculativePredictor:
    """The wrapped predictor a Scenario's `speculative` section asks for (method != none)."""
    sp = scenario.speculative
    draft = None
    if sp.method == "draft":
        from models.catalog import load_model
        from simulator.predictor import make_predictor

        draft = make_predictor(scenario.with_changes(**{"model.name": sp.draft_model}), load_model(sp.draft_model), gpu)
    return SpeculativePredictor(target, SpecConfig(sp.method, sp.num_draft_tok, sp.head_step_frac), draft)
