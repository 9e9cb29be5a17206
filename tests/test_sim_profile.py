"""The calibration Profile file: versioned, found by GPU and engine, refused clearly when wrong."""

from __future__ import annotations

import json

import pytest

from models.errors import LifecostError
from models.profile import Ceilings, FitStats, Profile, ProfileEngine, ProfileGpu, StepTimeCoeffs, find_profile, load_profile, save_profile


def profile(engine: str = "vllm", **sections) -> Profile:
    return Profile(
        gpu=ProfileGpu(name="NVIDIA H100 80GB HBM3", catalog_name="H100-SXM"),
        engine=ProfileEngine(name=engine, version="test"),
        created_utc="2026-11-22T00:00:00Z",
        command="pytest (example profile, not a measurement)",
        **sections,
    )


def test_a_saved_profile_loads_back_identical_by_path_and_by_key(tmp_path):
    p = profile(
        ceilings=Ceilings(gemm_bf16_tflops=770.0, hbm_copy_tb_s=2.96),
        step_time=StepTimeCoeffs(c0_s=0.004, c1=1.1, c2=1.2, c3=1.5, c4=1.3, fit=FitStats(n_points=12, r2=0.98, mape=0.05)),
    )
    path = save_profile(p, tmp_path / "H100-SXM" / "vllm.json")
    assert load_profile(path) == p
    assert load_profile("H100-SXM/vllm", profiles_dir=tmp_path) == p
    assert p.key == "H100-SXM/vllm"
    assert not list(tmp_path.rglob("*.tmp"))  # written via temp file + rename


def test_a_partial_profile_is_valid():
    p = profile()
    assert p.step_time is None and p.training is None and p.energy is None
    assert p.ceilings.gemm_bf16_tflops is None


def test_find_profile_matches_catalog_or_pynvml_name_and_prefers_vllm(tmp_path):
    assert find_profile("H100-SXM", profiles_dir=tmp_path) is None
    save_profile(profile("transformers-cb"), tmp_path / "H100-SXM" / "transformers-cb.json")
    assert find_profile("H100-SXM", profiles_dir=tmp_path).engine.name == "transformers-cb"
    save_profile(profile("vllm"), tmp_path / "H100-SXM" / "vllm.json")
    assert find_profile("H100-SXM", profiles_dir=tmp_path).engine.name == "vllm"
    assert find_profile("NVIDIA H100 80GB HBM3", profiles_dir=tmp_path).engine.name == "vllm"
    assert find_profile("H100-SXM", "transformers-cb", profiles_dir=tmp_path).engine.name == "transformers-cb"
    assert find_profile("A100-SXM-80GB", profiles_dir=tmp_path) is None


def test_another_schema_version_is_refused_naming_the_field(tmp_path):
    data = json.loads(profile().model_dump_json())
    data["schema_version"] = 2
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LifecostError, match="schema_version"):
        load_profile(path)


def test_broken_files_give_one_line_errors_naming_file_and_field(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(LifecostError, match="not valid JSON"):
        load_profile(bad_json)
    data = json.loads(profile().model_dump_json())
    data["step_time"] = {"c0_s": -1, "c1": 1, "c2": 1, "c3": 1, "c4": 1, "fit": {"n_points": 3, "r2": 0.9, "mape": 0.1}}
    neg = tmp_path / "neg.json"
    neg.write_text(json.dumps(data))
    with pytest.raises(LifecostError, match=r"step_time\.c0_s") as e:
        load_profile(neg)
    assert "\n" not in str(e.value)
    with pytest.raises(LifecostError, match="no Profile file or key"):
        load_profile("Nope-GPU/vllm", profiles_dir=tmp_path)


def test_a_gpu_directory_named_in_another_case_is_found(tmp_path):
    save_profile(profile("vllm"), tmp_path / "h100-sxm" / "vllm.json")
    assert find_profile("H100-SXM", profiles_dir=tmp_path).engine.name == "vllm"
    assert load_profile("H100-SXM/vllm", profiles_dir=tmp_path).gpu.catalog_name == "H100-SXM"
