from __future__ import annotations

import pytest

from paas_pitr.errors import UnknownPlan
from paas_pitr.plans import Tier, parse_tier, policy_for, tier_for_plan


@pytest.mark.parametrize(
    ("plan", "tier", "retention"),
    [("free", Tier.NONE, None), ("standard", Tier.DAILY, "7d"), ("pro", Tier.PITR, "35d")],
)
def test_plan_maps_to_tier_and_retention(plan: str, tier: Tier, retention: str | None) -> None:
    assert tier_for_plan(plan) is tier
    assert policy_for(tier).retention == retention


def test_only_pro_offers_point_in_time() -> None:
    assert [t for t in Tier if policy_for(t).point_in_time] == [Tier.PITR]
    assert not policy_for(Tier.NONE).has_backups


def test_unknown_plan_names_the_valid_ones() -> None:
    with pytest.raises(UnknownPlan) as caught:
        tier_for_plan("enterprise")
    assert caught.value.code == "unknown_plan"
    assert "free, standard, pro" in caught.value.message


def test_unknown_tier_is_refused() -> None:
    with pytest.raises(UnknownPlan, match="valid tiers: none, daily, pitr"):
        parse_tier("hourly")
