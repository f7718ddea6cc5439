"""Diagnosis: an error text (barman-cloud's, PostgreSQL's, the operator's or the local
engine's) -> what the operator or the user should do about it.

Both engines report failures as text in CNPG's status fields; these functions match known
fragments of it, case-insensitively, and answer ``None`` for anything they do not know.
"""

from __future__ import annotations

_CREDENTIAL_MARKERS = (
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "accessdenied",
    "nocredentialserror",
    "unable to locate credentials",
    "403",
    "forbidden",
)
_ENDPOINT_MARKERS = (
    "could not connect to the endpoint",
    "endpointconnectionerror",
    "cannot reach endpoint",
    "connection refused",
    "connect timeout",
    "timed out",
    "name or service not known",
    "temporary failure in name resolution",
)


def diagnose(error: str | None, *, secret_name: str = "ovh-s3-creds") -> str | None:
    """Turn a backup/archiving error into what the operator should do: the four ways the
    archive fails in practice are a missing Secret, a missing bucket, keys the store refuses
    and an endpoint the database pods cannot reach."""
    if not error:
        return None
    text = error.lower()
    if (
        "secret" in text
        and secret_name.lower() in text
        and ("not found" in text or "missing" in text or "key" in text)
    ):
        return (
            f"The Secret {secret_name!r} is missing or lacks AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY. Re-run the operator runbook: kubectl create secret generic "
            f"{secret_name} --namespace <namespace> --from-literal=AWS_ACCESS_KEY_ID=... "
            "--from-literal=AWS_SECRET_ACCESS_KEY=..."
        )
    if "nosuchbucket" in text or "bucket does not exist" in text:
        return (
            "The backup bucket does not exist; barman-cloud does not create it. Create the "
            "bucket (operator runbook step 1), then the next backup and WAL archive succeed."
        )
    if any(marker in text for marker in _CREDENTIAL_MARKERS):
        return (
            f"The object store refused the credentials in the Secret {secret_name!r}. Check "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (operator runbook step 2-3); archiving "
            "resumes by itself once they are fixed."
        )
    if any(marker in text for marker in _ENDPOINT_MARKERS):
        return (
            "The S3 endpoint cannot be reached. Check the endpoint URL and that a "
            "NetworkPolicy allows egress from the database pods to the S3 endpoint (an "
            "allow-https-egress exception for its CIDR)."
        )
    return None


# What PostgreSQL tells clients while it starts or stops. Such a state passes by itself: it is
# never why a recovery failed, and never a reason to report.
TRANSIENT_SERVER_STATES = (
    "the database system is starting up",
    "the database system is not yet accepting connections",
    "consistent recovery state has not been yet reached",
    "the database system is not accepting connections",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "terminating connection due to administrator command",
)

_PICK_ANOTHER_BACKUP = (
    "pick an instant another base backup serves (after the end of a newer one, or before "
    "the start of this one when an older one exists), and take a new base backup"
)
# (markers, hint), most specific first. A local-engine reason may carry PostgreSQL's message
# and, after it, the restore_command's error. Checked before the object-store diagnosis:
# our own timeouts, which say "timed out" like an unreachable endpoint.
_RECOVERY_HINTS_FIRST: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        (
            "recovery did not finish within",
            "barman-cloud-restore timed out",
            "base backup restore timed out",
        ),
        "The restore took longer than the restore timeout: restore to an instant closer to "
        "a base backup's end, or raise PAAS_PITR_RESTORE_TIMEOUT_SECONDS.",
    ),
)
# Checked after it: a store refusing our keys also fails barman-cloud-restore and the
# restore_command, and is fixed in the store, not by another target.
_RECOVERY_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("requested recovery stop point is before consistent recovery point",),
        "The target is before the base backup it was restored from is consistent: pick a "
        "later instant inside a restorable range (GET .../backups of the addon, or "
        "GET .../incarnations for a deleted one).",
    ),
    (
        # Before the gap: WAL missing before the backup's end is the backup's own.
        (
            "could not locate required checkpoint record",
            "could not locate a valid checkpoint record",
            "invalid checkpoint record",
            "wal ends before end of online backup",
            "wal ends before consistent recovery point",
            "barman-cloud-restore failed",
            "base backup restore failed",
        ),
        "The base backup is damaged or incomplete (its files, or the WAL written while it was "
        f"taken, cannot be read from the archive): {_PICK_ANOTHER_BACKUP}.",
    ),
    (
        ("has a gap",),
        "A WAL segment the target needs is missing from the archive, which holds later "
        "segments: instants after the gap cannot be reached from this base backup. Pick an "
        "instant before the gap, or one after the end of a base backup taken after it.",
    ),
    (
        ("recovery ended before configured recovery target was reached",),
        "The target is after the newest WAL the archive holds (on an idle database, after "
        "its last archived commit): pick an instant inside a restorable range (GET "
        ".../backups of the addon, or GET .../incarnations for a deleted one); on a live "
        "addon the range grows as WAL is archived.",
    ),
    (
        ("expected empty archive",),
        "The new cluster's own archive folder already holds files, so it would mix two "
        "histories: delete that folder or request the restore again (a new restore gets a "
        "new cluster name).",
    ),
    (
        ("no target backup found",),
        "No completed base backup ends before the target: pick an instant after the end of "
        "the oldest completed backup (the window's earliest).",
    ),
)


def _first_hint(text: str, table: tuple[tuple[tuple[str, ...], str], ...]) -> str | None:
    for markers, hint in table:
        if any(marker in text for marker in markers):
            return hint
    return None


def diagnose_recovery(reason: str | None) -> str | None:
    """What to do about a failed restore, from its reason (PostgreSQL's, barman-cloud's or
    the engine's text, as ``restore_state`` returns it for either engine).

    ``None`` for no reason, an unknown one, or a transient server state (which is never
    the cause of a failure). Matching is case-insensitive on known message fragments.
    """
    if not reason:
        return None
    text = reason.lower()
    if any(text.strip().rstrip(".") == state for state in TRANSIENT_SERVER_STATES):
        return None
    return (
        _first_hint(text, _RECOVERY_HINTS_FIRST)
        or diagnose(reason)
        or _first_hint(text, _RECOVERY_HINTS)
    )
