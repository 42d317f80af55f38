"""The price table: reference-VM default, overrides in the launcher config, clear errors."""

from __future__ import annotations

from decimal import Decimal

import dagster as dg
import pytest

from e2i_pipelines.core.prices import PriceTableError, parse_prices
from e2i_pipelines.monitoring.cost import format_micros, parse_micros, run_cost
from e2i_pipelines.tiers import DEFAULT_PROFILES, Tier, UnknownTierError


def test_default_is_the_reference_vm() -> None:
    table = parse_prices(None)
    hourly = {tier.value: table.price(tier).hourly(DEFAULT_PROFILES[tier]) for tier in Tier}
    # 2 vCPU/2g, 4/8g, 16/32g at 0.032 per vCPU-hour + 0.004 per GB-hour
    assert hourly == {"light": Decimal("0.072"), "medium": Decimal("0.160"), "heavy": Decimal("0.640")}
    assert "docs/deploy.md" in table.source and table.currency == "USD"
    # the reference VM itself: 16 vCPU + 64 GB = 0.768/h
    assert 16 * table.price(Tier.HEAVY).per_vcpu_hour + 64 * table.price(Tier.HEAVY).per_gb_hour == Decimal("0.768")


def test_overrides_per_tier_and_common() -> None:
    table = parse_prices({"currency": "EUR", "per_vcpu_hour": 0.05,
                          "tiers": {"heavy": {"per_hour": "1.25"}, "light": {"per_gb_hour": 0}}})
    assert table.currency == "EUR"
    assert table.price(Tier.HEAVY).hourly(DEFAULT_PROFILES[Tier.HEAVY]) == Decimal("1.25")
    assert table.price(Tier.MEDIUM).hourly(DEFAULT_PROFILES[Tier.MEDIUM]) == Decimal("0.232")
    assert table.price(Tier.LIGHT).hourly(DEFAULT_PROFILES[Tier.LIGHT]) == Decimal("0.10")


@pytest.mark.parametrize(("config", "named"), [
    ({"tiers": {"heavy": {"per_hr": 1}}}, "per_hr"),
    ({"tiers": {"heavy": {"per_hour": -1}}}, "prices.tiers.heavy.per_hour"),
    ({"per_gb_hour": "cheap"}, "prices.per_gb_hour"),
    ({"per_gb_hour": True}, "prices.per_gb_hour"),
    ({"currencies": "EUR"}, "currencies"),
    ({"tiers": {"heavy": 3}}, "prices.tiers.heavy"),
])
def test_bad_prices_name_the_field(config: dict, named: str) -> None:
    with pytest.raises(PriceTableError, match=named.replace(".", r"\.")):
        parse_prices(config)


def test_unknown_tier_is_refused() -> None:
    with pytest.raises(UnknownTierError, match="huge"):
        parse_prices({"tiers": {"huge": {"per_hour": 1}}})


def test_launcher_config_carries_the_prices() -> None:
    launcher = {"module": "e2i_pipelines.launcher.tiered_docker_run_launcher",
                "class": "TieredDockerRunLauncher",
                "config": {"image": "e2i:local", "prices": {"currency": "EUR",
                                                            "tiers": {"heavy": {"per_hour": 2}}}}}
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as instance:
        prices = instance.run_launcher.prices
    assert prices.currency == "EUR" and prices.price(Tier.HEAVY).per_hour == Decimal(2)
    launcher["config"]["prices"] = {"tiers": {"heavy": {"per_hour": "x"}}}
    with (dg.instance_for_test(overrides={"run_launcher": launcher}) as instance,
          pytest.raises(PriceTableError, match="per_hour")):
        instance.run_launcher  # noqa: B018 - the launcher is built on first access


def test_run_cost_is_exact_in_micro_units() -> None:
    table = parse_prices(None)
    heavy = run_cost(Tier.HEAVY, DEFAULT_PROFILES[Tier.HEAVY], table, 100.0, 190.0)
    assert heavy.micros == 16_000 and heavy.tags()["e2i/cost"] == "0.016000"
    assert heavy.basis == ("heavy budget cpus=16 memory=32g: 16 vCPU x 0.032 + 32 GB x 0.004"
                           " = 0.640 USD/h x 90.000 s")
    third = run_cost(Tier.HEAVY, DEFAULT_PROFILES[Tier.HEAVY], table, 0.0, 120.0)
    assert third.micros == 21_333  # 0.0213333.. rounded half up to the micro-unit
    never = run_cost(Tier.LIGHT, DEFAULT_PROFILES[Tier.LIGHT], table, None, None)
    assert never.micros == 0 and "never started" in never.basis


def test_micro_unit_text_round_trips() -> None:
    for micros in (0, 1, 999_999, 1_000_000, 123_456_789):
        assert parse_micros(format_micros(micros)) == micros
    with pytest.raises(ValueError, match="6 decimals"):
        parse_micros("0.0000001")
    with pytest.raises(ValueError, match="not a number"):
        parse_micros("abc")


def test_environment_prices_apply_without_launcher_config(monkeypatch) -> None:
    monkeypatch.setenv("E2I_PRICES", "{currency: EUR, per_vcpu_hour: 0.05, tiers: {heavy: {per_hour: 0.7}}}")
    table = parse_prices(None)
    assert table.currency == "EUR" and table.source == "E2I_PRICES"
    assert table.price(Tier.HEAVY).per_hour == Decimal("0.7")
    assert table.price(Tier.LIGHT).per_vcpu_hour == Decimal("0.05")
    launcher_config = parse_prices({"currency": "GBP"})
    assert launcher_config.currency == "GBP" and launcher_config.source == "run_launcher.config.prices"


def test_bad_environment_prices_name_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("E2I_PRICES", "[1, 2]")
    with pytest.raises(PriceTableError, match="E2I_PRICES"):
        parse_prices(None)
