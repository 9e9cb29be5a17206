"""Loading model and GPU cards: names, aliases, user config files, and one-line errors."""

from __future__ import annotations

import json

import pytest

from models.catalog import MAX_CONFIG_BYTES, list_models, load_model
from models.errors import LifecostError
from models.gpus import GpuCard, list_gpus, load_gpu
from models.params import params_total

CATALOG = ["DeepSeek-V3", "Llama-3.1-405B", "Llama-3.1-70B", "Llama-3.1-8B", "Llama-3.2-1B", "Llama-3.2-3B",
           "Mistral-7B-v0.3", "Mixtral-8x7B-v0.1", "Qwen2.5-72B", "Qwen2.5-7B", "Qwen3-30B-A3B"]


def test_catalog_lists_the_eleven_published_configs():
    assert list_models() == sorted(CATALOG)


def test_names_are_case_insensitive():
    assert load_model("llama-3.1-8b").name == "Llama-3.1-8B"
    assert load_model("  DEEPSEEK-V3 ").name == "DeepSeek-V3"


def test_unknown_model_suggests_the_nearest():
    with pytest.raises(LifecostError, match=r"unknown model 'llama-3.1-9b'.*Llama-3.1-8B"):
        load_model("llama-3.1-9b")


def test_a_user_config_path_or_its_folder_loads(tmp_path):
    from models.catalog import CONFIG_DIR

    cfg = json.loads((CONFIG_DIR / "Llama-3.1-8B.json").read_text())
    folder = tmp_path / "MyTune"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    by_file = load_model(str(folder / "config.json"))
    by_dir = load_model(str(folder))
    assert by_file.name == by_dir.name == "MyTune"
    assert params_total(by_file) == 8_030_261_248


@pytest.mark.parametrize("drop", ["hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                                  "intermediate_size", "model_type"])
def test_a_config_missing_a_field_names_it(tmp_path, drop):
    from models.catalog import CONFIG_DIR

    cfg = json.loads((CONFIG_DIR / "Llama-3.1-8B.json").read_text())
    del cfg[drop]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(LifecostError, match=drop) as e:
        load_model(str(path))
    assert "\n" not in str(e.value)


def test_bad_json_names_the_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "model_type": "llama",\n  "hidden_size": 4096,,\n}')
    with pytest.raises(LifecostError, match="line 3"):
        load_model(str(path))


def test_non_decoder_or_unsupported_configs_are_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "bert", "hidden_size": 768}))
    with pytest.raises(LifecostError, match="model_type 'bert' is not supported"):
        load_model(str(path))
    path.write_text(json.dumps([1, 2, 3]))
    with pytest.raises(LifecostError, match="not an object"):
        load_model(str(path))


def test_oversized_files_are_not_read(tmp_path):
    path = tmp_path / "model.safetensors.index.json"
    path.write_bytes(b" " * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(LifecostError, match="a config.json is a few KB"):
        load_model(str(path))


def test_missing_path_is_a_file_error_not_a_name_error(tmp_path):
    with pytest.raises(LifecostError, match="not found"):
        load_model(str(tmp_path / "nope" / "config.json"))


def test_bad_head_counts_are_reported(tmp_path):
    from models.catalog import CONFIG_DIR

    cfg = json.loads((CONFIG_DIR / "Llama-3.1-8B.json").read_text())
    cfg["num_key_value_heads"] = 5
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(LifecostError, match="num_key_value_heads"):
        load_model(str(path))


# ------------------------------------------------------------------ GPUs


def test_all_ten_gpu_cards_load_and_validate():
    assert list_gpus() == ["H100-SXM", "H100-PCIe", "H200", "A100-80GB", "A100-40GB", "L40S", "L4", "RTX-4090",
                           "B200", "MI300X"]
    for name in list_gpus():
        card = load_gpu(name)
        assert isinstance(card, GpuCard) and card.source
        assert card.total_memory_gib < card.hbm_gib
        assert card.peak_tflops("fp8") >= card.peak_tflops("bf16")


@pytest.mark.parametrize("alias,name", [("h100", "H100-SXM"), ("NVIDIA H100 80GB HBM3", "H100-SXM"),
                                        ("H100 80GB HBM3", "H100-SXM"), ("a100", "A100-80GB"),
                                        ("NVIDIA A100-SXM4-40GB", "A100-40GB"), ("rtx 4090", "RTX-4090"),
                                        ("AMD Instinct MI300X", "MI300X"), ("h100_pcie", "H100-PCIe")])
def test_aliases_and_pynvml_names_resolve(alias, name):
    assert load_gpu(alias).name == name


def test_unknown_gpu_suggests_the_nearest():
    with pytest.raises(LifecostError, match="did you mean.*H200"):
        load_gpu("H20O")


def test_ampere_has_no_fp8_and_falls_back_to_bf16():
    a100 = load_gpu("A100-80GB")
    assert a100.fp8_tflops is None and a100.peak_tflops("fp8") == a100.bf16_tflops == 312.0


def test_h100_defaults_reflect_the_measured_ceilings():
    """8192³ bf16 GEMM 770-798 TFLOP/s and 2.96-3.0 TB/s copy on one H100 80GB HBM3."""
    h100 = load_gpu("H100-SXM")
    assert 770 <= h100.bf16_tflops * h100.flops_efficiency <= 801
    assert 2.9 <= h100.hbm_tb_s * h100.hbm_efficiency <= 3.0


def test_card_schema_rejects_bad_values():
    from pydantic import ValidationError

    row = load_gpu("L4").model_dump()
    with pytest.raises(ValidationError):
        GpuCard(**{**row, "flops_efficiency": 1.5})
    with pytest.raises(ValidationError):
        GpuCard(**{**row, "surprise": 1})
