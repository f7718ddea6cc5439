"""CLI commands that talk to a running server: addons, backups, restore (with progress)."""

from __future__ import annotations

import json
import os
import time
import uuid
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from paas_pitr.cli_tables import (
    Output,
    OutputOption,
    id_column,
    instant_column,
    print_table,
    text_column,
)
from paas_pitr.client import ApiError, PitrClient
from paas_pitr.errors import InvalidInput, PitrError

# soft_wrap: a message piped to a file or a log must not be cut into lines mid-instant.
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

UrlOption = Annotated[
    str | None, typer.Option("--url", help="API base URL (PAAS_PITR_URL; default local server)")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Bearer token (PAAS_PITR_TOKEN)", show_default=False)
]
AppOption = Annotated[str, typer.Option("--app", help="App id")]
AddonOption = Annotated[str, typer.Option("--addon", help="Addon id, e.g. db-acme-app-1")]
JsonOption = Annotated[bool, typer.Option("--json", help="Same as --output json", hidden=True)]


def _client(url: str | None, token: str | None) -> PitrClient:
    from paas_pitr.settings import load_settings

    settings = load_settings()
    base = url or os.environ.get("PAAS_PITR_URL") or f"http://{settings.host}:{settings.port}"
    token = token or os.environ.get("PAAS_PITR_TOKEN")
    if not token:
        raise InvalidInput(
            "no token: pass --token or set PAAS_PITR_TOKEN "
            "(mint one with `paas-pitr token create --tenant NAME`)"
        )
    return PitrClient(base, token)


def _fail(exc: PitrError) -> typer.Exit:
    code = f" [{exc.api_code}]" if isinstance(exc, ApiError) else ""
    typer.echo(f"paas-pitr: error{code}: {exc.message}", err=True)
    window = exc.details.get("window") if exc.details else None
    if window:
        ranges = window.get("ranges") or []
        if ranges:
            for index, restorable in enumerate(ranges, 1):
                typer.echo(
                    f"paas-pitr: restorable range {index}: "
                    f"{restorable.get('earliest')} .. {restorable.get('latest')}",
                    err=True,
                )
        else:
            typer.echo(
                f"paas-pitr: recoverability window: {window.get('state', 'unknown')}", err=True
            )
    return typer.Exit(2 if isinstance(exc, (InvalidInput, ApiError)) else 1)


class _Progress:
    """What a long command waits for: a spinner on a terminal; anywhere else (a pipe, a CI
    log) one line on stderr per change of state, with the elapsed time."""

    def __init__(self, state: str) -> None:
        self.started = time.monotonic()
        self.state = state
        self._status: Any = None

    def __enter__(self) -> _Progress:
        if console.is_terminal:
            self._status = console.status(self.state)
            self._status.__enter__()
        else:
            console.print(f"{self.state} (0s)", markup=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)

    def update(self, state: str) -> None:
        elapsed = f"({time.monotonic() - self.started:.0f}s)"
        if self._status is not None:
            self._status.update(f"{state} {elapsed}")
        elif state != self.state:
            console.print(f"{state} {elapsed}", markup=False)
        self.state = state


def _print(data: Any) -> None:
    out.print_json(json.dumps(data))


def _awaiting(client: PitrClient, app: str, addon: dict[str, Any]) -> str | None:
    """What an addon still waits for before it is usable (``None``: nothing): the database
    answering and, on a plan with backups, a restorable instant (the window open)."""
    if not addon["ready"]:
        return f"the database to start ({addon.get('phase') or 'starting'})"
    if addon.get("backups") is None:
        return None
    window = client.backups(app, addon["addon_id"], per_page=1)["window"]
    if window["state"] == "open":
        return None
    if window["state"] == "opening":
        return f"the recoverability window to open (expected by {window.get('opens_at')})"
    return "the first base backup to complete"


addons_app = typer.Typer(help="Addons of an app (talks to a running server).")
backups_app = typer.Typer(help="Base backups and the WAL archive of an addon.")


