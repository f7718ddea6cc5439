"""Real processes: PostgreSQL servers (as an unprivileged user when run as root), and the API
served by uvicorn on a loopback port, driven over real HTTP."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from paas_pitr.api import create_app
from paas_pitr.api.state import AppState
from paas_pitr.audit import AuditLog
from paas_pitr.audit.dispatcher import AuditJournal
from paas_pitr.audit.repository import PostgresAuditRepository
from paas_pitr.auth import TokenAuthority
from paas_pitr.bucket import InMemoryBucket
from paas_pitr.cnpg import naming
from paas_pitr.cnpg.schema import CrdRegistry
from paas_pitr.engines.base import Engine
from paas_pitr.engines.kubernetes import KubernetesEngine
from paas_pitr.engines.kubernetes.api import KubeApi
from paas_pitr.engines.memory import InMemoryEngine
from paas_pitr.errors import InvalidInput
from paas_pitr.postgres.binaries import find_binaries
from paas_pitr.postgres.server import OsUser, PostgresServer, make_traversable, pick_port
from paas_pitr.settings import KUBE_REQUEST_RETRY, Settings
from tests.integration.api.contract_check import check_documented
from tests.integration.real_wal import RealWal, write_real_wal
from tests.k8s_double.server import FakeKubernetes

SIGNING_KEY = b"k" * 48


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are 0700, and the PostgreSQL servers run as an
    # unprivileged user that must traverse to their data directories.
    path = Path(tempfile.mkdtemp(prefix="paas-pitr-test-"))
    path.chmod(0o755)
    make_traversable(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg(workdir: Path) -> Iterator[PostgresServer]:
    try:
        binaries = find_binaries(None)
    except InvalidInput as exc:
        pytest.skip(f"no PostgreSQL server binaries: {exc.message}")
    server = PostgresServer(
        binaries=binaries,
        data_dir=workdir / "audit-pg" / "data",
        port=pick_port(),
        password=uuid.uuid4().hex,
        user=OsUser.for_servers(os.environ.get("PAAS_PITR_PG_OS_USER", "postgres")),
    )
    server.initdb()
    server.write_conf({"fsync": "off", "max_connections": "100"})
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def audit_dsn(pg: PostgresServer) -> str:
    pg.start()  # a test may have stopped it
    name = f"audit_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg.dsn(name)


@dataclass
class RunningApi:
    url: str
    state: AppState
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, token: str | None = None, *, contract: bool = False) -> httpx.Client:
        """``contract``: every error answered must be documented for its route
        (:func:`tests.integration.api.contract_check.check_documented`)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        hooks: dict[str, list[Any]] = {}
        if contract:
            document = self.openapi_document()
            hooks["response"] = [lambda response: check_documented(document, response)]
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, event_hooks=hooks)

    def openapi_document(self) -> dict[str, Any]:
        """The served OpenAPI document."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            document: dict[str, Any] = client.get("/openapi.json").json()
        return document

    def token(self, tenant: str = "acme", role: str = "tenant") -> str:
        return self.state.tokens.issue(tenant, role=role)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_api(state: AppState) -> RunningApi:
    port = pick_port()
    config = uvicorn.Config(
        create_app(state), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    return RunningApi(f"http://127.0.0.1:{port}", state, server, thread)


def make_state(
    settings: Settings, engine: Engine, dsn: str, journal: Path, *, max_backoff: float = 0.5
) -> AppState:
    audit = AuditLog(
        PostgresAuditRepository(dsn, timeout=1.0), AuditJournal(journal), max_backoff=max_backoff
    )
    tokens = TokenAuthority(SIGNING_KEY, cache_seconds=settings.token_cache_seconds)
    return AppState.build(settings, engine, audit, tokens)


@pytest.fixture
def settings(workdir: Path) -> Settings:
    return Settings(state_dir=workdir / f"state-{uuid.uuid4().hex[:8]}", cnpg_mode="in-tree")


def serve_double(double: FakeKubernetes) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = pick_port()
    server = uvicorn.Server(
        uvicorn.Config(double.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the Kubernetes API double did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


class FakeArchiveReader:
    """Newest WAL times the test sets per cluster name (as ``InMemoryEngine.archived_at``),
    answered for that cluster's incarnation folders."""

    def __init__(self) -> None:
        self.times: dict[str, datetime] = {}

    async def newest_wal(self, destination: str, server_name: str) -> datetime | None:
        if server_name in self.times:
            return self.times[server_name]
        return next(
            (t for c, t in self.times.items() if naming.is_incarnation_of(server_name, c)), None
        )


