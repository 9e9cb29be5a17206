"""The price sheet: dated rows with sources, lookups that explain what is missing, user overrides."""

from __future__ import annotations

import pytest
import yaml

from models.errors import LifecostError
from models.prices import HOURS_PER_MONTH, PRICINGS, load_prices, on_prem_for, price_per_gpu_hour

CATALOG_GPUS = ["H100-SXM", "H100-PCIe", "H200", "A100-80GB", "A100-40GB", "L40S", "L4", "RTX-4090", "B200", "MI300X"]


def test_bundled_sheet_is_dated_usd_and_every_row_has_a_source_and_basis():
    sheet = load_prices()
    assert sheet.as_of.startswith("2026-")
    assert sheet.currency == "USD"
    assert {r.provider for r in sheet.cloud} >= {"aws", "gcp", "azure", "lambda", "coreweave", "runpod"}
    for r in sheet.cloud:
        assert r.source.strip() and r.basis in ("list", "estimate")
    assert any(r.basis == "list" for r in sheet.cloud) and any(r.basis == "estimate" for r in sheet.cloud)


def test_every_catalog_gpu_has_a_cloud_price_and_on_prem_assumptions():
    sheet = load_prices()
    priced = {r.gpu for r in sheet.cloud}
    for gpu in CATALOG_GPUS:
        assert gpu in priced, gpu
        op = on_prem_for(sheet, gpu)
        assert op.capex_usd > 0 and op.depreciation_months > 0 and op.pue >= 1.0


def test_commitments_and_spot_are_never_dearer_than_on_demand_for_the_same_provider_and_gpu():
    sheet = load_prices()
    od = {(r.provider, r.gpu): r.usd_per_gpu_hour for r in sheet.cloud if r.pricing == "on_demand"}
    for r in sheet.cloud:
        if r.pricing != "on_demand" and (r.provider, r.gpu) in od:
            assert r.usd_per_gpu_hour <= od[(r.provider, r.gpu)], (r.provider, r.gpu, r.pricing)
    for a, b in [("reserved_1y", "reserved_3y")]:
        rows = {(r.provider, r.gpu, r.pricing): r.usd_per_gpu_hour for r in sheet.cloud}
        for (p, g, pr), v in rows.items():
            if pr == a and (p, g, b) in rows:
                assert rows[(p, g, b)] <= v


def test_lookup_is_insensitive_to_case_and_punctuation_of_the_gpu_name():
    sheet = load_prices()
    assert price_per_gpu_hour(sheet, "AWS", "h100 sxm", "on_demand") == price_per_gpu_hour(sheet, "aws", "H100-SXM", "on_demand")


def test_missing_combination_lists_what_is_available_for_that_gpu():
    sheet = load_prices()
    with pytest.raises(LifecostError) as e:
        price_per_gpu_hour(sheet, "aws", "H200", "spot")
    msg = str(e.value)
    assert "no spot price for H200 on aws" in msg
    assert "aws/H200/on_demand" in msg and "runpod/H200/on_demand" in msg


def test_unknown_provider_suggests_the_nearest():
    with pytest.raises(LifecostError, match="did you mean 'aws'"):
        price_per_gpu_hour(load_prices(), "awz", "H100-SXM", "on_demand")


def test_on_prem_price_is_capex_amortised_over_the_depreciation_period():
    sheet = load_prices()
    op = on_prem_for(sheet, "H100-SXM")
    hourly = price_per_gpu_hour(sheet, "ignored", "H100-SXM", "on_prem")
    assert hourly == pytest.approx(op.capex_usd / (op.depreciation_months * HOURS_PER_MONTH))
    assert op.energy_usd(1000.0) == pytest.approx(1000.0 * op.pue * op.usd_per_kwh)


def test_user_sheet_replaces_matching_rows_adds_new_ones_and_merges_on_prem(tmp_path):
    user = {
        "as_of": "2026-12-01",
        "cloud": [
            {"provider": "aws", "gpu": "h100-sxm", "pricing": "on_demand", "usd_per_gpu_hour": 4.0, "basis": "list", "source": "our EDP quote 2026-12"},
            {"provider": "acme", "gpu": "L4", "pricing": "spot", "usd_per_gpu_hour": 0.2, "basis": "estimate", "source": "acme"},
        ],
        "on_prem": {"defaults": {"usd_per_kwh": 0.30}, "gpus": {"h100-sxm": {"capex_usd": 20000}}},
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(user))
    base = load_prices()
    sheet = load_prices(path)
    assert sheet.as_of == "2026-12-01"
    assert price_per_gpu_hour(sheet, "aws", "H100-SXM", "on_demand") == 4.0
    assert price_per_gpu_hour(sheet, "acme", "L4", "spot") == 0.2
    assert len(sheet.cloud) == len(base.cloud) + 1
    op = on_prem_for(sheet, "H100-SXM")
    assert op.capex_usd == 20000 and op.usd_per_kwh == 0.30
    assert op.host_overhead_w == on_prem_for(base, "H100-SXM").host_overhead_w  # untouched fields kept


@pytest.mark.parametrize(
    "text, match",
    [
        ("cloud: [{provider: aws, gpu: L4, pricing: spot, usd_per_gpu_hour: -1, basis: list, source: x}]", "greater than 0"),
        ("currency: EUR", "currency"),
        ("- just\n- a list", "mapping"),
        ("cloud: [{provider: aws", "not valid YAML"),
        ("!!python/object/apply:os.system ['true']", "not valid YAML"),
    ],
)
def test_bad_user_sheet_is_a_one_line_error_naming_the_file(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(LifecostError, match=match) as e:
        load_prices(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_missing_user_sheet_and_oversized_sheet_are_refused(tmp_path):
    with pytest.raises(LifecostError, match="no such file"):
        load_prices(tmp_path / "nope.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * 2_100_000)
    with pytest.raises(LifecostError, match="at most"):
        load_prices(big)


def test_pricings_cover_the_scenario_choices():
    from typing import get_args

    from simulator.scenario import PricesSpec

    scenario_choices = set(get_args(PricesSpec.model_fields["pricing"].annotation))
    assert scenario_choices == set(PRICINGS) | {"on_prem"}
