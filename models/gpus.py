"""GPU cards: datasheet ceilings plus the roofline efficiencies used before calibration.

The cards live in `gpus.yaml` (units and sources documented there) and are validated by
`GpuCard`. `load_gpu` accepts the card name, an alias, or the name pynvml reports
("NVIDIA H100 80GB HBM3"), case- and punctuation-insensitively, so a calibration run can find
its card from the probe.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import LifecostError, unknown_name

GPUS_YAML = Path(__file__).parent / "gpus.yaml"
# torch.cuda.get_device_properties(0).total_memory / datasheet capacity, measured on one H100 80GB
# HBM3 (models/profiles/h100-sxm/probe.json: 79.1787 GiB of 80).
DRIVER_VISIBLE_FRACTION = 79.1787109375 / 80


class GpuCard(BaseModel):
    """One accelerator. Peaks are dense tensor-core rates (no sparsity).

    `fp8_tflops` is None on GPUs without FP8 tensor cores (Ampere); `peak_tflops("fp8")` then
    falls back to the bf16 rate, as fp8 weights are up-cast there (weight-only fp8 kernels).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    vendor: str
    hbm_gib: float = Field(gt=0)
    hbm_tb_s: float = Field(gt=0)
    bf16_tflops: float = Field(gt=0)
    fp8_tflops: float | None = Field(default=None, gt=0)
    int8_tops: float | None = Field(default=None, gt=0)
    host_link_gb_s: float = Field(gt=0)
    nvlink_gb_s: float = Field(ge=0)
    tdp_w: float = Field(gt=0)
    flops_efficiency: float = Field(gt=0, le=1)
    hbm_efficiency: float = Field(gt=0, le=1)
    mfu_training: float = Field(gt=0, le=1)
    aliases: list[str] = Field(default_factory=list)
    source: str
    device_memory_gib: float | None = Field(default=None, gt=0)

    @property
    def hbm_bytes(self) -> float:
        return self.hbm_gib * 2**30

    @property
    def total_memory_gib(self) -> float:
        """Memory the CUDA runtime reports as the device total (what vLLM's
        gpu_memory_utilization multiplies and what training can allocate): the measured
        `device_memory_gib` when the card has one, else the datasheet capacity less the share the
        driver/ECC reserve on the measured H100 (79.18 of 80 GiB, torch `total_memory`)."""
        if self.device_memory_gib is not None:
            return self.device_memory_gib
        return self.hbm_gib * DRIVER_VISIBLE_FRACTION

    def peak_tflops(self, dtype: str = "bf16") -> float:
        """Dense peak for a compute dtype (bf16/fp16, fp8, int8); fp8/int8 fall back to bf16."""
        if dtype in ("fp8",) and self.fp8_tflops:
            return self.fp8_tflops
        if dtype in ("int8",) and self.int8_tops:
            return self.int8_tops
        return self.bf16_tflops


def _key(name: str) -> str:
    """Normalise a GPU name: lowercase, drop a vendor prefix, ignore spaces/dashes/underscores."""
    n = name.strip().lower()
    n = re.sub(r"^(nvidia|amd)\s+", "", n)
    return re.sub(r"[\s_\-]+", "", n)


@lru_cache(maxsize=1)
def _catalog() -> dict[str, GpuCard]:
    data = yaml.safe_load(GPUS_YAML.read_text(encoding="utf-8"))
    cards: dict[str, GpuCard] = {}
    for i, row in enumerate(data.get("gpus", [])):
        try:
            card = GpuCard(**row)
        except ValidationError as e:  # a broken bundled file is a bug, but say where
            first = e.errors()[0]
            raise LifecostError(f"{GPUS_YAML.name} entry {i}: {'.'.join(map(str, first['loc']))}: {first['msg']}",
                                field="gpus.yaml", fix="correct the GPU card") from None
        cards[card.name] = card
    return cards


def list_gpus() -> list[str]:
    """Card names, in the order of `gpus.yaml`."""
    return list(_catalog())


def load_gpu(name: str) -> GpuCard:
    """The card for a name, alias or pynvml device name; unknown names suggest the nearest."""
    want = _key(name)
    for card in _catalog().values():
        if want == _key(card.name) or any(want == _key(a) for a in card.aliases):
            return card
    raise unknown_name("gpu", name, list_gpus())
