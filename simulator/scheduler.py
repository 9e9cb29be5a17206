"""What a vLLM-v1-style engine decides each iteration: who runs, with how many tokens.

The model (vLLM v1, `vllm/v1/core/sched/scheduler.py`): there are no prefill and decode
phases. Every request has `num_computed_tokens` chasing its `num_tokens` = prompt + tokens
generated so far. A step gives a request `num_tokens − num_computed` new tokens (capped by the
per-step token budget `max_num_batched_tokens`); when the computed tokens catch up, the step
samples one token, so a request that has caught up needs exactly one token per step — a
"decode". The same rule covers chunked prefill (a prompt computed over several steps), prefix
hits (admission starts `num_computed` at the cached length) and recompute after preemption
(`num_computed` drops to 0 and prompt + generated tokens are computed again).

One step (`schedule()` → plain `StepPlan`; the engine charges its time, then `update(plan)`):
  1. running requests that are decoding — one token each, their KV slots first;
  2. running requests part-way through a prefill — a chunk each, in admission order;
  3. waiting requests, head first (FCFS or priority), while token budget, `max_num_seqs` and
     KV blocks last; the first one that does not fit stops admission (head-of-line, as vLLM).
When KV blocks run out for a running request, the scheduler preempts: the victim is the last
admitted (FCFS) or the lowest priority, latest arrival (priority), its blocks are freed and it
goes back to the front of the waiting queue; no new request is admitted in a step that
preempted. By recompute (vLLM v1) it later computes prompt + generated tokens again; by swap
(vLLM v0's option) its KV is copied to host memory and back instead. Decodes are served before partial prefills (Sarathi-Serve's "decode-first"
batching, which vLLM's chunked-prefill scheduler also follows) — with vLLM's rule
`max_num_batched_tokens ≥ max_num_seqs` every decode then fits in every step. That is what lets
the simulator fast-forward: a decoding request gains exactly one token per step, so its state is
a function of the step counter `T` and needs no per-step update:

    generated(T) = gen_base + T      computed(T) = prompt + generated(T) − 1

A run of pure-decode steps therefore touches no per-request state (`decode_run_limit`,
`advance_decode_run`): the next completion comes off a heap keyed by finishing step, and the
KV blocks a run needs come from a histogram of the decoding requests by the step phase (mod
block size) at which each needs its next block.

The scheduler never touches the clock or metrics; the engine owns both.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from models.errors import LifecostError
from simulator.kv_cache import KVCacheManager
from simulator.predictor import StepFeatures

WAITING, PREFILL, DECODE, DONE = 0, 1, 2, 3


@dataclass(slots=True)
class StepPlan:
    """One iteration's decision: plain data, read by the predictor and the engine."""

    chunks: list[tuple[int, int, int]]  # (request id, computed before, new tokens) for non-decoding requests
    num_decode: int  # decoding requests, one token each
    features: StepFeatures
    admitted: list[int] = field(default_factory=list)  # left the waiting queue this step
    preempted: list[int] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return self.features.prefill_tok + self.features.decode_tok


class RequestState:
    """Per-request mutable state in preallocated arrays indexed by request id.

    Shared by all replicas of a simulation (a request lives on one replica), so memory is
    O(requests), not O(requests × replicas). `*_v` are memoryviews: scalar access from Python
    is 2× faster than numpy indexing and returns plain ints.
    """

    def __init__(self, num_requests: int):
        n = num_requests
        self.phase = np.zeros(n, np.int8)
        self.computed = np.zeros(n, np.int64)  # valid for WAITING / PREFILL
        self.gen = np.zeros(n, np.int64)  # generated tokens; for DECODE: gen_base = generated − T
        self.shared_blocks = np.zeros(n, np.int64)  # leading blocks referenced in the prefix cache
        self.preemptions = np.zeros(n, np.int32)
        self.prefix_hit_tok = np.zeros(n, np.int64)
        self.phase_v = self.phase.data
        self.computed_v = self.computed.data
        self.gen_v = self.gen.data
        self.shared_v = self.shared_blocks.data
        self.preempt_v = self.preemptions.data
        self.hit_v = self.prefix_hit_tok.data


