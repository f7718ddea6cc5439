"""CLI commands for day-to-day operation: restores (list, show, wait) against a running
server, and the audit trail (read from the audit database directly)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.table import Table

from paas_pitr.cli_client import (
    AddonOption,
    AppOption,
    TokenOption,
    UrlOption,
    _client,
    _fail,
    _print,
    _wait_restore,
    console,
    out,
)
from paas_pitr.cli_tables import (
    Output,
    OutputOption,
    id_column,
    instant_column,
    print_table,
    text_column,
)
from paas_pitr.errors import InvalidInput, NotFound, PitrError
from paas_pitr.timestamps import format_api_time


def restores_table(restores: Iterable[dict[str, Any]]) -> Table:
    table = Table()
    id_column(table, "restore id")
    id_column(table, "status")
    instant_column(table, "target")
    id_column(table, "cluster")
    instant_column(table, "requested")
    text_column(table, "reason")
    for restore in restores:
        target = restore.get("restores_to") or restore.get("timestamp") or ""
        table.add_row(
            restore["restore_id"],
            restore["status"],
            target,
            restore["cluster_name"],
            restore.get("created_at") or "",
            restore.get("reason") or "",
        )
    return table


RestoreIdOption = Annotated[str, typer.Option("--restore-id", help="The restore's id")]

restores_app = typer.Typer(help="Restores of an addon (talks to a running server).")


@restores_app.command("list")
def restores_list(
    app: AppOption,
    addon: AddonOption,
    output: OutputOption = Output.TABLE,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """The addon's restores, newest first."""
    try:
        with _client(url, token) as client:
            restores = client.restores(app, addon)
    except PitrError as exc:
        raise _fail(exc) from exc
    if output is Output.JSON:
        _print(restores)
    elif not restores:
        console.print(f"{addon} has no restores", markup=False)
    else:
        print_table(out, restores_table(restores))


def _explain_failure(restore: dict[str, Any]) -> None:
    if restore["status"] == "failed":
        console.print(f"restore failed: {restore.get('reason') or 'no reason given'}", markup=False)
        if restore.get("hint"):
            console.print(f"hint: {restore['hint']}", markup=False)


