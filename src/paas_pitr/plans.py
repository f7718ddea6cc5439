"""Addon plan -> backup tier, and what each tier promises."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from paas_pitr.errors import UnknownPlan


class Tier(StrEnum):
    NONE = "none"
    DAILY = "daily"
    PITR = "pitr"


@dataclass(frozen=True, slots=True)
class TierPolicy:
    tier: Tier
    retention: str | None
    """CNPG/Barman recovery-window retention (``^[1-9][0-9]*[dwm]$``)."""
    retention_days: int | None
    scheduled_base_backups: bool
    point_in_time: bool
    """Whether any instant of the window may be targeted, or only a base backup's end."""

    @property
    def has_backups(self) -> bool:
        return self.tier is not Tier.NONE


TIER_POLICIES: dict[Tier, TierPolicy] = {
    Tier.NONE: TierPolicy(Tier.NONE, None, None, False, False),
    # CNPG cannot take object-store base backups without a WAL archive (a backup's own WAL
    # is archived to make it consistent), so
    # the daily tier archives WAL too; it just only offers base backups as restore targets.
    Tier.DAILY: TierPolicy(Tier.DAILY, "7d", 7, True, False),
    Tier.PITR: TierPolicy(Tier.PITR, "35d", 35, True, True),
}

PLAN_TIERS: dict[str, Tier] = {
    "free": Tier.NONE,
    "standard": Tier.DAILY,
    "pro": Tier.PITR,
}


def tier_for_plan(plan: str) -> Tier:
    try:
        return PLAN_TIERS[plan]
    except KeyError:
        valid = ", ".join(PLAN_TIERS)
        raise UnknownPlan(
            f"unknown plan {plan!r}; valid plans: {valid}",
            details={"plan": plan, "valid_plans": list(PLAN_TIERS)},
        ) from None


def parse_tier(value: str) -> Tier:
    try:
        return Tier(value)
    except ValueError:
        valid = ", ".join(t.value for t in Tier)
        raise UnknownPlan(
            f"unknown backup tier {value!r}; valid tiers: {valid}",
            details={"tier": value, "valid_tiers": [t.value for t in Tier]},
        ) from None


def policy_for(tier: Tier) -> TierPolicy:
    return TIER_POLICIES[tier]