@addons_app.command("create")
def addons_create(
    app: AppOption,
    plan: Annotated[str, typer.Option(help="free, standard or pro")],
    version: Annotated[str | None, typer.Option(help="PostgreSQL major version")] = None,
    addon_id: Annotated[str | None, typer.Option("--addon-id")] = None,
    wait: Annotated[
        bool, typer.Option(help="Wait until the database is ready and first backed up")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create an addon on a plan."""
    try:
        with _client(url, token) as client:
            addon = client.create_addon(app, plan, version, addon_id)
            if wait:
                awaited = _awaiting(client, app, addon)
                with _Progress(f"waiting for {awaited}") as progress:
                    # Ready means usable: the database answers and, on a plan with
                    # backups, an instant can be restored (the window is open).
                    while awaited is not None:
                        time.sleep(1)
                        addon = client.addon(app, addon["addon_id"])
                        awaited = _awaiting(client, app, addon)
                        if awaited is not None:
                            progress.update(f"waiting for {awaited}")
                if addon.get("backups") is None:
                    console.print(
                        f"{addon['addon_id']} is ready; its plan ({addon['plan']}) has no "
                        "backups, so it cannot be restored"
                    )
                else:
                    console.print(f"{addon['addon_id']} is ready and restorable")
    except PitrError as exc:
        raise _fail(exc) from exc
    _print(addon)


@addons_app.command("list")
def addons_list(app: AppOption, url: UrlOption = None, token: TokenOption = None) -> None:
    """List the addons of an app."""
    try:
        with _client(url, token) as client:
            _print(client.addons(app))
    except PitrError as exc:
        raise _fail(exc) from exc


@addons_app.command("show")
def addons_show(
    app: AppOption, addon: AddonOption, url: UrlOption = None, token: TokenOption = None
) -> None:
    """One addon, with its connection details where the engine knows them."""
    try:
        with _client(url, token) as client:
            _print(client.addon(app, addon))
    except PitrError as exc:
        raise _fail(exc) from exc


@backups_app.command("list")
def backups_list(
    app: AppOption,
    addon: AddonOption,
    output: OutputOption = Output.TABLE,
    json_output: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Base backups, the WAL archive and the recoverability window."""
    try:
        with _client(url, token) as client:
            listing = client.backups(app, addon)
    except PitrError as exc:
        raise _fail(exc) from exc
    if json_output or output is Output.JSON:
        _print(listing)
        return
    window = listing["window"]
    wal = listing["wal_archive"]
    out.print(f"recoverability window: {window['state']}", markup=False)
    if window.get("message"):
        out.print(f"  {window['message']}", markup=False)
    for restorable in window.get("ranges") or []:
        out.print(
            f"  restorable: {restorable['earliest']} .. {restorable['latest']}"
            + ("" if restorable["current"] else f" (ended: {restorable['ended_because']})"),
            markup=False,
        )
    for point in window.get("restore_points") or []:
        out.print(f"  restore point: {point['at']} (backup {point['backup_id']})", markup=False)
    out.print(f"WAL archive: {wal['status']}" + (f" ({wal['reason']})" if wal["reason"] else ""))
    if wal.get("hint"):
        out.print(f"  hint: {wal['hint']}")
    table = Table()
    id_column(table, "backup id")
    id_column(table, "status")
    instant_column(table, "started")
    instant_column(table, "ended")
    text_column(table, "error")
    for item in listing["items"]:
        table.add_row(
            item["backup_id"] or item["name"],
            item["status"],
            item["started_at"] or "",
            item["stopped_at"] or "",
            item["error"] or "",
        )
    print_table(out, table)


@backups_app.command("create")
def backups_create(
    app: AppOption,
    addon: AddonOption,
    wait: Annotated[bool, typer.Option(help="Wait until the backup completes")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Take an on-demand base backup."""
    try:
        with _client(url, token) as client:
            backup = client.create_backup(app, addon)
            if wait:
                with _Progress(f"backup {backup['name']}: {backup['status']}") as progress:
                    while backup["status"] not in ("completed", "failed"):
                        time.sleep(1)
                        items = client.backups(app, addon, per_page=500)["items"]
                        backup = next(b for b in items if b["name"] == backup["name"])
                        progress.update(f"backup {backup['name']}: {backup['status']}")
    except PitrError as exc:
        raise _fail(exc) from exc
    _print(backup)
    if backup["status"] == "failed":
        raise typer.Exit(1)


def _restore_phase(restore: dict[str, Any]) -> str:
    phases = {
        "restore_triggered": "restore triggered: waiting for the new cluster to start",
        "recovering": "recovering: restoring the base backup and replaying WAL",
        "ready": "ready",
        "verifying": "verifying: checking the restored cluster before the switch",
        "switching": "switching: the addon's connection moves to the restored data",
        "switched": "switched: the addon serves the restored data (undo: `restores undo`)",
        "undoing": "undoing: switching the addon back",
        "undone": "undone: the addon serves its data from before the switch",
        "failed": "failed",
    }
    return phases.get(restore["status"], str(restore["status"]))


def _wait_restore(
    client: PitrClient,
    app: str,
    addon: str,
    restore: dict[str, Any],
    deadline: float | None = None,
) -> dict[str, Any]:
    """Poll ``restore`` until it ends (:data:`FINISHED_STATUSES`), printing each phase;
    returns the last state seen, finished or not when ``deadline`` (monotonic) passed."""
    from paas_pitr.restore_views import FINISHED_STATUSES

    with _Progress(_restore_phase(restore)) as progress:
        while restore["status"] not in FINISHED_STATUSES:
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(1)
            restore = client.restore_status(app, addon, restore["restore_id"])
            progress.update(_restore_phase(restore))
    return restore


class RestoreTarget(StrEnum):
    NEW_CLUSTER = "new_cluster"
    IN_PLACE = "in_place"


def restore_command(
    app: AppOption,
    addon: AddonOption,
    timestamp: Annotated[
        str | None, typer.Option(help="ISO 8601 instant with offset (…Z), or 'latest'")
    ] = None,
    lsn: Annotated[str | None, typer.Option(help="A WAL position, X/Y")] = None,
    xid: Annotated[str | None, typer.Option(help="A transaction id")] = None,
    restore_point: Annotated[
        str | None, typer.Option("--restore-point", help="A named restore point")
    ] = None,
    before_event: Annotated[
        str | None, typer.Option("--before-event", help="An event id from `events list`")
    ] = None,
    exclusive: Annotated[
        bool, typer.Option(help="Stop just before the timestamp, LSN or transaction")
    ] = False,
    target: Annotated[
        RestoreTarget,
        typer.Option(
            "--target",
            help="new_cluster: the addon is never touched; in_place: the restored cluster is "
            "verified, then put behind the addon's unchanged connection (undo with "
            "`restores undo`)",
        ),
    ] = RestoreTarget.NEW_CLUSTER,
    wait: Annotated[
        bool,
        typer.Option(help="Wait until the restore ends: ready, or switched when in place"),
    ] = True,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Restore an addon to one recovery target: into a NEW cluster (the addon is never
    touched), or in place (--target in_place: restored, verified, then switched)."""
    key = uuid.uuid4().hex  # a retry of this command after a network error creates nothing new
    body: dict[str, Any] = {
        name: value
        for name, value in (
            ("timestamp", timestamp),
            ("lsn", lsn),
            ("xid", xid),
            ("restore_point", restore_point),
            ("before_event", before_event),
        )
        if value is not None
    }
    if exclusive:
        body["inclusive"] = False
    if target is RestoreTarget.IN_PLACE:
        body["target"] = target.value
    try:
        with _client(url, token) as client:
            restore = client.restore(app, addon, timestamp, idempotency_key=key, target=body)
            into = "in place, through" if target is RestoreTarget.IN_PLACE else "new"
            console.print(
                f"restore {restore['restore_id']}: {into} cluster {restore['cluster_name']}"
                + (f" from backup {restore['backup_id']}" if restore.get("backup_id") else "")
            )
            if restore.get("message"):
                console.print(restore["message"], markup=False)
            if wait:
                restore = _wait_restore(client, app, addon, restore)
    except PitrError as exc:
        raise _fail(exc) from exc
    _print(restore)
    if restore["status"] == "failed":
        raise typer.Exit(1)


events_app = typer.Typer(help="Destructive events found in the WAL archive.")
points_app = typer.Typer(help="Named restore points.")


@events_app.command("list")
def events_list(
    app: AppOption,
    addon: AddonOption,
    start: Annotated[
        str | None, typer.Option("--from", help="ISO 8601 with offset; default: an hour ago")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Default: now")] = None,
    kind: Annotated[
        str | None, typer.Option(help="drop, truncate, delete, update (comma-separated)")
    ] = None,
    min_rows: Annotated[int | None, typer.Option("--min-rows", min=1)] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the scan")] = 600,
    newest: Annotated[
        bool,
        typer.Option(
            "--newest",
            help="A range longer than one scan may read: scan its newest part (instead of "
            "refusing it); the output says from when it is complete",
        ),
    ] = False,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Show the scan's progress (WAL segments decoded) on stderr; default: when "
            "stderr is a terminal",
        ),
    ] = None,
    output: OutputOption = Output.TABLE,
    json_output: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Transactions that dropped or truncated relations, or deleted/updated many rows, with
    the id to restore before each (`restore --before-event ID`)."""
    params = {
        name: str(value)
        for name, value in (("from", start), ("to", end), ("kind", kind), ("min_rows", min_rows))
        if value is not None
    }
    if newest:
        params["bound"] = "newest"
    show = console.is_terminal if progress is None else progress
    try:
        with _client(url, token) as client:
            if show:
                with _Progress("scanning the WAL archive") as waiting:
                    listing = client.events_streamed(
                        app, addon, params, timeout, lambda step: waiting.update(_scanned(step))
                    )
            else:
                listing = client.events(app, addon, params, timeout)
    except PitrError as exc:
        raise _fail(exc) from exc
    if json_output or output is Output.JSON:
        _print(listing)
        return
    scan = listing["scan"]
    out.print(
        f"scanned {scan['segments']} WAL segments ({scan['mib']} MiB) in {scan['seconds']} s",
        markup=False,
    )
    if scan.get("limited_from"):
        console.print(
            f"warning: the range holds more WAL than one scan may read: only events committed "
            f"since {scan['limited_from']} were looked for",
            markup=False,
        )
    for warning in scan["warnings"]:
        console.print(f"warning: {warning}", markup=False)
    # One line per event, its id first: a table would cut ids to the terminal's width.
    for event in listing["items"]:
        relations = ", ".join(r["name"] or r["file_node"] for r in event["relations"][:3])
        more = f" (+{len(event['relations']) - 3})" if len(event["relations"]) > 3 else ""
        rows = "" if event["rows"] is None else f" rows={event['rows']}"
        out.print(
            f"{event['id']}  {event['committed_at']}  {event['kind']}  xid={event['xid']}"
            f"{rows}  {relations}{more}",
            markup=False,
        )


def _scanned(step: dict[str, int]) -> str:
    mib = 1024 * 1024
    return (
        f"scanning the WAL archive: {step['segments_done']}/{step['segments_total']} segments "
        f"({step['bytes_done'] // mib}/{step['bytes_total'] // mib} MiB)"
    )


@points_app.command("create")
def points_create(
    app: AppOption,
    addon: AddonOption,
    name: Annotated[str, typer.Option(help="Unique per addon, e.g. 'before migration 42'")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Mark this instant with pg_create_restore_point(); restore to it with
    `restore --restore-point NAME`."""
    try:
        with _client(url, token) as client:
            point = client.create_restore_point(app, addon, name)
    except PitrError as exc:
        raise _fail(exc) from exc
    _print(point)


@points_app.command("list")
def points_list(
    app: AppOption,
    addon: AddonOption,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """The addon's restore points with their LSN and time."""
    try:
        with _client(url, token) as client:
            points = client.restore_points(app, addon)
    except PitrError as exc:
        raise _fail(exc) from exc
    _print(points)
