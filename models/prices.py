"""The dated price sheet: what a GPU-hour costs to rent, and what an owned GPU costs.

Why a data file and not constants: GPU prices change every quarter and differ per provider,
region and commitment, so every figure is a row with its date and `source` and a `basis`
(`list` = a published rate, `estimate` = derived or a market figure). The bundled sheet
(`prices.yaml`) is a starting point; `load_prices(path)` lays a user's own sheet (same layout,
YAML, read with `yaml.safe_load`) over it, replacing rows with the same (provider, gpu, pricing)
key and merging the on-prem assumptions field by field.

On-prem cost of one GPU-hour (`on_prem_usd_per_gpu_hour`) is capital only:
`capex_usd / (depreciation_months × HOURS_PER_MONTH)` — straight-line depreciation. Power is
kept apart (`OnPremCost.energy_usd`) because it depends on how busy the GPU is:
`kWh × PUE × usd_per_kwh`, the facility overhead factor PUE as defined by The Green Grid
(2007, "The Green Grid Metrics: Describing Datacenter Power Efficiency").
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import LifecostError, suggest

PRICES_YAML = Path(__file__).with_name("prices.yaml")
MAX_SHEET_BYTES = 2_000_000  # a price sheet is a small text file; refuse anything bigger
HOURS_PER_MONTH = 365.0 * 24.0 / 12.0  # 730 h: the average calendar month

Pricing = Literal["on_demand", "reserved_1y", "reserved_3y", "spot"]
PRICINGS: tuple[str, ...] = ("on_demand", "reserved_1y", "reserved_3y", "spot")


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CloudPrice(_Row):
    """One rental price: `usd_per_gpu_hour` for `gpu` at `provider` under `pricing`."""

    provider: str = Field(min_length=1)
    gpu: str = Field(min_length=1)
    pricing: Pricing
    usd_per_gpu_hour: float = Field(gt=0)
    basis: Literal["list", "estimate"]
    source: str = Field(min_length=1)
    instance: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.provider.lower(), _norm(self.gpu), self.pricing)


class OnPremAssumptions(_Row):
    """Owning a GPU: every field optional so a per-GPU entry states only what differs."""

    capex_usd: float | None = Field(None, gt=0)
    depreciation_months: int | None = Field(None, ge=1, le=240)
    pue: float | None = Field(None, ge=1.0, le=5.0)
    usd_per_kwh: float | None = Field(None, ge=0.0)
    host_overhead_w: float | None = Field(None, ge=0.0)
    idle_power_fraction: float | None = Field(None, ge=0.0, le=1.0)
    basis: Literal["list", "estimate"] | None = None
    source: str | None = None


class OnPremSection(_Row):
    defaults: OnPremAssumptions = OnPremAssumptions()
    gpus: dict[str, OnPremAssumptions] = Field(default_factory=dict)


class PriceSheet(_Row):
    """The whole sheet. `as_of` is when it was compiled; each row's `source` dates its figure."""

    as_of: str
    currency: Literal["USD"]
    cloud: list[CloudPrice] = Field(default_factory=list)
    on_prem: OnPremSection = OnPremSection()


@dataclass(frozen=True)
class OnPremCost:
    """Resolved on-prem assumptions for one GPU (defaults filled in)."""

    gpu: str
    capex_usd: float
    depreciation_months: int
    pue: float
    usd_per_kwh: float
    host_overhead_w: float
    idle_power_fraction: float
    source: str

    @property
    def capex_usd_per_gpu_hour(self) -> float:
        """Straight-line depreciation of capex over its life, per hour of that life."""
        return self.capex_usd / (self.depreciation_months * HOURS_PER_MONTH)

    def energy_usd(self, it_kwh: float) -> float:
        """Dollars for `it_kwh` of IT load (GPU + host): facility energy = IT energy × PUE."""
        return it_kwh * self.pue * self.usd_per_kwh


def _norm(name: str) -> str:
    """Case- and punctuation-insensitive GPU key: 'h100 sxm' == 'H100-SXM' == 'h100_sxm'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def canonical_gpu(name: str) -> str:
    """The catalog's name for `name` when the GPU catalog knows it (aliases resolve), else `name`."""
    try:
        from models.gpus import load_gpu
    except ImportError:
        return name
    try:
        return load_gpu(name).name
    except LifecostError:
        return name


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise LifecostError(f"no such file {str(path)!r}", field="prices.sheet", fix="pass a path to a price-sheet YAML (layout: models/prices.yaml)")
    size = path.stat().st_size
    if size > MAX_SHEET_BYTES:
        raise LifecostError(f"{path} is {size} bytes; a price sheet is at most {MAX_SHEET_BYTES}", field="prices.sheet")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise LifecostError(f"not valid YAML ({getattr(e, 'problem', e)})", field=where, fix="check indentation and quoting") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LifecostError("a price sheet must be a YAML mapping (as_of:, currency:, cloud:, on_prem:)", field=str(path))
    return data


