from __future__ import annotations

from paas_pitr.verification import CheckResult, VerificationReport


def test_a_report_passes_only_when_every_check_passed() -> None:
    good = CheckResult("promoted_and_writable", True, {"in_recovery": False}, None)
    bad = CheckResult("amcheck", False, {"index": "public.t_pkey"}, "item order invariant")
    later = CheckResult("user_tables", False, {}, "permission denied")

    assert VerificationReport((good,)).passed is True
    assert VerificationReport((good,)).failing is None
    report = VerificationReport((good, bad, later))
    assert report.passed is False
    assert report.failing == bad


def test_an_empty_report_proves_nothing() -> None:
    assert VerificationReport(()).passed is False


def test_a_report_serialises_every_check_in_order() -> None:
    report = VerificationReport(
        (
            CheckResult("promoted_and_writable", True, {"timeline": 2}),
            CheckResult("reached_target", False, {"distance_seconds": -1.5}, "went past"),
        )
    )
    assert report.to_dict() == {
        "passed": False,
        "checks": [
            {
                "name": "promoted_and_writable",
                "passed": True,
                "figures": {"timeline": 2},
                "reason": None,
            },
            {
                "name": "reached_target",
                "passed": False,
                "figures": {"distance_seconds": -1.5},
                "reason": "went past",
            },
        ],
    }
