"""A small async client of the Kubernetes REST API, for the few resources we use.

Configuration and authentication (kubeconfig, in-cluster service account, exec plugins,
client certificates) come from lightkube; requests are plain HTTP so that what matters here
is explicit: server-side apply with our field manager and ``fieldValidation=Strict``, the
status subresource, label selectors, watches that resume and re-list after 410 Gone, and
retries with backoff for 429 (honouring ``Retry-After``), 5xx and connection errors.

Error statuses are mapped to exception classes in one place (:func:`api_error`, as kopf's
``check_response`` does): each verb catches the class it means (``KubeNotFound`` for a get
or a delete, ``KubeConflict`` for a create) and never tests a status code itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from paas_pitr.engines.base import Kind, Manifest
from paas_pitr.errors import Conflict, EngineError, InvalidInput, NotFound
from paas_pitr.retry import Backoff
from paas_pitr.settings import KUBE_REQUEST_RETRY, KUBE_REQUEST_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

FIELD_MANAGER = "paas-pitr"
CoreKind = Literal["Service", "Secret"]


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


RESOURCES: dict[str, ResourceInfo] = {
    "Cluster": ResourceInfo("postgresql.cnpg.io", "v1", "clusters"),
    "Backup": ResourceInfo("postgresql.cnpg.io", "v1", "backups"),
    "ScheduledBackup": ResourceInfo("postgresql.cnpg.io", "v1", "scheduledbackups"),
    "ObjectStore": ResourceInfo("barmancloud.cnpg.io", "v1", "objectstores"),
    # The per-addon connection objects (paas_pitr.cnpg.connection).
    "Service": ResourceInfo("", "v1", "services"),
    "Secret": ResourceInfo("", "v1", "secrets"),
}


class KubeApiError(EngineError):
    """The API server answered with an error Status (see :func:`api_error`)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"Kubernetes API {status} {reason}: {message}")
        self.status = status
        self.reason = reason


class KubeInvalid(KubeApiError):
    """400 Bad Request / 422 Unprocessable Entity: the object is refused (schema, strict
    field validation, an immutable field)."""


class KubeNotFound(KubeApiError):
    """404 Not Found: no such object (or resource type)."""


class KubeConflict(KubeApiError):
    """409 Conflict: the object exists already, or an apply touched fields another
    manager owns."""


class WatchExpired(KubeApiError):
    """410 Gone: the resourceVersion is too old; re-list and watch again."""


_ERRORS: dict[int, type[KubeApiError]] = {
    400: KubeInvalid,
    404: KubeNotFound,
    409: KubeConflict,
    410: WatchExpired,
    422: KubeInvalid,
}


def api_error(status: int, reason: str, message: str) -> KubeApiError:
    """The exception of an error Status: the one place status codes are interpreted."""
    return _ERRORS.get(status, KubeApiError)(status, reason, message)


def label_selector(labels: Mapping[str, str] | None) -> str | None:
    if not labels:
        return None
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