def _validate(data: dict, source: str) -> PriceSheet:
    try:
        return PriceSheet.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        raise LifecostError(msg, field=f"{source} {field}", fix="see models/prices.yaml for the layout") from None


def _merge(base: dict, user: dict) -> dict:
    """User rows replace bundled rows with the same (provider, gpu, pricing); on_prem merges per field."""
    merged = dict(base)
    for key in ("as_of", "currency"):
        if key in user:
            merged[key] = user[key]
    if "cloud" in user:
        if not isinstance(user["cloud"], list):
            raise LifecostError("`cloud` must be a list of rows", field="prices.sheet cloud", fix="see models/prices.yaml")
        rows: dict[tuple, dict] = {}
        for row in list(base.get("cloud", [])) + list(user["cloud"]):
            if not isinstance(row, dict):
                raise LifecostError(f"a cloud row must be a mapping, got {row!r}", field="prices.sheet cloud")
            k = (str(row.get("provider", "")).lower(), _norm(str(row.get("gpu", ""))), row.get("pricing"))
            rows[k] = row
        merged["cloud"] = list(rows.values())
    if "on_prem" in user:
        up = user["on_prem"] or {}
        if not isinstance(up, dict):
            raise LifecostError("`on_prem` must be a mapping (defaults:, gpus:)", field="prices.sheet on_prem")
        bp = dict(base.get("on_prem", {}))
        bp["defaults"] = {**bp.get("defaults", {}), **(up.get("defaults") or {})}
        gpus = {k: dict(v) for k, v in (bp.get("gpus") or {}).items()}
        for name, fields in (up.get("gpus") or {}).items():
            match = next((k for k in gpus if _norm(k) == _norm(name)), name)
            gpus[match] = {**gpus.get(match, {}), **(fields or {})}
        bp["gpus"] = gpus
        merged["on_prem"] = bp
    return merged


@functools.lru_cache(maxsize=4)
def _bundled(mtime_ns: int) -> tuple[dict, PriceSheet]:
    """The bundled sheet, parsed once per file version (pure-Python YAML takes ~0.5 s for it)."""
    data = _read_yaml(PRICES_YAML)
    return data, _validate(data, str(PRICES_YAML))


def load_prices(path: str | Path | None = None) -> PriceSheet:
    """The bundled sheet, with the user's sheet at `path` (if given) laid over it.

    The bundled sheet is parsed once per file version and shared: treat the result as read-only.
    """
    raw, sheet = _bundled(PRICES_YAML.stat().st_mtime_ns)
    if path is None:
        return sheet
    user = _read_yaml(Path(path))
    _validate({**{"as_of": "user", "currency": "USD"}, **user}, str(path))  # report user errors against the user file
    return _validate(_merge(copy.deepcopy(raw), user), str(path))


def _available(sheet: PriceSheet, gpu: str | None = None, provider: str | None = None) -> list[str]:
    out = []
    for r in sheet.cloud:
        if gpu is not None and _norm(r.gpu) != _norm(gpu):
            continue
        if provider is not None and r.provider.lower() != provider.lower():
            continue
        out.append(f"{r.provider}/{r.gpu}/{r.pricing}")
    return sorted(out)


def find_price(sheet: PriceSheet, provider: str, gpu: str, pricing: str) -> CloudPrice:
    """The row for (provider, gpu, pricing), or a LifecostError listing what the sheet does have."""
    if pricing not in PRICINGS:
        raise LifecostError(f"unknown pricing {pricing!r}", field="prices.pricing", fix=f"one of {', '.join(PRICINGS)} or on_prem")
    gpu_c = canonical_gpu(gpu)
    key = (provider.lower(), _norm(gpu_c), pricing)
    for r in sheet.cloud:
        if r.key == key:
            return r
    providers = sorted({r.provider for r in sheet.cloud})
    if provider.lower() not in {p.lower() for p in providers}:
        raise LifecostError(f"no prices for provider {provider!r}", field="prices.provider", fix=suggest(provider, providers))
    same_gpu = _available(sheet, gpu=gpu_c)
    if same_gpu:
        fix = "available for this GPU: " + ", ".join(same_gpu) + " (or set prices.usd_per_gpu_hour)"
    else:
        gpus = sorted({r.gpu for r in sheet.cloud})
        fix = "GPUs with prices: " + ", ".join(gpus) + " (or set prices.usd_per_gpu_hour)"
    raise LifecostError(f"no {pricing} price for {gpu_c} on {provider}", field="prices", fix=fix)


