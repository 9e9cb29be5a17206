"""Disaggregated prefill/decode: a prefill pool, KV transfer over a link, a decode pool.

Splitwise (Patel et al., ISCA 2024) and DistServe (Zhong et al., OSDI 2024) run prompts and
token generation on separate replicas so that long prefills never stall decodes. Modelled
here as vLLM's disaggregated serving runs it (a proxy sends the request to a prefill instance
with `max_tokens=1`, its KV goes to a decode instance through a KV connector, and the decode
instance produces the whole output):

1. the router sends the request to a prefill replica, an ordinary engine replica whose
   requests each end after one sampled token (it computes the prompt, chunked or not, with
   prefix caching as usual);
2. when its prefill finishes, a decode replica is chosen (the same router policy over the
   decode pool) and the prompt's KV — (prompt_tok − 1) × `kv_bytes_per_token_per_gpu`, each
   GPU of the TP group sending its shard over its own NIC — crosses the link. Transfers
   contend: each replica has one outgoing and one incoming link, and a transfer holds both,
   first come first served;
3. the decode replica admits the request with that KV in place (as a swapped-in request
   without the PCIe copy), computes the last prompt token, samples the first output token
   and decodes the rest.

So TTFT = queue + prefill + transfer (with its link queueing) + the first decode step, and
TPOT is the decode pool's alone. Simplification: the prefill replica frees the request's KV
when the prefill ends rather than when the transfer completes (real connectors keep the
blocks until the decode side has pulled them); at 50 GB/s a 4k-token Llama-8B prompt's
512 MiB leaves in ~10 ms, a small fraction of the prefill itself.

Link bandwidths, one direction, per GPU (`DisaggSpec.link`, overridden by `link_gb_s`):
  nvlink      450 GB/s  (H100 NVLink 4: 900 GB/s bidirectional, NVIDIA H100 datasheet)
  infiniband   50 GB/s  (NDR 400 Gb/s per GPU NIC, ConnectX-7)
  ethernet     12.5 GB/s (100 GbE)
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import simpy

from simulator.cluster import Pool, _busy_by_replica, pool_sizes, router_rng, start_router
from simulator.engine import ProgressFn, Recorder, SimSetup, collect_result
from simulator.result import Result

LINK_GB_S = {"nvlink": 450.0, "infiniband": 50.0, "ethernet": 12.5}


def link_bytes_s(spec) -> float:
    """Bytes per second one GPU can send to another over the disaggregation link."""
    return (spec.link_gb_s if spec.link_gb_s is not None else LINK_GB_S[spec.link]) * 1e9


def simulate_disaggregated(setup: SimSetup, *, seed: int, progress: ProgressFn | None, fast_forward: bool) -> Result:
    from models.catalog import load_model
    from models.memory import kv_bytes_per_token_per_gpu

    sc = setup.scenario
    c, d, tp = sc.cluster, sc.cluster.disaggregated, sc.gpu.tensor_parallel
    reqs = setup.requests
    n = len(reqs)
    prompt = np.asarray(reqs.prompt_tok, np.int64)
    env = simpy.Environment()
    p_size, p_init = pool_sizes(c.autoscale, d.prefill_replicas)
    d_size, d_init = pool_sizes(c.autoscale, d.decode_replicas)
    prefill = Pool(env, setup, name="prefill", size=p_size, initial=p_init, first_id=0, output_tok=np.ones(n, np.int64), work_tok=prompt,
                   router=c.router, rng=router_rng(seed, 0), tensor_parallel=tp, fast_forward=fast_forward)
    decode = Pool(env, setup, name="decode", size=d_size, initial=d_init, first_id=p_size, output_tok=setup.output_tok, work_tok=setup.output_tok,
                  router=c.router, rng=router_rng(seed, 1), tensor_parallel=tp, fast_forward=fast_forward, progress=progress)

    card = load_model(sc.model.name)
    s_per_tok = kv_bytes_per_token_per_gpu(card, sc.model.kv_dtype, tp) / link_bytes_s(d)
    out_links = [simpy.Resource(env, 1) for _ in range(p_size)]
    in_links = [simpy.Resource(env, 1) for _ in range(d_size)]
    transfer_s = np.full(n, np.nan)  # from prefill end to KV landed (link queueing included)
    kv_tok = np.maximum(prompt - 1, 0)  # the last prompt token is computed on the decode side
    dstate, dscheds = decode.state, [r.scheduler for r in decode.replicas]
    prefill_end_s = np.full(n, np.nan)
    done = SimpleNamespace(pushed=0, count=0, end_s=float(reqs.arrival_s[0]))

    def move_kv(rid: int, src: int, dst: int):
        t0 = env.now
        with out_links[src].request() as out_req, in_links[dst].request() as in_req:
            yield out_req
            yield in_req
            yield env.timeout(kv_tok[rid] * s_per_tok)
        transfer_s[rid] = env.now - t0
        if kv_tok[rid]:
            dstate.computed_v[rid] = kv_tok[rid]
            dscheds[dst].swapped.add(rid)
            dscheds[dst].transferred.add(rid)
        decode.feeds[dst].push(rid)
        done.pushed += 1
        if done.pushed == n:
            decode.close()

    def prefill_done(rid: int, replica: int) -> None:
        prefill_end_s[rid] = env.now
        dst = decode.route(rid, push=False)  # the decode replica is chosen when the prefill ends
        env.process(move_kv(rid, replica, dst))

    def decode_done(rid: int, replica: int) -> None:
        done.count += 1
        done.end_s = env.now

    prefill.on_done, decode.on_done = prefill_done, decode_done
    scalers = []
    if c.autoscale.enabled:
        from simulator.autoscale import Autoscaler

        scalers = [Autoscaler(env, pool, c.autoscale, finished=lambda: done.count >= n, start_s=float(reqs.arrival_s[0])) for pool in (prefill, decode)]
    start_router(env, reqs.arrival_s, prefill, prefill.close)
    env.run()
    if progress is not None:
        progress(decode.recorder.finished, n)
    for pool in (prefill, decode):
        pool.close_books(done.end_s)

    p_rec, d_rec = prefill.recorder, decode.recorder
    rec = Recorder(n)
    rec.sched_s, rec.first_s, rec.finish_s = p_rec.sched_s, d_rec.first_s, d_rec.finish_s
    rec.finished = d_rec.finished
    rec.steps = p_rec.steps + d_rec.steps
    state = SimpleNamespace(preemptions=prefill.state.preemptions + decode.state.preemptions, prefix_hit_tok=prefill.state.prefix_hit_tok, gen=decode.state.gen)
    result = collect_result(setup, state, rec, prefill.replicas + decode.replicas)
    frame = result.requests
    frame["prefill_replica"] = prefill.served
    frame["replica"] = decode.served + p_size
    frame["prefill_end_s"] = prefill_end_s
    frame["kv_transfer_s"] = transfer_s
    busy = _busy_by_replica(result.steps)
    p_info, d_info = prefill.report(busy), decode.report(busy)
    moved = kv_tok * kv_bytes_per_token_per_gpu(card, sc.model.kv_dtype, tp) * tp
    result.meta["cluster"] = {
        "router": c.router,
        "gpu_seconds_provisioned": p_info["gpu_seconds_provisioned"] + d_info["gpu_seconds_provisioned"],
        "prefill": p_info,
        "decode": d_info,
        "link": d.link,
        "link_gb_s": link_bytes_s(d) / 1e9,
        "kv_moved_gb": float(moved.sum()) / 1e9,
        "kv_transfer_s": {k: round(v, 9) for k, v in _percentiles(transfer_s).items()},
    }
    if scalers:
        result.meta["cluster"]["autoscale"] = {"prefill": scalers[0].report(), "decode": scalers[1].report()}
    return result


def _percentiles(x: np.ndarray) -> dict[str, float]:
    x = x[np.isfinite(x)]
    if not x.size:
        return {"p50": 0.0, "p99": 0.0, "mean": 0.0}
    return {"p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)), "mean": float(x.mean())}
