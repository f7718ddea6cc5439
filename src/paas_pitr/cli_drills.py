"""CLI commands for restore drills (talk to a running server): run one, list them."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from paas_pitr.cli_client import (
    AddonOption,
    AppOption,
    JsonOption,
    TokenOption,
    UrlOption,
    _client,
    _fail,
    _print,
    _Progress,
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
from paas_pitr.errors import PitrError

drills_app = typer.Typer(help="Restore drills: an addon restored, checked and thrown away.")


def _phase(drill: dict[str, Any]) -> str:
    return f"drill {drill['drill_id'][:8]}: {drill.get('progress') or drill['status']}"


def _summary(drill: dict[str, Any]) -> str:
    if drill["status"] == "passed":
        rate = drill.get("restore_rate_bytes_per_second")
        return f"drill {drill['drill_id']} passed: RTO {drill['rto_seconds']}s" + (
            f", {rate / 1e6:.1f} MB/s restored" if rate else ""
        )
    return (
        f"drill {drill['drill_id']} failed at {drill.get('failing_check')}: {drill.get('reason')}"
        + (f"\nhint: {drill['hint']}" if drill.get("hint") else "")
    )


@drills_app.command("run")
def drills_run(
    app: AppOption,
    addon: AddonOption,
    timestamp: Annotated[
        str | None,
        typer.Option(help="Drill this instant (pro), or 'latest': the newest (the default)"),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the drill has finished")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Start a drill: restore the addon into a throwaway cluster, check it, delete it."""
    try:
        with _client(url, token) as client:
            drill = client.start_drill(app, addon, timestamp)
            console.print(
                f"drill {drill['drill_id']}: restoring into {drill['cluster_name']}"
                + (f" from backup {drill['backup_id']}" if drill.get("backup_id") else ""),
                markup=False,
            )
            if wait:
                with _Progress(_phase(drill)) as progress:
                    while drill["status"] not in ("passed", "failed"):
                        time.sleep(1)
                        drill = client.drill(app, addon, drill["drill_id"])
                        progress.update(_phase(drill))
                console.print(_summary(drill), markup=False)
    except PitrError as exc:
        raise _fail(exc) from exc
    _print(drill)
    if drill["status"] == "failed":
        raise typer.Exit(1)


@drills_app.command("list")
def drills_list(
    app: AppOption,
    addon: AddonOption,
    output: OutputOption = Output.TABLE,
    json_output: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """The addon's drills, newest first."""
    try:
        with _client(url, token) as client:
            listing = client.drills(app, addon, per_page=100)
    except PitrError as exc:
        raise _fail(exc) from exc
    if json_output or output is Output.JSON:
        _print(listing)
        return
    if not listing["items"]:
        console.print(f"{addon} has had no drills", markup=False)
        return
    table = Table()
    id_column(table, "drill id")
    id_column(table, "status")
    instant_column(table, "requested")
    instant_column(table, "target")
    id_column(table, "RTO (s)")
    id_column(table, "failed at")
    text_column(table, "reason")
    for item in listing["items"]:
        rto = item.get("rto_seconds")
        table.add_row(
            item["drill_id"],
            item["status"],
            item["requested_at"],
            item.get("target_time") or "",
            "" if rto is None else f"{rto:.1f}",
            item.get("failing_check") or "",
            item.get("reason") or "",
        )
    print_table(out, table)
