"""The ``paas-pitr`` command."""

from __future__ import annotations

import secrets
import sys
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import typer
import yaml
from typer.core import TyperGroup

from paas_pitr.cli_help import tidy_help
from paas_pitr.cnpg.builders import (
    BackupEnd,
    PointInTime,
    RecoveryTarget,
    RenderConfig,
    build_addon_manifests,
    build_recovery_cluster,
)
from paas_pitr.cnpg.connection import build_connection_secret, build_connection_service
from paas_pitr.cnpg.history import incarnation_annotations, switch_archiving
from paas_pitr.cnpg.naming import incarnation_server_name, recovery_cluster_name
from paas_pitr.errors import InvalidInput, PitrError
from paas_pitr.names import default_addon_id, validate_own_addon_id
from paas_pitr.plans import policy_for, tier_for_plan
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
        str | None,
        typer.Option(
            "--addon-id", help="Default db-TENANT-APP; an explicit id starts with db-TENANT-"
        ),
    ] = None,
    server_name: Annotated[
        str | None,
        typer.Option(
            "--server-name",
            help="Archive folder of this incarnation. Default: a fresh ADDON-<8 hex>, so a "
            "re-created addon never writes over the archive of a deleted one",
        ),
    ] = None,
    mode: ModeOption = None,
    crds: CrdsOption = None,
) -> None:
    """The Cluster (and ObjectStore, ScheduledBackup) of an addon on a plan."""
    config = _render_config(_settings(), mode)
    # The API's rule: an explicit id is one of the tenant's own names.
    name = validate_own_addon_id(tenant, addon_id) if addon_id else default_addon_id(tenant, app_id)
    server = server_name or incarnation_server_name(name)
    archiving = policy_for(tier_for_plan(plan)).has_backups
    manifests = build_addon_manifests(
        version=version or config.default_version,
        plan=plan,
        tenant=tenant,
        app=app_id,
        addon_id=addon_id,
        config=config,
        server_name=server,
        annotations=incarnation_annotations(
            server, switch_archiving([], on=archiving, at=datetime.now(UTC))
        ),
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
    source_server_name: Annotated[
        str | None,
        typer.Option(
            "--source-server-name",
            help="Archive folder of the source incarnation (its paas-pitr.io/server-name "
            "annotation). Default: the source's name",
        ),
    ] = None,
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
    restore_id = restore_id or uuid.uuid4().hex
    manifests = build_recovery_cluster(
        source_cluster=source,
        source_server_name=source_server_name,
        server_name=incarnation_server_name(recovery_cluster_name(source, restore_id)),
        tenant=tenant,
        app=app_id,
        restore_id=restore_id,
        target=target,
        plan=plan,
        version=version,
        config=config,
    )
    _emit(manifests.objects(), crds)


@render_app.command("connection")
@reports_errors
def render_connection(
    tenant: Annotated[str, typer.Option(help="Tenant (DNS-1123 label)")],
    app_id: Annotated[str, typer.Option("--app", help="App id (DNS-1123 label)")],
    addon_id: Annotated[
        str | None,
        typer.Option(
            "--addon-id", help="Default db-TENANT-APP; an explicit id starts with db-TENANT-"
        ),
    ] = None,
    active_cluster: Annotated[
        str | None,
        typer.Option(
            "--active-cluster",
            help="The Cluster the addon's connection leads to (default: the addon's own; "
            "after an in-place restore, the restore's cluster)",
        ),
    ] = None,
) -> None:
    """The Service and Secret an app binds to (a fresh password, printed in the Secret)."""
    config = _render_config(_settings(), None)
    name = validate_own_addon_id(tenant, addon_id) if addon_id else default_addon_id(tenant, app_id)
    active = active_cluster or name
    service = build_connection_service(
        tenant=tenant, app=app_id, addon_id=name, active_cluster=active, config=config
    )
    secret = build_connection_secret(
        tenant=tenant,
        app=app_id,
        addon_id=name,
        active_cluster=active,
        password=secrets.token_urlsafe(24),
        config=config,
    )
    _emit([service, secret], None)


from paas_pitr import cli_client, cli_drills  # noqa: E402  (commands registered below)

app.add_typer(cli_client.addons_app, name="addons")
app.add_typer(cli_client.backups_app, name="backups")
app.command("restore")(cli_client.restore_command)
app.add_typer(cli_drills.drills_app, name="drills")
app.add_typer(cli_client.events_app, name="events")
app.add_typer(cli_client.points_app, name="restore-points")

from paas_pitr import cli_ops  # noqa: E402

app.add_typer(cli_ops.restores_app, name="restores")
app.add_typer(cli_ops.audit_app, name="audit")

token_app = typer.Typer(help="API tokens.")
# Beyond a century a datetime overflows soon enough (a year past 9999); nobody needs more.
MAX_TOKEN_DAYS = 36_500
app.add_typer(token_app, name="token")


@token_app.command("create")
@reports_errors
def token_create(
    tenant: Annotated[str, typer.Option(help="Tenant the token acts for")],
    role: Annotated[str, typer.Option(help="tenant or operator")] = "tenant",
    subject: Annotated[str | None, typer.Option(help="Who holds it (audited as the actor)")] = None,
    days: Annotated[int, typer.Option(help="Validity in days; 0 = no expiry")] = 30,
) -> None:
    """Print a bearer token the server (same state directory or token secret) accepts."""
    from datetime import timedelta

    from paas_pitr.auth import ROLES, TokenAuthority, load_signing_key
    from paas_pitr.runtime import prepare_state_dir

    if role not in ROLES:
        raise InvalidInput(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    if not 0 <= days <= MAX_TOKEN_DAYS:
        raise InvalidInput(
            f"--days must be from 1 to {MAX_TOKEN_DAYS} (100 years), or 0 for no expiry"
        )
    settings = _settings()
    prepare_state_dir(settings)
    authority = TokenAuthority(load_signing_key(settings))
    ttl = timedelta(days=days) if days else None
    typer.echo(authority.issue(tenant, role=role, subject=subject, ttl=ttl))


@app.command("doctor")
@reports_errors
def doctor() -> None:
    """Check what the operator runbook needs on the Kubernetes side, and say what to run."""
    import asyncio
    import dataclasses

    from paas_pitr.doctor import kubernetes_checks
    from paas_pitr.engines.kubernetes.api import KubeApi

    settings = _settings()

    async def run() -> list[Any]:
        # Two attempts: doctor reports an unreachable API quickly rather than riding it out.
        api = KubeApi.from_environment(
            settings.namespace,
            retry=dataclasses.replace(settings.kube_retry, attempts=2),
            request_timeout=settings.kube_request_timeout_seconds,
        )
        try:
            return await kubernetes_checks(settings, api)
        finally:
            await api.close()

    checks = asyncio.run(run())
    marks = {"ok": "ok  ", "warning": "WARN", "error": "FAIL"}
    for check in checks:
        typer.echo(f"[{marks[check.level]}] {check.name}: {check.message}")
        if check.fix and check.level != "ok":
            typer.echo(f"       fix: {check.fix}")
    if any(check.level == "error" for check in checks):
        raise typer.Exit(1)


@app.command("serve")
@reports_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Default PAAS_PITR_HOST (127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Default PAAS_PITR_PORT (8080)")] = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="Default PAAS_PITR_STATE_DIR")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run the API server (embedded defaults: local engine, embedded S3 and audit database)."""
    import asyncio
    import logging

    import uvicorn

    from paas_pitr.api import create_app
    from paas_pitr.runtime import Runtime

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if state_dir is not None:
        overrides["state_dir"] = state_dir
    settings = load_settings(**overrides)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The pool logs every reconnect attempt while the audit database is down; the audit log
    # reports the outage once and /readyz shows it, so keep the pool to its errors.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    runtime = Runtime(settings)
    typer.echo(f"paas-pitr: state directory {settings.state_dir}", err=True)
    try:
        state = asyncio.run(runtime.build())
        url = f"http://{settings.host}:{settings.port}"
        from paas_pitr.settings import default_state_dir

        hint = token_hint(settings.state_dir, default_state_dir())
        typer.echo(
            f"paas-pitr: serving on {url} (engine: {settings.engine}; docs: {url}/docs)\n"
            f"paas-pitr: get a token with: {hint}",
            err=True,
        )
        uvicorn.run(
            create_app(state),
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            access_log=log_level == "debug",
            # Ctrl-C: open requests (a dashboard's) get this long, then the servers stop.
            timeout_graceful_shutdown=5,
        )
    finally:
        runtime.close()


def token_hint(state_dir: Path, default: Path, program: str | None = None) -> str:
    """A command that mints a token for this server, to paste in another shell: the
    executable by its absolute path (``paas-pitr`` may not be on PATH there), the state
    directory when not the default, quoted for a POSIX shell."""
    import shlex

    if program is None:
        running = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
        program = str(running) if running and running.is_file() else "paas-pitr"
    words = shlex.join([program, "token", "create", "--tenant", "acme"])
    if state_dir.resolve() != default.resolve():
        return f"PAAS_PITR_STATE_DIR={shlex.quote(str(state_dir.resolve()))} {words}"
    return words


def command() -> TyperGroup:
    """The ``paas-pitr`` command as click runs it, with tidy help."""
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    tidy_help(group)
    return group


def main() -> None:
    command()()
