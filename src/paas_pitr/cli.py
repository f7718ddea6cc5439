"""The ``paas-pitr`` command."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import typer
import yaml

from paas_pitr.cnpg.builders import (
    BackupEnd,
    PointInTime,
    RecoveryTarget,
    RenderConfig,
    build_addon_manifests,
    build_recovery_cluster,
)
from paas_pitr.errors import InvalidInput, PitrError
from paas_pitr.settings import Settings, load_settings
from paas_pitr.timestamps import parse_timestamp

app = typer.Typer(
    name="paas-pitr",
    help="Point-in-time recovery for the managed Postgres addon, on CloudNativePG.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
render_app = typer.Typer(help="Print CNPG objects as YAML, ready for `kubectl apply -f -`.")
app.add_typer(render_app, name="render")

P = ParamSpec("P")
R = TypeVar("R")

ModeOption = Annotated[
    str | None,
    typer.Option("--mode", help="CNPG form: in-tree or plugin (default: PAAS_PITR_CNPG_MODE)"),
]
CrdsOption = Annotated[
    Path | None,
    typer.Option("--crds", help="Also validate the output against the CRDs in this directory"),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"paas-pitr: error: {message}", err=True)
    return typer.Exit(code)


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn our errors into one clear line on stderr and a non-zero exit, never a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except PitrError as exc:
            code = 2 if isinstance(exc, InvalidInput) else 1
            raise fail(exc.message, code) from exc

    return wrapper


def _settings() -> Settings:
    return load_settings()


def _render_config(settings: Settings, mode: str | None) -> RenderConfig:
    if mode is not None and mode not in ("in-tree", "plugin"):
        raise InvalidInput(f"--mode must be 'in-tree' or 'plugin', not {mode!r}")
    chosen: Literal["in-tree", "plugin"] | None = mode  # type: ignore[assignment]
    return RenderConfig.from_settings(settings, mode=chosen)


def _emit(objects: Iterable[dict[str, Any]], crds: Path | None) -> None:
    documents = list(objects)
    if crds is not None:
        from paas_pitr.cnpg.schema import CrdRegistry

        try:
            registry = CrdRegistry.load(crds)
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidInput(f"cannot read CRDs from {crds}: {exc}") from exc
        for document in documents:
            registry.check(document)
    yaml.safe_dump_all(documents, sys.stdout, sort_keys=False, default_flow_style=False)


@render_app.command("cluster")
@reports_errors
def render_cluster(
    tenant: Annotated[str, typer.Option(help="Tenant (DNS-1123 label)")],
    app_id: Annotated[str, typer.Option("--app", help="App id (DNS-1123 label)")],
    plan: Annotated[str, typer.Option(help="free, standard or pro")],
    version: Annotated[str | None, typer.Option(help="PostgreSQL major version")] = None,
    addon_id: Annotated[
        str | None, typer.Option("--addon-id", help="Default db-TENANT-APP")
    ] = None,
    mode: ModeOption = None,
    crds: CrdsOption = None,
) -> None:
    """The Cluster (and ObjectStore, ScheduledBackup) of an addon on a plan."""
    config = _render_config(_settings(), mode)
    manifests = build_addon_manifests(
        version=version or config.default_version,
        plan=plan,
        tenant=tenant,
        app=app_id,
        addon_id=addon_id,
        config=config,
    )
    _emit(manifests.objects(), crds)


@render_app.command("recovery")
@reports_errors
def render_recovery(
    source: Annotated[str, typer.Option(help="Name of the source Cluster (the addon id)")],
    tenant: Annotated[str, typer.Option(help="Tenant of the source")],
    app_id: Annotated[str, typer.Option("--app", help="App of the source")],
    timestamp: Annotated[
        str | None, typer.Option(help="Target instant, ISO 8601 with offset (Z or +hh:mm)")
    ] = None,
    backup_id: Annotated[
        str | None, typer.Option("--backup-id", help="Restore this base backup to its end instead")
    ] = None,
    plan: Annotated[str, typer.Option(help="Plan of the new cluster")] = "pro",
    version: Annotated[str | None, typer.Option(help="PostgreSQL major version")] = None,
    restore_id: Annotated[str | None, typer.Option("--restore-id", help="Default: random")] = None,
    mode: ModeOption = None,
    crds: CrdsOption = None,
) -> None:
    """A NEW Cluster recovered from the source's archive (the source is never touched)."""
    if (timestamp is None) == (backup_id is None):
        raise InvalidInput("give exactly one of --timestamp and --backup-id")
    target: RecoveryTarget
    if timestamp is not None:
        target = PointInTime(parse_timestamp(timestamp))
    else:
        assert backup_id is not None
        target = BackupEnd(backup_id)
    config = _render_config(_settings(), mode)
    manifests = build_recovery_cluster(
        source_cluster=source,
        tenant=tenant,
        app=app_id,
        restore_id=restore_id or uuid.uuid4().hex,
        target=target,
        plan=plan,
        version=version,
        config=config,
    )
    _emit(manifests.objects(), crds)


def main() -> None:
    app()