def on_prem_for(sheet: PriceSheet, gpu: str) -> OnPremCost:
    """On-prem assumptions for `gpu`: its own entry over the sheet's defaults, all fields required."""
    gpu_c = canonical_gpu(gpu)
    entry = next((v for k, v in sheet.on_prem.gpus.items() if _norm(k) == _norm(gpu_c)), None)
    if entry is None:
        known = ", ".join(sorted(sheet.on_prem.gpus)) or "none"
        raise LifecostError(
            f"no on-prem capex for {gpu_c}",
            field="prices.on_prem",
            fix=f"GPUs with on-prem figures: {known}; add `on_prem: gpus: {{{gpu_c}: {{capex_usd: ...}}}}` to your price sheet",
        )
    d = sheet.on_prem.defaults
    resolved = {}
    for name in ("capex_usd", "depreciation_months", "pue", "usd_per_kwh", "host_overhead_w", "idle_power_fraction"):
        value = getattr(entry, name) if getattr(entry, name) is not None else getattr(d, name)
        if value is None:
            raise LifecostError(f"no `{name}` for {gpu_c}", field="prices.on_prem", fix=f"set on_prem.defaults.{name} or on_prem.gpus.{gpu_c}.{name}")
        resolved[name] = value
    return OnPremCost(gpu=gpu_c, source=entry.source or d.source or "", **resolved)


def price_per_gpu_hour(sheet: PriceSheet, provider: str, gpu: str, pricing: str) -> float:
    """$/GPU-hour for a cloud pricing, or capex-only $/GPU-hour for `pricing="on_prem"`.

    On-prem energy is not included here (it depends on utilisation): see `OnPremCost.energy_usd`.
    """
    if pricing == "on_prem":
        return on_prem_for(sheet, gpu).capex_usd_per_gpu_hour
    return find_price(sheet, provider, gpu, pricing).usd_per_gpu_hour


def price_table(sheet: PriceSheet) -> list[dict]:
    """The cloud rows as plain dicts (for a CLI table or a DataFrame)."""
    return [r.model_dump() for r in sheet.cloud]


@dataclass(frozen=True)
class GpuHourPrice:
    """What one GPU-hour costs in a plan, and where the figure came from.

    For `pricing="on_prem"`, `usd_per_gpu_hour` is capital only and `on_prem` carries the power
    assumptions so the caller charges energy by utilisation; for cloud pricings energy is inside
    the rental price and `on_prem` is None.
    """

    usd_per_gpu_hour: float
    provider: str
    gpu: str
    pricing: str
    source: str
    on_prem: OnPremCost | None = None

    @property
    def label(self) -> str:
        where = "on-prem" if self.pricing == "on_prem" else f"{self.provider} {self.pricing}"
        return f"{self.gpu} {where} ${self.usd_per_gpu_hour:,.3f}/GPU-h"

    def scaled(self, factor: float) -> "GpuHourPrice":
        """The same price multiplied by `factor` (a what-if on the price sheet)."""
        op = self.on_prem
        if op is not None:
            from dataclasses import replace

            op = replace(op, capex_usd=op.capex_usd * factor, usd_per_kwh=op.usd_per_kwh * factor)
        return GpuHourPrice(self.usd_per_gpu_hour * factor, self.provider, self.gpu, self.pricing, f"{self.source} × {factor:g}", op)


def gpu_hour_price(sheet: PriceSheet, provider: str, gpu: str, pricing: str, override_usd: float | None = None) -> GpuHourPrice:
    """Resolve a scenario's `prices:` section to one $/GPU-hour.

    `override_usd` (the scenario's `prices.usd_per_gpu_hour`) replaces the sheet's figure; with
    `on_prem` it replaces the capital part and power is still charged from the sheet.
    """
    gpu_c = canonical_gpu(gpu)
    if pricing == "on_prem":
        op = on_prem_for(sheet, gpu_c)
        if override_usd is not None:
            return GpuHourPrice(override_usd, "on_prem", gpu_c, pricing, "prices.usd_per_gpu_hour (capital part)", op)
        return GpuHourPrice(op.capex_usd_per_gpu_hour, "on_prem", gpu_c, pricing, op.source, op)
    if override_usd is not None:
        if not override_usd > 0:
            raise LifecostError(f"must be > 0, got {override_usd}", field="prices.usd_per_gpu_hour")
        return GpuHourPrice(override_usd, provider, gpu_c, pricing, "prices.usd_per_gpu_hour")
    row = find_price(sheet, provider, gpu_c, pricing)
    return GpuHourPrice(row.usd_per_gpu_hour, row.provider, row.gpu, pricing, f"{row.basis}: {row.source}")
