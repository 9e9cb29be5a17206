"""Training calibration runs for real on CPU: a 2-layer Llama (hidden 64) with peft LoRA.

What must hold whatever the machine: the trainable parameters we record are peft's own count and
equal the LoRA formula; every run lands in the run log at once under a key of its inputs, and a
rerun skips done keys; an allocation failure is a recorded data point (`oom: true`), after which
the session still measures the next run on an untouched base model.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calibrate.device_runs import train_plan
from calibrate.model_build import load_config_dict
from calibrate.runlog import RunLog
from calibrate.train import TrainRun, TrainSession, run_sweep
from models.errors import LifecostError

TINY = "tiny-llama"


def _lora_params_by_formula(cfg: dict, r: int) -> int:
    """r·(in + out) for every nn.Linear of every decoder layer (peft's `all-linear` skips lm_head)."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
    return r * per_layer * cfg["num_hidden_layers"]


@pytest.fixture(scope="module")
def session() -> TrainSession:
    s = TrainSession(TINY, device="cpu", dtype=torch.float32)
    yield s
    s.close()


def _run(r: int = 4, **kw) -> TrainRun:
    args = {"seq_len_tok": 16, "micro_batch": 2, "warmup_steps": 1, "timed_steps": 2, **kw}
    return TrainRun(TINY, "lora", lora_r=r, **args)


def test_lora_run_records_peft_trainable_params_and_a_positive_step_time(session):
    rec = session.run(_run(r=4))
    assert rec["oom"] is False and "error" not in rec
    assert rec["trainable_params"] == rec["peft_trainable_params"] == _lora_params_by_formula(session.config, 4)
    assert rec["params_total"] == sum(p.numel() for p in session.base.parameters())
    assert rec["step_time_s"] > 0 and rec["tokens_per_s"] > 0
    assert len(rec["step_times_s"]) == 3  # 1 warm-up + 2 timed
    assert rec["tokens_per_step"] == 32
    assert rec["versions"]["peft"] and rec["model_config"]["hidden_size"] == 64
    json.dumps(rec)  # a run-log record must be plain JSON


def test_lora_wrapping_leaves_the_base_model_untouched_for_the_next_run(session):
    before = {n: p.detach().clone() for n, p in session.base.named_parameters()}
    session.run(_run(r=8, grad_ckpt=True))
    after = dict(session.base.named_parameters())
    assert before.keys() == after.keys()  # no lora_A / lora_B left behind
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert not any(p.requires_grad for p in session.base.parameters())


def test_full_fine_tune_trains_every_parameter(session):
    rec = session.run(TrainRun(TINY, "full", 16, 1, False, warmup_steps=1, timed_steps=2))
    assert rec["oom"] is False
    assert rec["trainable_params"] == rec["params_total"]
    assert rec["peft_trainable_params"] is None


def test_an_allocation_failure_is_recorded_as_oom_and_the_session_goes_on(session):
    # 2^45 tokens of int64 ids (256 TiB) cannot be allocated on any machine: the CPU allocator
    # refuses at once, before anything is touched.
    huge = _run(r=4, seq_len_tok=2**20, micro_batch=2**25)
    rec = session.run(huge)
    assert rec["oom"] is True and rec["completed_steps"] == 0
    assert "allocate" in rec["error"]
    assert session.run(_run(r=4))["oom"] is False


def test_sweep_appends_every_run_at_once_and_a_rerun_skips_done_keys(tmp_path):
    log = RunLog(tmp_path / "train.jsonl")
    runs = [_run(r=2), _run(r=2, seq_len_tok=8)]
    seen: list[int] = []
    new = run_sweep(runs, log, device="cpu", on_record=lambda rec: seen.append(len(list(log.records()))))
    assert [r["key"] for r in new] == [r.key for r in runs]
    assert seen == [1, 2]  # each record was in the file before the next run began
    assert run_sweep(runs, log, device="cpu") == []
    assert len(list(log.records("train"))) == 2


def test_bad_inputs_are_one_line_errors_naming_the_field():
    with pytest.raises(LifecostError, match="method"):
        TrainRun(TINY, "qlora-xl")
    with pytest.raises(LifecostError, match="seq_len_tok"):
        TrainRun(TINY, "lora", seq_len_tok=0)
    with pytest.raises(LifecostError, match="did you mean"):
        load_config_dict("Llama-3.2-1b-typo")


@settings(max_examples=60, deadline=None)
@given(a=st.tuples(st.sampled_from(["lora", "full"]), st.integers(1, 8192), st.integers(1, 64), st.booleans(),
                   st.integers(1, 256)),
       b=st.tuples(st.sampled_from(["lora", "full"]), st.integers(1, 8192), st.integers(1, 64), st.booleans(),
                   st.integers(1, 256)))
def test_run_keys_identify_the_measurement_inputs(a, b):
    ra, rb = TrainRun(TINY, *a), TrainRun(TINY, *b)
    same_inputs = a[:4] == b[:4] and (a[0] == "full" or a[4] == b[4])
    assert (ra.key == rb.key) == same_inputs


def test_h100_plan_holds_the_issue_held_out_set_and_a_fit_grid_on_the_1b_shape():
    plan = train_plan()
    held = {(r.micro_batch, r.grad_ckpt, r.lora_r) for r in plan if r.model == "Llama-3.1-8B"}
    assert held == {(b, c, r) for b in (1, 4) for c in (False, True) for r in (16, 64)}
    assert all(r.seq_len_tok == 2048 for r in plan if r.model == "Llama-3.1-8B")
    fit = {(r.seq_len_tok, r.micro_batch, r.grad_ckpt) for r in plan if r.model == "Llama-3.2-1B" and r.lora_r == 16
           and r.method == "lora"}
    assert fit == {(s, b, c) for s in (512, 1024, 2048, 4096) for b in (1, 2, 4, 8) for c in (False, True)}
    assert len({r.key for r in plan}) == len(plan)


def test_every_run_records_host_time_no_longer_than_its_wall_time(session):
    rec = session.run(_run(r=4))
    assert len(rec["host_times_s"]) == len(rec["step_times_s"])
    assert all(0 < h <= t for h, t in zip(rec["host_times_s"], rec["step_times_s"]))
    assert 0 < rec["host_time_s"] <= max(rec["step_times_s"][1:])


def test_qlora_runs_on_an_nf4_base_with_peft_counting_only_the_adapters():
    """The QLoRA path for real on CPU: bitsandbytes NF4 linears (everything but lm_head), peft LoRA
    on top, trainable parameters = the LoRA formula, the record says its base format."""
    import bitsandbytes as bnb

    s = TrainSession(TINY, device="cpu", base_quant="nf4")
    try:
        layer = s.base.model.layers[0]
        assert isinstance(layer.self_attn.q_proj, bnb.nn.Linear4bit) and isinstance(layer.mlp.down_proj, bnb.nn.Linear4bit)
        assert not isinstance(s.base.lm_head, bnb.nn.Linear4bit)
        rec = s.run(TrainRun(TINY, "qlora", 16, 2, True, 4, warmup_steps=1, timed_steps=2))
        assert rec["oom"] is False and "error" not in rec, rec.get("error")
        assert rec["base_quant"] == "nf4" and rec["key"].startswith(f"train/{TINY}/qlora-r4")
        assert rec["trainable_params"] == rec["peft_trainable_params"] == _lora_params_by_formula(s.config, 4)
        bf16 = TrainSession(TINY, device="cpu")
        assert rec["params_total"] == bf16.params_total  # counted before NF4 packs two weights per byte
        bf16.close()
        with pytest.raises(ValueError, match="cannot run method lora"):
            s.run(_run(r=4))  # an NF4 session does not run plain LoRA
    finally:
        s.close()


def test_cli_train_runs_qlora_and_prints_host_time(tmp_path):
    """`lifecost calibrate train --method qlora` end to end on CPU: one record in the log with its
    NF4 base and host times; a bad method is a one-line error naming --method's field."""
    from typer.testing import CliRunner

    from planner_ui.cli import app

    log = tmp_path / "train.jsonl"
    res = CliRunner().invoke(app, ["calibrate", "train", "--model", TINY, "--method", "qlora", "--seq", "16", "--lora-r", "4",
                                   "--warmup-steps", "1", "--timed-steps", "2", "--device", "cpu", "--log", str(log), "--json"])
    assert res.exit_code == 0, res.output
    recs = list(RunLog(log).records("train"))
    assert len(recs) == 1 and recs[0]["base_quant"] == "nf4" and recs[0]["host_time_s"] > 0
    import subprocess
    import sys

    bad = subprocess.run([sys.executable, "-c", "from planner_ui.cli import main; main()", "calibrate", "train", "--model", TINY,
                          "--method", "qqlora", "--log", str(log)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "method" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