class KubernetesHarness:
    """The InMemoryEngine's test helpers, played through the Kubernetes API double: the
    test is the CNPG operator, writing objects and statuses."""

    def __init__(
        self,
        double: FakeKubernetes,
        engine: KubernetesEngine,
        reader: FakeArchiveReader,
        bucket: InMemoryBucket,
    ):
        self.double = double
        self.engine = engine
        self.archived_at = reader.times
        # The control plane's own view of the backup bucket, as the InMemoryEngine's.
        self.bucket = bucket

    @property
    def objects(self) -> dict[tuple[str, str], dict[str, Any]]:
        return self.double.by_kind()

    def set_status(self, kind: str, name: str, status: dict[str, Any]) -> None:
        self.double.operator_status(kind, name, status)

    def put(self, obj: dict[str, Any]) -> None:
        self.double.operator_put(obj)

    @property
    def down(self) -> bool:
        return self.double.down

    @down.setter
    def down(self, value: bool) -> None:
        self.double.down = value

    @property
    def calls(self) -> list[tuple[str, str, str]]:
        verbs = {"POST": "create", "PATCH": "apply", "PUT": "replace", "DELETE": "delete"}
        kinds = {v.plural: v.kind for v in self.double.registry.versions.values()}
        found = []
        for method, path, _ in self.double.requests:
            parts = path.strip("/").split("/")
            if method not in verbs or len(parts) < 7 or parts[0] != "apis":
                continue
            found.append((verbs[method], kinds.get(parts[5], parts[5]), parts[6]))
        return found


def write_kubeconfig(path: Path, url: str, token: str, namespace: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "double", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": token}}],
        "contexts": [
            {
                "name": "double",
                "context": {"cluster": "double", "user": "tester", "namespace": namespace},
            }
        ],
        "current-context": "double",
    }
    path.write_text(json.dumps(config), encoding="utf-8")


@pytest.fixture
def kube(
    crd_registry: CrdRegistry, settings: Settings, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KubernetesHarness]:
    double = FakeKubernetes(crd_registry, namespace=settings.namespace)
    url, server, thread = serve_double(double)
    kubeconfig = workdir / f"kubeconfig-{uuid.uuid4().hex[:8]}"
    write_kubeconfig(kubeconfig, url, double.token, settings.namespace)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    reader = FakeArchiveReader()
    bucket = InMemoryBucket(settings.bucket)
    engine = KubernetesEngine(
        settings,
        api_factory=lambda: KubeApi.from_environment(
            settings.namespace, retry=dataclasses.replace(KUBE_REQUEST_RETRY, attempts=3, max=0.3)
        ),
        archive_reader=reader,
        bucket=bucket,
    )
    yield KubernetesHarness(double, engine, reader, bucket)
    double.down = False
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(params=["memory", "kubernetes"])
def engine(request: pytest.FixtureRequest) -> Any:
    """The engine-agnostic API tests run against both: the in-memory fake, and the
    Kubernetes engine through its real client over HTTP against the API double."""
    if request.param == "memory":
        return InMemoryEngine(mode="in-tree")
    return request.getfixturevalue("kube")


@pytest.fixture
def api(settings: Settings, engine: Any, audit_dsn: str, workdir: Path) -> Iterator[RunningApi]:
    journal = settings.state_dir / "audit" / "journal.jsonl"
    real_engine = getattr(engine, "engine", engine)
    running = start_api(make_state(settings, real_engine, audit_dsn, journal, max_backoff=0.5))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def real_wal(pg: PostgresServer, workdir: Path) -> RealWal:
    """Six segments of PostgreSQL 15 WAL holding a DROP, a TRUNCATE and a DELETE (see
    :mod:`tests.integration.real_wal`), written once per session."""
    if pg.binaries.major != 15:
        pytest.skip(f"the finder decodes PostgreSQL 15 WAL; found {pg.binaries.major}")
    return write_real_wal(pg.binaries, workdir)