class KubeApi:
    def __init__(
        self,
        http: Any,
        namespace: str,
        *,
        retry: Backoff = KUBE_REQUEST_RETRY,
        request_timeout: float = KUBE_REQUEST_TIMEOUT_SECONDS,
        watch_seconds: int = 290,
    ) -> None:
        self.http = http
        self.namespace = namespace
        # Each request: retried after 429, 5xx and transport errors, ``retry.attempts`` in
        # all; ``retry.max`` also caps a server's Retry-After.
        self.retry = retry
        self.request_timeout = request_timeout
        self.watch_seconds = watch_seconds

    @classmethod
    def from_environment(cls, namespace: str, **options: Any) -> KubeApi:
        """In-cluster config, else ``$KUBECONFIG``, else ``~/.kube/config`` (via lightkube)."""
        from lightkube.config.client_adapter import AsyncClient, ConnectionParams
        from lightkube.config.kubeconfig import KubeConfig
        from lightkube.core.exceptions import ConfigError

        try:
            config = KubeConfig.from_env().get()
        except (ConfigError, OSError) as exc:
            raise EngineError(f"no Kubernetes configuration found: {exc}") from exc
        if config is None:
            raise EngineError("the kubeconfig has no current context")
        return cls(AsyncClient(config, ConnectionParams()), namespace, **options)

    async def close(self) -> None:
        await self.http.aclose()

    # --- paths -----------------------------------------------------------------------

    def path(self, kind: str, name: str | None = None, *, subresource: str | None = None) -> str:
        info = RESOURCES[kind]
        path = f"{info.prefix}/namespaces/{self.namespace}/{info.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path

    # --- the one place requests are sent ---------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send a request; retry what is worth retrying, raise ``KubeApiError`` otherwise."""
        headers = {"Accept": "application/json"}
        content = None
        if body is not None:
            headers["Content-Type"] = content_type
            content = json.dumps(body).encode()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await asyncio.wait_for(
                    self.http.request(
                        method, path, params=dict(params or {}), content=content, headers=headers
                    ),
                    self.request_timeout,
                )
            except (TimeoutError, OSError) as exc:
                error: Exception = exc
                retry_after = None
            except Exception as exc:  # the transport's own errors (connect, read, protocol)
                if not is_transport_error(exc):
                    raise
                error, retry_after = exc, None
            else:
                if response.status_code < 400:
                    return response.json() if response.content else {}
                error = api_error(*_status_of(response))
                if response.status_code != 429 and response.status_code < 500:
                    raise error
                retry_after = _retry_after(response)
            if self.retry.gives_up_after(attempt):
                if isinstance(error, KubeApiError):
                    raise error
                raise EngineError(f"the Kubernetes API is unreachable: {error}") from error
            wait = retry_after if retry_after is not None else self.retry.jittered(attempt)
            log.warning(
                "Kubernetes API %s %s failed (%s); retry %d/%d in %.1fs",
                method,
                path,
                error,
                attempt,
                (self.retry.attempts or 0) - 1,
                wait,
            )
            await asyncio.sleep(min(wait, self.retry.max))

    # --- verbs -----------------------------------------------------------------------

    async def get(self, kind: Kind | CoreKind, name: str) -> Manifest | None:
        try:
            found: Manifest = await self.request("GET", self.path(kind, name))
        except KubeNotFound:
            return None
        return found

    async def list_objects(
        self, kind: Kind, labels: Mapping[str, str] | None = None
    ) -> tuple[list[Manifest], str]:
        params = {}
        selector = label_selector(labels)
        if selector:
            params["labelSelector"] = selector
        body = await self.request("GET", self.path(kind), params=params)
        items = body.get("items") or []
        for item in items:
            # Lists omit apiVersion/kind on items; put them back so objects are whole.
            item.setdefault("apiVersion", RESOURCES[kind].api_version)
            item.setdefault("kind", kind)
        return items, str((body.get("metadata") or {}).get("resourceVersion", ""))

    async def create(self, obj: Manifest) -> Manifest:
        try:
            created: Manifest = await self.request(
                "POST",
                self.path(obj["kind"]),
                params={"fieldManager": FIELD_MANAGER, "fieldValidation": "Strict"},
                body=obj,
            )
        except KubeConflict as exc:
            raise Conflict(f"{obj['kind']} {obj['metadata']['name']!r} already exists") from exc
        except KubeInvalid as exc:
            raise _refused(exc) from exc
        except KubeNotFound as exc:
            raise NotFound(exc.message) from exc
        return created

    async def apply(self, obj: Manifest, *, force: bool = True) -> Manifest:
        """Server-side apply: we own the fields we send and drop the ones we stop sending."""
        params = {"fieldManager": FIELD_MANAGER, "fieldValidation": "Strict"}
        if force:
            # We are the only writer of the fields we render; take them back from kubectl
            # edits rather than fail (conflicts without force are reported as Conflict).
            params["force"] = "true"
        try:
            applied: Manifest = await self.request(
                "PATCH",
                self.path(obj["kind"], obj["metadata"]["name"]),
                params=params,
                body=obj,
                content_type="application/apply-patch+yaml",
            )
        except KubeConflict as exc:
            raise Conflict(
                f"apply conflict on {obj['kind']} {obj['metadata']['name']!r}: {exc.message}"
            ) from exc
        except KubeInvalid as exc:
            raise _refused(exc) from exc
        except KubeNotFound as exc:
            raise NotFound(exc.message) from exc
        return applied

    async def delete(self, kind: Kind | CoreKind, name: str) -> bool:
        try:
            await self.request(
                "DELETE", self.path(kind, name), body={"propagationPolicy": "Background"}
            )
        except KubeNotFound:
            return False
        return True

    async def watch(
        self, kind: Kind, resource_version: str, labels: Mapping[str, str] | None = None
    ) -> AsyncIterator[tuple[str, Manifest]]:
        """Events after ``resource_version``; raises ``WatchExpired`` on 410 Gone."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
        }
        selector = label_selector(labels)
        if selector:
            params["labelSelector"] = selector
        timeout = type(self.http.timeout)(self.request_timeout, read=self.watch_seconds + 30)
        async with self.http.stream(
            "GET", self.path(kind), params=params, timeout=timeout
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                raise api_error(*_status_of(response))
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    raise api_error(
                        int(obj.get("code", 500)), str(obj.get("reason")), str(obj.get("message"))
                    )
                yield str(event.get("type")), obj

    async def get_path(self, path: str) -> Any:
        try:
            return await self.request("GET", path)
        except KubeNotFound:
            return None

    async def events_for(self, kind: str, name: str) -> list[Manifest]:
        body = await self.request(
            "GET",
            f"/api/v1/namespaces/{self.namespace}/events",
            params={"fieldSelector": f"involvedObject.kind={kind},involvedObject.name={name}"},
        )
        items: list[Manifest] = body.get("items") or []
        return items


def is_transport_error(exc: Exception) -> bool:
    # httpx and lightkube's fork of it (httpx2) raise the same-named classes from different
    # modules: match by name, not by module.
    names = ("TransportError", "HTTPError", "StreamError")
    return any(cls.__name__ in names for cls in type(exc).__mro__)


def _status_of(response: Any) -> tuple[int, str, str]:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return (
        int(body.get("code") or response.status_code),
        str(body.get("reason") or response.reason_phrase or ""),
        str(body.get("message") or response.text[:300]),
    )


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _refused(exc: KubeInvalid) -> InvalidInput:
    return InvalidInput(f"the Kubernetes API refused the object: {exc.message}")