@restores_app.command("show")
def restores_show(
    app: AppOption,
    addon: AddonOption,
    restore_id: RestoreIdOption,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """One restore (JSON), with its connection once ready; a failure's reason and hint
    also on stderr."""
    try:
        with _client(url, token) as client:
            restore = client.restore_status(app, addon, restore_id)
    except PitrError as exc:
        raise _fail(exc) from exc
    _print(restore)
    _explain_failure(restore)


@restores_app.command("wait")
def restores_wait(
    app: AppOption,
    addon: AddonOption,
    restore_id: RestoreIdOption,
    timeout: Annotated[
        float, typer.Option(help="Give up after this many seconds (exit 3); 0 waits forever")
    ] = 0,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Wait until a restore ends, printing its phase: exit 0 when ready (a new cluster),
    switched or undone (in place), 1 when failed, 3 at --timeout."""
    from paas_pitr.restore_views import FINISHED_STATUSES

    if timeout < 0:
        raise _fail(InvalidInput("--timeout must be 0 (wait forever) or more"))
    deadline = time.monotonic() + timeout if timeout else None
    try:
        with _client(url, token) as client:
            restore = client.restore_status(app, addon, restore_id)
            restore = _wait_restore(client, app, addon, restore, deadline)
    except PitrError as exc:
        raise _fail(exc) from exc
    if restore["status"] not in FINISHED_STATUSES:
        console.print(
            f"gave up after {timeout:g}s: the restore is still {restore['status']}", markup=False
        )
        raise typer.Exit(3)
    _print(restore)
    _explain_failure(restore)
    if restore["status"] == "failed":
        raise typer.Exit(1)


@restores_app.command("undo")
def restores_undo(
    app: AppOption,
    addon: AddonOption,
    restore_id: RestoreIdOption,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Switch the addon back to the cluster an in-place restore kept (until its undo time);
    prints the restore (JSON), now undone."""
    try:
        with _client(url, token) as client:
            restore = client.undo_restore(app, addon, restore_id)
    except PitrError as exc:
        raise _fail(exc) from exc
    _print(restore)


@restores_app.command("delete")
def restores_delete(
    app: AppOption,
    addon: AddonOption,
    restore_id: RestoreIdOption,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete a restore's cluster (its archive folder is kept); refused while an in-place
    restore is switching or undoing."""
    try:
        with _client(url, token) as client:
            client.delete_restore(app, addon, restore_id)
    except PitrError as exc:
        raise _fail(exc) from exc
    console.print(f"restore {restore_id} deleted", markup=False)


# --- the audit trail ---------------------------------------------------------------------

audit_app = typer.Typer(
    help="The audit trail, read from the audit database (PAAS_PITR_DATABASE_URL, or the "
    "embedded one under the state directory)."
)


def audit_database_url() -> str:
    """``PAAS_PITR_DATABASE_URL``, else the embedded audit database's URL."""
    from paas_pitr.postgres.embedded import EmbeddedDatabase
    from paas_pitr.settings import load_settings

    settings = load_settings()
    if settings.database_url:
        return settings.database_url
    embedded = EmbeddedDatabase(
        settings.state_dir, os_user=settings.pg_os_user, pg_bin=settings.pg_bin
    )
    found = embedded.url()
    if found is None:
        raise NotFound(
            f"no embedded audit database under {settings.state_dir}: run `paas-pitr serve` "
            "first (or set PAAS_PITR_STATE_DIR to the state directory it uses)"
        )
    return found


@audit_app.command("url")
def audit_url() -> None:
    """Print the audit database's connection URL (for psql; it holds the password)."""
    try:
        typer.echo(audit_database_url())
    except PitrError as exc:
        raise _fail(exc) from exc


def _details_lines(details: dict[str, Any]) -> str:
    """One ``key: value`` line per detail: a value (an instant, an id) is never cut."""
    return "\n".join(
        f"{key}: {value if isinstance(value, str) else json.dumps(value, sort_keys=True)}"
        for key, value in sorted(details.items())
    )


def audit_rows_table(rows: Sequence[Any], *, with_action: bool = False) -> Table:
    table = Table()
    instant_column(table, "created at")
    if with_action:
        id_column(table, "action")
    id_column(table, "target")
    id_column(table, "details")
    for row in rows:
        action = (row.action,) if with_action else ()
        table.add_row(
            format_api_time(row.created_at), *action, row.target_id, _details_lines(row.details)
        )
    return table


ALL_ACTIONS = "all"


@audit_app.command("list")
def audit_list(
    action: Annotated[
        str,
        typer.Option(
            help="Which events: an action (addon.restore_pitr, addon.create, addon.drill, ...; "
            "an unknown one is refused with the list) or 'all'"
        ),
    ] = "addon.restore_pitr",
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many")] = 10,
    output: OutputOption = Output.TABLE,
) -> None:
    """The newest audit events, newest first: by default the seed's query (the restores
    requested: created_at, target_id, details_jsonb); --action all lists every action, with
    an action column."""
    from paas_pitr.audit.actions import known_action
    from paas_pitr.audit.query import recent_events

    every = action == ALL_ACTIONS
    try:
        rows = recent_events(audit_database_url(), None if every else known_action(action), limit)
    except PitrError as exc:
        raise _fail(exc) from exc
    if output is Output.JSON:
        _print(
            [
                {
                    "created_at": format_api_time(r.created_at),
                    **({"action": r.action} if every else {}),
                    "target_id": r.target_id,
                    "details_jsonb": r.details,
                }
                for r in rows
            ]
        )
    elif not rows:
        console.print(f"no {'audit' if every else action} events yet", markup=False)
    else:
        print_table(out, audit_rows_table(rows, with_action=every))