def check_engine(engine) -> None:
    """Refuse engine configs vLLM itself refuses (its `SchedulerConfig` checks), naming the field."""
    if engine.max_num_batched_tokens < engine.max_num_seqs:
        raise LifecostError(
            f"max_num_batched_tokens ({engine.max_num_batched_tokens}) is below max_num_seqs ({engine.max_num_seqs})",
            field="engine.max_num_batched_tokens",
            fix="raise it to at least max_num_seqs (vLLM refuses this too)",
        )
    if not engine.enable_chunked_prefill and engine.max_num_batched_tokens < engine.max_model_len_tok:
        raise LifecostError(
            f"without chunked prefill a {engine.max_model_len_tok}-token prompt cannot fit a {engine.max_num_batched_tokens}-token step",
            field="engine.max_num_batched_tokens",
            fix="raise it to max_model_len_tok or enable chunked prefill (vLLM refuses this too)",
        )


class Scheduler:
    """One replica's scheduler over a shared `RequestState` and its own `KVCacheManager`."""

    def __init__(self, requests, output_tok: np.ndarray, engine, kv: KVCacheManager, state: RequestState, *, tok_per_step: np.ndarray | None = None, decode_budget_tok: int = 1, offload=None):
        check_engine(engine)
        # speculative decoding: each request's tokens per target step (simulator/speculative.py);
        # the decoding set's sum goes to the predictor (`StepFeatures.spec_tok_per_step`)
        self._rate = None if tok_per_step is None else np.ascontiguousarray(tok_per_step, np.float64).data
        self.spec_rate_sum = 0.0
        # token budget a decoding sequence takes per step: 1, or k+1 when its step verifies k drafts
        # (vLLM v1 schedules the draft tokens inside max_num_batched_tokens)
        self.decode_budget_tok = decode_budget_tok
        self.offload = offload  # tiered KV offload policy (simulator/offload.py) or None
        self.kv = kv
        self.st = state
        self.bs = kv.block_size_tok
        self.max_tokens = engine.max_num_batched_tokens
        self.max_seqs = engine.max_num_seqs
        self.chunked = engine.enable_chunked_prefill
        self.swap = engine.preemption_mode == "swap"
        self.swapped: set[int] = set()  # preempted requests whose KV waits in host memory
        self._swap_in_tok = self._swap_out_tok = 0  # KV tokens copied in / out in the step being planned
        self._kv_load_s = 0.0  # seconds of lower-tier prefix loads in the step being planned
        self.priority_policy = engine.scheduling_policy == "priority"
        # read-only request fields as memoryviews (plain-int scalar access)
        self._prompt = np.ascontiguousarray(requests.prompt_tok, np.int64)
        self._output = np.ascontiguousarray(output_tok, np.int64)
        self._pid = np.ascontiguousarray(requests.prefix_id, np.int64)
        self._ptok = np.ascontiguousarray(requests.prefix_tok, np.int64)
        self._prio = np.ascontiguousarray(requests.priority, np.int64)
        self._arrival = np.ascontiguousarray(requests.arrival_s, np.float64)
        self.prompt_v, self.output_v = self._prompt.data, self._output.data
        self.pid_v, self.ptok_v = self._pid.data, self._ptok.data
        self.prio_v, self.arrival_v = self._prio.data, self._arrival.data

        self.T = 0  # steps executed so far
        self.running: dict[int, None] = {}  # admission order (dicts keep insertion order)
        self.prefilling: dict[int, None] = {}  # running and not yet caught up
        self.waiting: deque[int] = deque()
        self._wait_heap: list[tuple[int, float, int]] = []  # priority policy
        self.waiting_blocked = False  # the last schedule() could not admit the waiting head
        # decode set: requests that have caught up (one token per step)
        self.num_decode = 0
        self.decode_ctx_tok = 0  # Σ computed tokens of decoding requests, at step T
        self.block_phase = [0] * self.bs  # decoding requests needing a new block at steps ≡ i (mod bs)
        self._finish_heap: list[tuple[int, int]] = []  # (step at which it finishes, request id)
        # transient, during schedule(): who holds KV slots for this step
        self._decode_allocated = False
        self._scheduled_new: dict[int, int] = {}
        self.run_peak_blocks = 0

    # -- queue -----------------------------------------------------------------------------
    def add_request(self, rid: int) -> None:
        """A request arrived at this replica."""
        if self.priority_policy:
            heapq.heappush(self._wait_heap, (self.prio_v[rid], self.arrival_v[rid], rid))
            self.waiting_blocked = False  # it may outrank the blocked head
        else:
            self.waiting.append(rid)
            if len(self.waiting) == 1 and len(self.running) >= self.max_seqs:
                self.waiting_blocked = True

    @property
    def num_waiting(self) -> int:
        return len(self._wait_heap) if self.priority_policy else len(self.waiting)

    def idle(self) -> bool:
        return not self.running and not self.num_waiting

    def admits_new_arrivals(self) -> bool:
        """Could a request arriving now change the next step? (Else arrivals need not cut a run.)"""
        if len(self.running) >= self.max_seqs:
            return False
        return self.priority_policy or not self.waiting

    def generated_tok(self, rid: int) -> int:
        """Tokens sampled so far for a request (decoding ones store an offset from T)."""
        g = self.st.gen_v[rid]
        return g + self.T if self.st.phase_v[rid] == DECODE else g

    # -- helpers ---------------------------------------------------------------------------
    def _held_tok(self, rid: int) -> int:
        """Tokens this request holds KV slots for right now (mid-schedule included)."""
        if self.st.phase_v[rid] == DECODE:
            return self.prompt_v[rid] + self.st.gen_v[rid] + self.T - 1 + (1 if self._decode_allocated else 0)
        return self.st.computed_v[rid] + self._scheduled_new.get(rid, 0)

    def _victim(self) -> int:
        if not self.priority_policy:
            return next(reversed(self.running))
        prio, arr = self.prio_v, self.arrival_v
        return max(self.running, key=lambda r: (prio[r], arr[r]))

    def _leave_decode(self, rid: int) -> int:
        """Remove a decoding request from the decode set; returns its computed tokens."""
        st, bs = self.st, self.bs
        base = st.gen_v[rid]
        computed = self.prompt_v[rid] + base + self.T - 1
        self.block_phase[(1 - self.prompt_v[rid] - base) % bs] -= 1
        self.num_decode -= 1
        self.decode_ctx_tok -= computed
        if self._rate is not None:
            self.spec_rate_sum -= self._rate[rid]
            if not self.num_decode:
                self.spec_rate_sum = 0.0  # no float drift left behind
        st.gen_v[rid] = base + self.T
        return computed

    def _join_decode(self, rid: int, computed: int, generated: int) -> None:
        st = self.st
        base = generated - self.T
        st.gen_v[rid] = base
        st.phase_v[rid] = DECODE
        self.block_phase[(self.T - computed) % self.bs] += 1
        self.num_decode += 1
        self.decode_ctx_tok += computed
        if self._rate is not None:
            self.spec_rate_sum += self._rate[rid]
        heapq.heappush(self._finish_heap, (self.output_v[rid] - base, rid))

    def _release(self, rid: int, held_tok: int) -> None:
        st = self.st
        shared = st.shared_v[rid]
        self.kv.free(-(-held_tok // self.bs) - shared, self.pid_v[rid], shared)
        st.shared_v[rid] = 0

    def _preempt(self, rid: int) -> None:
        """Preempt: free all its GPU blocks, back to the front of the waiting queue.

        Recompute (vLLM v1's only mode) forgets the computed tokens; swap (vLLM v0's
        `preemption_mode="swap"`) copies them to host memory, to be copied back on readmission
        instead of recomputed — the copies are charged to the step as `swap_out_tok`/`swap_in_tok`.
        """
        st = self.st
        held = self._held_tok(rid)
        if st.phase_v[rid] == DECODE:
            computed = self._leave_decode(rid)
        else:
            computed = st.computed_v[rid]
            self.prefilling.pop(rid, None)
        self._release(rid, held)
        del self.running[rid]
        st.phase_v[rid] = WAITING
        if self.swap and computed:  # its computed KV goes to host memory and comes back later
            self.swapped.add(rid)
            self._swap_out_tok += computed
            st.computed_v[rid] = computed
        else:
            st.computed_v[rid] = 0
        st.preempt_v[rid] += 1
        if self.priority_policy:
            heapq.heappush(self._wait_heap, (self.prio_v[rid], self.arrival_v[rid], rid))
        else:
            self.waiting.appendleft(rid)
        self.waiting_blocked = False

    def _preempt_for_decodes(self, preempted: list[int]) -> None:
        """Slow path: the decoding requests' next blocks do not fit. Preempt victims until they do.

        vLLM walks the running requests in order and preempts from the back until each fits;
        the survivors are the longest prefix of the running order whose blocks fit, which is
        what this computes.
        """
        bs, T = self.bs, self.T
        while self.num_decode:
            need = self.block_phase[T % bs]
            if self.kv.allocate_blocks(need):
                return
            victim = self._victim()
            self._preempt(victim)
            preempted.append(victim)

    # -- one step --------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        st, kv, bs = self.st, self.kv, self.bs
        preempted: list[int] = []
        self._scheduled_new = scheduled = {}
        self._decode_allocated = False
        self._swap_in_tok = self._swap_out_tok = 0
        self._kv_load_s = 0.0
        if self.num_decode:
            if not kv.allocate_blocks(self.block_phase[self.T % bs]):
                self._preempt_for_decodes(preempted)
        self._decode_allocated = True
        budget = self.max_tokens - self.num_decode * self.decode_budget_tok
        chunks: list[tuple[int, int, int]] = []

        # 2. running requests part-way through their prefill (or recompute)
        for rid in list(self.prefilling):
            if budget <= 0:
                break
            if st.phase_v[rid] != PREFILL:
                continue  # preempted while making room for an earlier one
            c = st.computed_v[rid]
            n = min(self.prompt_v[rid] + st.gen_v[rid] - c, budget)
            while kv.allocate(c, n) is None:
                victim = self._victim()
                if victim in scheduled:  # give back what it was granted this step
                    budget += scheduled[victim]
                    chunks = [ch for ch in chunks if ch[0] != victim]
                elif st.phase_v[victim] == DECODE:
                    budget += self.decode_budget_tok
                self._preempt(victim)
                preempted.append(victim)
                if victim == rid:
                    break
            if st.phase_v[rid] != PREFILL:
                continue
            chunks.append((rid, c, n))
            scheduled[rid] = n
            budget -= n

        # 3. waiting requests, head first; none admitted in a step that preempted (as vLLM)
        admitted: list[int] = []
        blocked = False
        if not preempted:
            heap, waiting = self._wait_heap, self.waiting
            while budget > 0 and (heap if self.priority_policy else waiting):
                if len(self.running) >= self.max_seqs:
                    blocked = True
                    break
                rid = heap[0][2] if self.priority_policy else waiting[0]
                total = self.prompt_v[rid] + st.gen_v[rid]
                pid = self.pid_v[rid]
                swapped_in = rid in self.swapped
                if swapped_in:  # its KV comes back from host memory: blocks for all of it, no prefix hit
                    hit, c = 0, st.computed_v[rid]
                else:
                    hit = kv.lookup_prefix(pid, self.ptok_v[rid], total) if pid >= 0 else 0
                    load, declined = 0, False
                    if self.offload is not None and pid >= 0 and hit == kv.cached_blocks(pid):
                        # lower tiers may hold the rest: load it if that beats recomputing it
                        load, declined = self.offload.plan_load(pid, hit, kv.prefix_cap_blocks(self.ptok_v[rid], total), self._kv_load_s)
                    c = (hit + load) * bs
                n = total - c
                if n > budget:
                    if not self.chunked:
                        # stays blocked only if decodes alone used the budget; a prefill in this
                        # step returns its budget next step
                        blocked = not chunks
                        break
                    n = budget
                got = kv.allocate(0, c + n) if swapped_in else kv.allocate(c, n, prefix_id=pid, hit_blocks=hit, load_blocks=load)
                if got is None:
                    blocked = True
                    break
                if not swapped_in and load:
                    self._kv_load_s += kv.last_load_s
                    hit += load
                elif not swapped_in and declined:
                    self.offload.recomputes += 1
                if swapped_in:
                    self.swapped.discard(rid)
                    self._swap_in_tok += c
                if self.priority_policy:
                    heapq.heappop(heap)
                else:
                    waiting.popleft()
                self.running[rid] = None
                self.prefilling[rid] = None
                st.phase_v[rid] = PREFILL
                st.computed_v[rid] = c
                st.shared_v[rid] = hit
                if not swapped_in:
                    st.hit_v[rid] += c
                chunks.append((rid, c, n))
                scheduled[rid] = n
                admitted.append(rid)
                budget -= n
            if not blocked and budget <= 0 and self.num_waiting and not chunks:
                blocked = True  # decodes alone spend the budget; that lasts until the batch changes
        self.waiting_blocked = blocked

        p_tok = ctx = pairs = 0
        for _, c, n in chunks:
            p_tok += n
            ctx += c + n
            pairs += n * c + n * (n + 1) // 2
        d = self.num_decode
        feats = StepFeatures(p_tok, d, self.decode_ctx_tok + d, ctx, pairs, d + len(chunks), self._swap_in_tok, self._swap_out_tok, self.spec_rate_sum, self._kv_load_s)
        return StepPlan(chunks, d, feats, admitted, preempted)

    def update(self, plan: StepPlan) -> tuple[list[int], list[int]]:
        """Apply an executed step. Returns (requests that got their first token, finished requests)."""
        st, kv, bs = self.st, self.kv, self.bs
        self._decode_allocated = False
        self._scheduled_new = {}
        self.T += 1
        self.decode_ctx_tok += self.num_decode
        finished = self._pop_finished()
        first: list[int] = []
        for rid, c, n in plan.chunks:
            c2 = c + n
            st.computed_v[rid] = c2
            pid = self.pid_v[rid]
            if pid >= 0:
                full_tok = self.ptok_v[rid] // bs * bs
                if c < full_tok <= c2:
                    shared = kv.cache_prefix(pid, self.ptok_v[rid], st.shared_v[rid])
                    if shared != st.shared_v[rid]:
                        st.shared_v[rid] = shared
                        self.waiting_blocked = False  # a newly cached prefix may shrink the head's need
            generated = st.gen_v[rid]
            if c2 < self.prompt_v[rid] + generated:
                continue  # a chunk that did not catch up samples nothing
            if generated == 0:
                first.append(rid)
            generated += 1
            del self.prefilling[rid]
            if generated >= self.output_v[rid]:
                st.gen_v[rid] = generated
                self._release(rid, c2)
                del self.running[rid]
                st.phase_v[rid] = DONE
                finished.append(rid)
            else:
                self._join_decode(rid, c2, generated)
        if finished:
            self.waiting_blocked = False
        return first, finished

    def _pop_finished(self) -> list[int]:
        """Decoding requests whose last token was sampled by step T (stale heap entries skipped)."""
        heap, st, T = self._finish_heap, self.st, self.T
        finished = []
        while heap and heap[0][0] <= T:
            tf, rid = heapq.heappop(heap)
            if st.phase_v[rid] != DECODE or st.gen_v[rid] + tf != self.output_v[rid]:
                continue  # preempted (and maybe re-admitted) since this entry was pushed
            computed = self._leave_decode(rid)
            self._release(rid, computed)
            del self.running[rid]
            st.phase_v[rid] = DONE
            finished.append(rid)
        if finished:
            self.waiting_blocked = False
        return finished

    # -- runs of identical decode steps ----------------------------------------------------------
    def _run_blocks(self, k: int) -> int:
        """KV blocks the decode set needs over the next k steps.

        Each decoding request needs one block every `bs` steps, at its phase; whole cycles cost
        `num_decode` blocks, the remainder is a slice of the phase histogram (C-level `sum`).
        """
        bs, hist = self.bs, self.block_phase
        full, rest = divmod(k, bs)
        need = full * self.num_decode
        if rest:
            s = self.T % bs
            e = s + rest
            need += sum(hist[s:e]) if e <= bs else sum(hist[s:]) + sum(hist[: e - bs])
        return need

    def decode_run_limit(self) -> int:
        """How many pure-decode steps, identical in composition, come next (0: do a general step).

        A run ends at the next completion; it is cut short where KV blocks would run out (that
        step needs the general path, which preempts). Arrivals are the engine's business: it
        cuts the run at the step during which the next arrival lands, if one could be admitted.
        """
        if self.prefilling or not self.num_decode or (self.num_waiting and not self.waiting_blocked):
            return 0
        heap, st = self._finish_heap, self.st
        while heap:  # drop stale entries so the top is a live request
            tf, rid = heap[0]
            if st.phase_v[rid] == DECODE and st.gen_v[rid] + tf == self.output_v[rid]:
                break
            heapq.heappop(heap)
        k = heap[0][0] - self.T
        avail = self.kv.free_blocks + self.kv.evictable_blocks
        d = self.num_decode
        if d * (k // self.bs + 1) <= avail:  # upper bound on the run's blocks: surely fits
            return k
        if self._run_blocks(k) <= avail:
            return k
        # largest k whose blocks fit: whole block-size cycles first, then step by step
        bs, hist, T, d = self.bs, self.block_phase, self.T, self.num_decode
        cycles = avail // d
        k, need = cycles * bs, cycles * d
        for j in range(bs):
            need += hist[(T + j) % bs]
            if need > avail:
                break
            k += 1
        return k

    def run_features(self) -> StepFeatures:
        """Features of the first step of a pure-decode run (context grows by one per sequence per step)."""
        d = self.num_decode
        return StepFeatures(0, d, self.decode_ctx_tok + d, 0, 0, d, 0, 0, self.spec_rate_sum)

    def advance_decode_run(self, k: int) -> list[int]:
        """Apply k executed pure-decode steps at once: take their KV blocks, advance the step
        counter, and return the requests finished by the last step. `run_peak_blocks` is the KV
        in use at the run's end, before the finished requests free theirs (the run's peak)."""
        if not self.kv.allocate_blocks(self._run_blocks(k)):
            raise AssertionError("decode run exceeds free KV blocks; decode_run_limit was not respected")
        self.run_peak_blocks = self.kv.used_blocks
        self.T += k
        self.decode_ctx_tok += self.num_decode * k
        return self._pop_finished()
