"""Price table per tier: per vCPU-hour + per GB-hour, or a flat per tier-hour.

Default (no ``prices`` in the launcher config): the reference heavy VM of docs/deploy.md
(16 vCPU, 64 GB), priced at an assumed on-demand list price of 0.768 USD/h (a general-purpose
16 vCPU / 64 GiB instance, e.g. AWS m6i.4xlarge on-demand, Linux, us-east-1; check your own
price), split 2/3 CPU and 1/3 memory: 0.032 USD per vCPU-hour and 0.004 USD per GB-hour
(16 x 0.032 + 64 x 0.004 = 0.768). A GB is what Docker's ``g`` means (GiB). Override in
dagster.yaml under ``run_launcher.config.prices``::

    prices:
      currency: EUR
      per_vcpu_hour: 0.03          # every tier, unless the tier says otherwise
      per_gb_hour: 0.004
      tiers:
        heavy: {per_hour: 0.70}    # flat price per heavy-run hour

or, without touching dagster.yaml, in the environment (e.g. docker/.env): ``E2I_PRICES`` holds the
same mapping as YAML/JSON, ``E2I_PRICES={currency: EUR, per_vcpu_hour: 0.03}``. The launcher config
wins over the environment, the environment over the default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from e2i_pipelines.tiers import Tier, TierProfile, parse_bytes, parse_tier

DEFAULT_CURRENCY = "USD"
DEFAULT_PER_VCPU_HOUR = Decimal("0.032")
DEFAULT_PER_GB_HOUR = Decimal("0.004")
REFERENCE_VM = ("reference heavy VM of docs/deploy.md (16 vCPU, 64 GB) at an assumed 0.768 USD/h:"
                " 0.032 USD per vCPU-hour + 0.004 USD per GB-hour")
PRICE_FIELDS = ("per_vcpu_hour", "per_gb_hour", "per_hour")
GIB = 1024**3
PRICES_ENV = "E2I_PRICES"


class PriceTableError(ValueError):
    """The ``prices`` config is malformed (the message names the field)."""


@dataclass(frozen=True)
class TierPrice:
    """Price of one tier: flat ``per_hour``, else ``per_vcpu_hour`` x cpus + ``per_gb_hour`` x GB."""

    per_vcpu_hour: Decimal = DEFAULT_PER_VCPU_HOUR
    per_gb_hour: Decimal = DEFAULT_PER_GB_HOUR
    per_hour: Decimal | None = None

    def hourly(self, profile: TierProfile) -> Decimal:
        """Price of one hour of ``profile``'s budget."""
        if self.per_hour is not None:
            return self.per_hour
        return (Decimal(str(profile.cpus)) * self.per_vcpu_hour
                + gigabytes(profile.memory) * self.per_gb_hour)

    def describe(self, profile: TierProfile, currency: str) -> str:
        """How the hourly price is made, e.g. ``16 vCPU x 0.032 + 32 GB x 0.004 = 0.640 USD/h``."""
        hourly = self.hourly(profile)
        if self.per_hour is not None:
            return f"flat {hourly} {currency}/h"
        return (f"{Decimal(str(profile.cpus)).normalize():f} vCPU x {self.per_vcpu_hour} + "
                f"{gigabytes(profile.memory).normalize():f} GB x {self.per_gb_hour} = {hourly} {currency}/h")


@dataclass(frozen=True)
class PriceTable:
    """Prices of every tier in one currency, and where they came from."""

    tiers: Mapping[Tier, TierPrice]
    currency: str = DEFAULT_CURRENCY
    source: str = REFERENCE_VM

    def price(self, tier: Tier) -> TierPrice:
        return self.tiers[tier]


def gigabytes(size: str | int) -> Decimal:
    """A Docker size as exact GB (GiB): '32g' -> 32, '512m' -> 0.5."""
    return Decimal(parse_bytes(size)) / Decimal(GIB)


def _money(value: Any, where: str) -> Decimal:
    if isinstance(value, bool):
        raise PriceTableError(f"{where}: {value!r} is not a price")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise PriceTableError(f"{where}: {value!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise PriceTableError(f"{where}: price must be a finite number >= 0, got {value!r}")
    return amount


def _prices(fields: Mapping[str, Any], base: TierPrice, where: str) -> TierPrice:
    unknown = sorted(set(fields) - set(PRICE_FIELDS))
    if unknown:
        raise PriceTableError(f"{where}: unknown field(s) {unknown}; allowed: {list(PRICE_FIELDS)}")
    values = {name: _money(fields[name], f"{where}.{name}") for name in PRICE_FIELDS if name in fields}
    return TierPrice(per_vcpu_hour=values.get("per_vcpu_hour", base.per_vcpu_hour),
                     per_gb_hour=values.get("per_gb_hour", base.per_gb_hour),
                     per_hour=values.get("per_hour", base.per_hour))


def prices_from_env() -> Mapping[str, Any] | None:
    """The ``E2I_PRICES`` mapping (YAML or JSON), or None when unset or empty."""
    text = os.environ.get(PRICES_ENV, "").strip()
    if not text:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PriceTableError(f"{PRICES_ENV} is not YAML/JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise PriceTableError(f"{PRICES_ENV} must be a mapping like the launcher's prices, got {text!r}")
    return value


def parse_prices(config: Mapping[str, Any] | None) -> PriceTable:
    """The price table from the launcher config's ``prices``, else ``E2I_PRICES``, else the
    reference-VM default."""
    source = "run_launcher.config.prices"
    if not config:
        config, source = prices_from_env(), PRICES_ENV
    if not config:
        return PriceTable(tiers={tier: TierPrice() for tier in Tier})
    if not isinstance(config, Mapping):
        raise PriceTableError(f"prices must be a mapping, got {type(config).__name__}")
    allowed = {"currency", "tiers", *PRICE_FIELDS}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise PriceTableError(f"prices: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    currency = str(config.get("currency", DEFAULT_CURRENCY)).strip()
    if not currency:
        raise PriceTableError("prices.currency must not be empty")
    common = _prices({k: v for k, v in config.items() if k in PRICE_FIELDS}, TierPrice(), "prices")
    per_tier = config.get("tiers") or {}
    if not isinstance(per_tier, Mapping):
        raise PriceTableError("prices.tiers must map tier names to prices")
    tiers = {tier: common for tier in Tier}
    for name, fields in per_tier.items():
        tier = parse_tier(name)
        if not isinstance(fields, Mapping):
            raise PriceTableError(f"prices.tiers.{name} must be a mapping of {list(PRICE_FIELDS)}")
        tiers[tier] = _prices(fields, common, f"prices.tiers.{name}")
    return PriceTable(tiers=tiers, currency=currency, source=source)
