"""A test double of the Kubernetes API server, served over real HTTP.

Faithful where our engine depends on it: resource versions and 409 on stale writes,
server-side apply with field ownership per manager AND operation as kube-apiserver tracks it
(a POST or PUT makes its manager's ``Update`` entry own the fields it wrote; an apply makes
the ``Apply`` entry own what it sends, conflicts with any other entry, even one of the same
manager name, take ``force``, and only fields the ``Apply`` entry alone owned go when it stops
sending them: so fields created by a POST survive a later apply that omits them), the status
subresource, label selectors, watch with resume and 410 Gone after
compaction, Events, and validation of every written object against the real CNPG CRDs with
unknown fields rejected (``fieldValidation=Strict``). Deletion as kube-apiserver does it: an
object with finalizers is only marked (``deletionTimestamp`` set, generation bumped, 202)
and goes once its finalizers are removed, and no finalizer may be added meanwhile;
owner-reference garbage collection is asynchronous, as the garbage collector controller
is: with the default ``Background`` propagation the owner goes at once and its dependents
``gc_delay`` seconds later; ``Foreground`` keeps the owner (``foregroundDeletion``
finalizer) until its blocking dependents are gone; ``Orphan`` strips the dependents'
owner references instead.
Simplifications, documented: lists are atomic for apply (no list-map merging), one
namespace-scoped store, no admission webhooks.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from paas_pitr.cnpg.schema import CrdRegistry
from tests.k8s_double.core import admit, with_core_kinds

Path = tuple[str, ...]
# A managedFields entry: kube-apiserver tells owners apart by manager name and operation.
Owner = tuple[str, str]


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def failure(
    code: int, reason: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse(status_body(code, reason, message), status_code=code, headers=headers)


def leaves(obj: Any, prefix: Path = ()) -> dict[Path, Any]:
    if isinstance(obj, dict) and obj:
        found: dict[Path, Any] = {}
        for key, value in obj.items():
            found.update(leaves(value, (*prefix, key)))
        return found
    return {prefix: obj}


def set_path(obj: dict[str, Any], path: Path, value: Any) -> None:
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
    obj[path[-1]] = copy.deepcopy(value)


def drop_path(obj: dict[str, Any], path: Path) -> None:
    parents = [obj]
    for key in path[:-1]:
        child = parents[-1].get(key)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):  # prune emptied parents
        if parents[depth] == {}:
            parents[depth - 1].pop(path[depth - 1], None)


def selected(obj: dict[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    path_contains: str = ""


class FakeKubernetes:
    IGNORED_FOR_APPLY: frozenset[Path] = frozenset(
        {
            ("apiVersion",),
            ("kind",),
            ("metadata", "name"),
            ("metadata", "namespace"),
        }
    )

    def __init__(
        self,
        registry: CrdRegistry,
        *,
        namespace: str = "paas-apps",
        token: str = "test-token",
        crds_present: set[str] | None = None,
        gc_delay: float = 0.3,
    ) -> None:
        self.registry = with_core_kinds(registry)
        # The garbage collector's lag: dependents of a deleted owner live this long.
        self.gc_delay = gc_delay
        # Deleted owners' uids -> (when the collector handles them, propagation policy).
        self.garbage: dict[str, tuple[float, str]] = {}
        self.namespace = namespace
        self.token = token
        self.plurals = {v.plural: v for v in self.registry.versions.values()}
        self.crds_present = (
            crds_present
            if crds_present is not None
            else {f"{v.plural}.{v.group}" for v in registry.versions.values()}
        )
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.managers: dict[tuple[str, str], dict[Owner, set[Path]]] = {}
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []
        self.compacted_before = 0
        self.gone_served = 0
        self.watch_epoch = 0
        self.rv = 100
        self.events: list[dict[str, Any]] = []
        self.secrets: dict[str, dict[str, str]] = {}
        """name -> data, values base64-encoded as the API returns them."""
        self.configmaps: dict[str, dict[str, Any]] = {}
        """name -> ConfigMap (core v1): optimistic concurrency on resourceVersion, garbage
        collected with the owner its ownerReferences name."""
        self.deployments: dict[str, list[dict[str, Any]]] = {}
        """namespace -> Deployment objects (the operator's, for its version)."""
        self.faults: deque[Fault] = deque()
        self.down = False
        self.requests: list[tuple[str, str, str]] = []
        self.extra_verbs: list[tuple[str, str]] = []
        """(resource, verb) authorized beyond the request's own verb: kube-apiserver also
        checks ``create`` for an apply patch that creates its object."""
        self.lock = threading.RLock()

    # --- store -------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _record(self, event_type: str, plural: str, obj: dict[str, Any]) -> None:
        self.history.append((self.rv, event_type, plural, copy.deepcopy(obj)))

    def drop_watches(self) -> None:
        """End every open watch stream, as an API server restart or a load balancer would."""
        self.watch_epoch += 1

    def compact(self) -> None:
        """Forget history: watches from older resourceVersions get 410 Gone."""
        with self.lock:
            self.compacted_before = self.rv + 1

    def kind_plural(self, kind: str) -> str:
        return next(p for p, v in self.plurals.items() if v.kind == kind)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            self.collect_garbage()
            found = self.objects.get((self.kind_plural(kind), name))
            return copy.deepcopy(found) if found else None

    def by_kind(self) -> dict[tuple[str, str], dict[str, Any]]:
        with self.lock:
            self.collect_garbage()
            return {
                (self.plurals[plural].kind, name): copy.deepcopy(obj)
                for (plural, name), obj in self.objects.items()
            }

    def operator_put(self, obj: dict[str, Any]) -> None:
        """The operator creating an object (a scheduled Backup, say)."""
        with self.lock:
            plural = self.kind_plural(obj["kind"])
            stored = copy.deepcopy(obj)
            metadata = stored["metadata"]
            metadata.setdefault("namespace", self.namespace)
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault("creationTimestamp", _now())
            metadata["resourceVersion"] = self._next_rv()
            existed = (plural, metadata["name"]) in self.objects
            self.objects[(plural, metadata["name"])] = stored
            self._record("MODIFIED" if existed else "ADDED", plural, stored)
            self._finalize(plural, metadata["name"])

    def operator_status(self, kind: str, name: str, status: dict[str, Any]) -> None:
        with self.lock:
            plural = self.kind_plural(kind)
            stored = self.objects[(plural, name)]
            stored["status"] = copy.deepcopy(status)
            stored["metadata"]["resourceVersion"] = self._next_rv()
            self._record("MODIFIED", plural, stored)

    def _delete(
        self, plural: str, name: str, policy: str = "Background"
    ) -> tuple[dict[str, Any], bool] | None:
        """Delete or, with finalizers to run, mark for deletion; the object and whether it
        is gone (``False``: marked, 202)."""
        obj = self.objects.get((plural, name))
        if obj is None:
            return None
        metadata = obj["metadata"]
        if metadata.get("deletionTimestamp"):
            return copy.deepcopy(obj), False  # already terminating: nothing more to do
        finalizers = list(metadata.get("finalizers") or [])
        if policy == "Foreground" and self._dependents(metadata["uid"]):
            finalizers.append("foregroundDeletion")
        elif policy == "Orphan" and self._dependents(metadata["uid"]):
            finalizers.append("orphan")
        if not finalizers:
            self._remove(plural, name, "Background")
            return obj, True
        metadata["finalizers"] = finalizers
        metadata["deletionTimestamp"] = _now()
        metadata["deletionGracePeriodSeconds"] = 0
        metadata["generation"] = metadata.get("generation", 1) + 1
        metadata["resourceVersion"] = self._next_rv()
        self._record("MODIFIED", plural, obj)
        if policy in ("Foreground", "Orphan"):
            self.garbage[metadata["uid"]] = (time.monotonic() + self.gc_delay, policy)
        return copy.deepcopy(obj), False

    def _remove(self, plural: str, name: str, policy: str) -> None:
        removed = self.objects.pop((plural, name))
        self.managers.pop((plural, name), None)
        self._next_rv()
        self._record("DELETED", plural, removed)
        self.garbage[removed["metadata"]["uid"]] = (time.monotonic() + self.gc_delay, policy)

    def _finalize(self, plural: str, name: str) -> None:
        """A terminating object whose last finalizer was removed goes."""
        obj = self.objects.get((plural, name))
        if (
            obj
            and obj["metadata"].get("deletionTimestamp")
            and not obj["metadata"].get("finalizers")
        ):
            self._remove(plural, name, "Background")

    def _dependents(self, uid: str) -> list[tuple[str, str]]:
        return [
            key
            for key, obj in self.objects.items()
            if any(o.get("uid") == uid for o in obj["metadata"].get("ownerReferences") or [])
        ]

    def collect_garbage(self) -> None:
        """What the garbage collector has done by now: dependents of owners deleted more
        than ``gc_delay`` seconds ago are deleted (or orphaned), and a foreground or
        orphan deletion whose dependents are handled completes."""
        now = time.monotonic()
        for uid, (due, policy) in sorted(self.garbage.items(), key=lambda item: item[1][0]):
            if due > now:
                continue
            del self.garbage[uid]
            for cm_name, config_map in list(self.configmaps.items()):
                refs = config_map["metadata"].get("ownerReferences") or []
                if not any(o.get("uid") == uid for o in refs):
                    continue
                if policy == "Orphan":
                    config_map["metadata"]["ownerReferences"] = [
                        o for o in refs if o.get("uid") != uid
                    ]
                else:
                    del self.configmaps[cm_name]
            for plural, name in self._dependents(uid):
                obj = self.objects[(plural, name)]
                if policy == "Orphan":
                    obj["metadata"]["ownerReferences"] = [
                        o for o in obj["metadata"]["ownerReferences"] if o.get("uid") != uid
                    ]
                    obj["metadata"]["resourceVersion"] = self._next_rv()
                    self._record("MODIFIED", plural, obj)
                else:
                    self._delete(plural, name, "Background")
            owner = next(
                (key for key, o in self.objects.items() if o["metadata"]["uid"] == uid), None
            )
            if owner is None:
                continue
            finalizer = "orphan" if policy == "Orphan" else "foregroundDeletion"
            if policy == "Foreground" and any(
                any(o.get("uid") == uid and o.get("blockOwnerDeletion") for o in refs)
                for refs in (
                    self.objects[key]["metadata"].get("ownerReferences") or []
                    for key in self._dependents(uid)
                )
            ):
                self.garbage[uid] = (now + self.gc_delay, policy)  # blocked: look again
                continue
            obj = self.objects[owner]
            obj["metadata"]["finalizers"] = [
                f for f in obj["metadata"].get("finalizers") or [] if f != finalizer
            ]
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._record("MODIFIED", owner[0], obj)
            self._finalize(*owner)

    # --- HTTP --------------------------------------------------------------------------

    def app(self) -> Starlette:
        base = "/apis/{group}/{version}/namespaces/{namespace}/{plural}"
        routes = [
            Route("/version", self.version),
            Route("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", self.crd),
            Route("/api/v1/namespaces/{namespace}/events", self.list_events),
            Route(
                "/api/v1/namespaces/{namespace}/secrets/{name}",
                self.get_secret,
                methods=["GET", "PATCH", "DELETE"],
            ),
            Route(
                "/api/v1/namespaces/{namespace}/services/{name}",
                self.core_item,
                methods=["GET", "PATCH", "DELETE"],
            ),
            Route(
                "/api/v1/namespaces/{namespace}/{plural:str}",
                self.core_collection,
                methods=["POST"],
            ),
            Route(
                "/api/v1/namespaces/{namespace}/configmaps",
                self.configmap_collection,
                methods=["GET", "POST"],
            ),
            Route(
                "/api/v1/namespaces/{namespace}/configmaps/{name}",
                self.configmap_item,
                methods=["GET", "PUT", "DELETE"],
            ),
            Route("/apis/apps/v1/namespaces/{namespace}/deployments", self.list_deployments),
            Route(base, self.collection, methods=["GET", "POST"]),
            Route(base + "/{name}", self.item, methods=["GET", "PATCH", "PUT", "DELETE"]),
            Route(base + "/{name}/status", self.status, methods=["GET", "PATCH", "PUT"]),
        ]
        app = Starlette(routes=routes)
        app.add_middleware(_Gate, double=self)
        return app

    async def version(self, request: Request) -> Response:
        return JSONResponse({"major": "1", "minor": "31", "gitVersion": "v1.31.0-double"})

    async def crd(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.crds_present:
            return failure(404, "NotFound", f'customresourcedefinitions "{name}" not found')
        plural, _, group = name.partition(".")
        version = self.plurals.get(plural)
        return JSONResponse(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": name, "labels": {"app.kubernetes.io/version": "1.30.0"}},
                "spec": {
                    "group": group,
                    "versions": [{"name": version.version if version else "v1"}],
                },
            }
        )

    async def list_events(self, request: Request) -> Response:
        selector = request.query_params.get("fieldSelector", "")
        wanted = dict(term.split("=", 1) for term in selector.split(",") if "=" in term)
        items = [
            e
            for e in self.events
            if all(
                str(e.get("involvedObject", {}).get(k.split(".", 1)[1])) == v
                for k, v in wanted.items()
            )
        ]
        return JSONResponse({"kind": "EventList", "items": items})

    async def list_deployments(self, request: Request) -> Response:
        items = self.deployments.get(request.path_params["namespace"], [])
        return JSONResponse({"kind": "DeploymentList", "items": items})

    async def core_item(self, request: Request) -> Response:
        request.scope["path_params"]["plural"] = request.url.path.split("/")[-2]
        return await self.item(request)

    async def core_collection(self, request: Request) -> Response:
        plural = request.path_params["plural"]
        if plural == "configmaps":
            return await self.configmap_collection(request)
        if plural not in ("services", "secrets"):
            return failure(404, "NotFound", "the server could not find the requested resource")
        return await self.collection(request)

    async def get_secret(self, request: Request) -> Response:
        # Secrets the test wrote as the operator (self.secrets), else stored ones.
        if request.method != "GET" or request.path_params["name"] not in self.secrets:
            return await self.core_item(request)
        secret = self.secrets.get(request.path_params["name"])
        if secret is None:
            return failure(404, "NotFound", f'secrets "{request.path_params["name"]}" not found')
        return JSONResponse(
            {"kind": "Secret", "metadata": {"name": request.path_params["name"]}, "data": secret}
        )

    @staticmethod
    def _configmap_problem(body: Any, name: str | None) -> Response | None:
        if not isinstance(body, dict) or body.get("kind") != "ConfigMap":
            return failure(400, "BadRequest", "the body is not a ConfigMap")
        metadata = body.get("metadata") or {}
        if not metadata.get("name") or (name is not None and metadata["name"] != name):
            return failure(400, "BadRequest", "the name of the body does not match the URL")
        data = body.get("data") or {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return failure(422, "Invalid", f'ConfigMap "{metadata["name"]}" is invalid: data')
        if len(json.dumps(data)) > 1024 * 1024:
            return failure(422, "Invalid", "ConfigMap data exceeds 1 MiB")
        return None

    async def configmap_collection(self, request: Request) -> Response:
        if request.path_params["namespace"] != self.namespace:
            return failure(404, "NotFound", "namespace not served by this double")
        if request.method == "GET":
            selector = request.query_params.get("labelSelector")
            with self.lock:
                items = [
                    copy.deepcopy(c)
                    for _, c in sorted(self.configmaps.items())
                    if selected(c, selector)
                ]
            return JSONResponse(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMapList",
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": items,
                }
            )
        body = json.loads(await request.body())
        problem = self._configmap_problem(body, None)
        if problem is not None:
            return problem
        with self.lock:
            name = body["metadata"]["name"]
            if name in self.configmaps:
                return failure(409, "AlreadyExists", f'configmaps "{name}" already exists')
            stored = copy.deepcopy(body)
            metadata = stored["metadata"]
            metadata.update(
                namespace=self.namespace,
                uid=str(uuid.uuid4()),
                creationTimestamp=_now(),
                resourceVersion=self._next_rv(),
            )
            self.configmaps[name] = stored
            return JSONResponse(copy.deepcopy(stored), status_code=201)

    async def configmap_item(self, request: Request) -> Response:
        if request.path_params["namespace"] != self.namespace:
            return failure(404, "NotFound", "namespace not served by this double")
        name = request.path_params["name"]
        if request.method == "GET":
            with self.lock:
                found = self.configmaps.get(name)
            if found is None:
                return failure(404, "NotFound", f'configmaps "{name}" not found')
            return JSONResponse(copy.deepcopy(found))
        if request.method == "DELETE":
            with self.lock:
                removed = self.configmaps.pop(name, None)
            if removed is None:
                return failure(404, "NotFound", f'configmaps "{name}" not found')
            return JSONResponse(status_body(200, "", "deleted") | {"status": "Success"})
        body = json.loads(await request.body())
        problem = self._configmap_problem(body, name)
        if problem is not None:
            return problem
        with self.lock:
            previous = self.configmaps.get(name)
            if previous is None:
                return failure(404, "NotFound", f'configmaps "{name}" not found')
            sent = body["metadata"].get("resourceVersion")
            if sent and sent != previous["metadata"]["resourceVersion"]:
                return failure(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on configmaps "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try "
                    "again",
                )
            stored = copy.deepcopy(body)
            for key in ("uid", "creationTimestamp", "namespace"):
                stored["metadata"][key] = previous["metadata"][key]
            stored["metadata"]["resourceVersion"] = self._next_rv()
            self.configmaps[name] = stored
            return JSONResponse(copy.deepcopy(stored))

    def _resource(self, request: Request) -> tuple[str, Any] | Response:
        plural = request.path_params["plural"]
        version = self.plurals.get(plural)
        group = (
            f"{request.path_params['group']}/{request.path_params['version']}"
            if "group" in request.path_params
            else "v1"
        )
        if version is None or version.api_version != group:
            return failure(
                404, "NotFound", f"the server could not find the requested resource ({plural})"
            )
        if request.path_params["namespace"] != self.namespace:
            return failure(404, "NotFound", "namespace not served by this double")
        return plural, version

    async def collection(self, request: Request) -> Response:
        resolved = self._resource(request)
        if isinstance(resolved, Response):
            return resolved
        plural, version = resolved
        selector = request.query_params.get("labelSelector")
        if request.method == "GET" and request.query_params.get("watch") == "true":
            return self._watch(
                plural,
                request.query_params.get("resourceVersion", "0"),
                selector,
                float(request.query_params.get("timeoutSeconds", "20")),
            )
        if request.method == "GET":
            with self.lock:
                items = [
                    copy.deepcopy(obj)
                    for (p, _), obj in sorted(self.objects.items())
                    if p == plural and selected(obj, selector)
                ]
                return JSONResponse(
                    {
                        "apiVersion": version.api_version,
                        "kind": f"{version.kind}List",
                        "metadata": {"resourceVersion": str(self.rv)},
                        "items": items,
                    }
                )
        body = json.loads(await request.body())
        with self.lock:
            name = body.get("metadata", {}).get("name")
            if (plural, name) in self.objects:
                return failure(409, "AlreadyExists", f'{plural} "{name}" already exists')
            refused = admit(body, None)
            if refused is not None:
                return failure(422, "Invalid", f'{body.get("kind")} "{name}" is invalid: {refused}')
            problem = self._validate(body, None, request)
            if problem is not None:
                return problem
            manager = request.query_params.get("fieldManager", "unknown")
            stored = self._stamp(copy.deepcopy(body), None)
            self.managers[(plural, name)] = {(manager, "Update"): set(self._owned(body))}
            self._managed_fields(stored, self.managers[(plural, name)])
            self.objects[(plural, name)] = stored
            self._record("ADDED", plural, stored)
            return JSONResponse(copy.deepcopy(stored), status_code=201)

    def _validate(
        self, obj: dict[str, Any], old: dict[str, Any] | None, request: Request
    ) -> Response | None:
        if old is not None and old["metadata"].get("deletionTimestamp"):
            added = set(obj.get("metadata", {}).get("finalizers") or []) - set(
                old["metadata"].get("finalizers") or []
            )
            if added:
                return failure(
                    422,
                    "Forbidden",
                    "no new finalizers can be added if the object is being deleted, found new "
                    f"finalizers {sorted(added)}",
                )
        strict = request.query_params.get("fieldValidation") == "Strict"
        errors = self.registry.errors(obj, old=old)
        unknown = [e for e in errors if e.startswith("unknown field")]
        others = [e for e in errors if not e.startswith("unknown field")]
        if others or (unknown and strict):
            return failure(
                422 if others else 400,
                "Invalid" if others else "BadRequest",
                f'{obj.get("kind")} "{obj.get("metadata", {}).get("name")}" is invalid: '
                + "; ".join(others + (unknown if strict else [])),
            )
        return None

    def _stamp(self, obj: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
        metadata = obj.setdefault("metadata", {})
        metadata["namespace"] = self.namespace
        if previous is None:
            metadata["uid"] = str(uuid.uuid4())
            metadata["creationTimestamp"] = _now()
            metadata["generation"] = 1
        else:
            for key in ("uid", "creationTimestamp"):
                metadata[key] = previous["metadata"][key]
            # Set by the server on deletion; no client write takes them back.
            for key in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                if key in previous["metadata"]:
                    metadata[key] = previous["metadata"][key]
            changed = obj.get("spec") != previous.get("spec")
            metadata["generation"] = previous["metadata"].get("generation", 1) + int(changed)
            if "status" in previous:
                obj["status"] = copy.deepcopy(previous["status"])
        metadata["resourceVersion"] = self._next_rv()
        return obj

    def _owned(self, obj: dict[str, Any]) -> list[Path]:
        body = {k: v for k, v in obj.items() if k != "status"}
        return [
            p
            for p in leaves(body)
            if p not in self.IGNORED_FOR_APPLY and p[:2] != ("metadata", "resourceVersion")
        ]

    async def item(self, request: Request) -> Response:
        resolved = self._resource(request)
        if isinstance(resolved, Response):
            return resolved
        plural, _ = resolved
        name = request.path_params["name"]
        key = (plural, name)
        if request.method == "GET":
            with self.lock:
                found = self.objects.get(key)
            if found is None:
                return failure(404, "NotFound", f'{plural} "{name}" not found')
            return JSONResponse(copy.deepcopy(found))
        if request.method == "DELETE":
            raw = await request.body()
            options = json.loads(raw) if raw else {}
            policy = str(
                request.query_params.get("propagationPolicy")
                or options.get("propagationPolicy")
                or "Background"
            )
            with self.lock:
                result = self._delete(plural, name, policy)
            if result is None:
                return failure(404, "NotFound", f'{plural} "{name}" not found')
            obj, gone = result
            return JSONResponse(obj, status_code=200 if gone else 202)
        body = json.loads(await request.body())
        with self.lock:
            previous = self.objects.get(key)
            if request.method == "PUT":
                return self._replace(plural, name, previous, body, request)
            if request.headers.get("content-type") != "application/apply-patch+yaml":
                return failure(415, "UnsupportedMediaType", "only server-side apply is served")
            return self._apply(plural, name, previous, body, request)

    def _replace(
        self,
        plural: str,
        name: str,
        previous: dict[str, Any] | None,
        body: dict[str, Any],
        request: Request,
    ) -> Response:
        if previous is None:
            return failure(404, "NotFound", f'{plural} "{name}" not found')
        sent = body.get("metadata", {}).get("resourceVersion")
        if sent and sent != previous["metadata"]["resourceVersion"]:
            return failure(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {plural} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        problem = self._validate(body, previous, request)
        if problem is not None:
            return problem
        # An update takes the fields it changed or added; fields it removed belong to nobody.
        before = dict(leaves({k: v for k, v in previous.items() if k != "status"}))
        after = dict(leaves({k: v for k, v in body.items() if k != "status"}))
        updater: Owner = (request.query_params.get("fieldManager", "unknown"), "Update")
        managers = self.managers.setdefault((plural, name), {})
        taken = {p for p in self._owned(body) if before.get(p, object()) != after[p]}
        for owned in managers.values():
            owned.difference_update(taken)
            owned.intersection_update(after)
        managers.setdefault(updater, set()).update(taken)
        stored = self._stamp(copy.deepcopy(body), previous)
        self._managed_fields(stored, managers)
        self.objects[(plural, name)] = stored
        self._record("MODIFIED", plural, stored)
        self._finalize(plural, name)
        return JSONResponse(copy.deepcopy(stored))

    def _apply(
        self,
        plural: str,
        name: str,
        previous: dict[str, Any] | None,
        body: dict[str, Any],
        request: Request,
    ) -> Response:
        manager_name = request.query_params.get("fieldManager")
        if not manager_name:
            return failure(400, "BadRequest", "fieldManager is required for apply patch")
        manager: Owner = (manager_name, "Apply")
        force = request.query_params.get("force") == "true"
        managers = self.managers.setdefault((plural, name), {})
        applied = dict(leaves({k: v for k, v in body.items() if k != "status"}))
        current = dict(leaves({k: v for k, v in (previous or {}).items() if k != "status"}))
        conflicts = sorted(
            ".".join(path)
            for path, value in applied.items()
            if path in current
            and current[path] != value
            and any(path in owned for other, owned in managers.items() if other != manager)
        )
        if conflicts and not force:
            return failure(
                409,
                "Conflict",
                f"Apply failed with {len(conflicts)} conflicts: " + ", ".join(conflicts),
            )
        result = copy.deepcopy({k: v for k, v in (previous or {}).items() if k != "status"})
        others = (
            set().union(*(owned for other, owned in managers.items() if other != manager))
            if managers
            else set()
        )
        for path in managers.get(manager, set()):
            if path not in applied and path not in others:
                drop_path(result, path)
        for path, value in applied.items():
            if path in self.IGNORED_FOR_APPLY:
                continue
            set_path(result, path, value)
        result["apiVersion"], result["kind"] = body["apiVersion"], body["kind"]
        result.setdefault("metadata", {})["name"] = name
        refused = admit(result, previous)
        if refused is not None:
            return failure(422, "Invalid", f'{body["kind"]} "{name}" is invalid: {refused}')
        problem = self._validate(result, previous, request)
        if problem is not None:
            return problem
        managers[manager] = set(self._owned(body))
        remaining = dict(leaves({k: v for k, v in result.items() if k != "status"}))
        for other, owned in managers.items():
            if other != manager:
                if force:
                    # Forced: conflicting fields change hands; shared equal values stay shared.
                    owned.difference_update(
                        p for p in managers[manager] if current.get(p) != applied.get(p)
                    )
                owned.intersection_update(remaining)
        stored = self._stamp(result, previous)
        self._managed_fields(stored, managers)
        if previous is None:
            self.extra_verbs.append((plural, "create"))
        self.objects[(plural, name)] = stored
        self._record("MODIFIED" if previous else "ADDED", plural, stored)
        self._finalize(plural, name)
        return JSONResponse(copy.deepcopy(stored), status_code=200 if previous else 201)

    @staticmethod
    def _managed_fields(obj: dict[str, Any], managers: dict[Owner, set[Path]]) -> None:
        obj["metadata"]["managedFields"] = [
            {"manager": name, "operation": operation, "fieldsType": "FieldsV1", "fieldsV1": {}}
            for (name, operation), owned in sorted(managers.items())
            if owned
        ]

    async def status(self, request: Request) -> Response:
        resolved = self._resource(request)
        if isinstance(resolved, Response):
            return resolved
        plural, _ = resolved
        name = request.path_params["name"]
        with self.lock:
            previous = self.objects.get((plural, name))
            if previous is None:
                return failure(404, "NotFound", f'{plural} "{name}" not found')
            if request.method == "GET":
                return JSONResponse(copy.deepcopy(previous))
            body = json.loads(await request.body())
            sent = body.get("metadata", {}).get("resourceVersion")
            if request.method == "PUT" and sent and sent != previous["metadata"]["resourceVersion"]:
                return failure(409, "Conflict", "the object has been modified")
            stored = copy.deepcopy(previous)
            # The status subresource ignores everything but status.
            if request.method == "PUT":
                stored["status"] = body.get("status", {})
            else:
                stored["status"] = {**stored.get("status", {}), **body.get("status", {})}
            stored["metadata"]["resourceVersion"] = self._next_rv()
            self.objects[(plural, name)] = stored
            self._record("MODIFIED", plural, stored)
            return JSONResponse(copy.deepcopy(stored))

    def _watch(self, plural: str, since: str, selector: str | None, seconds: float) -> Response:
        start = int(since or "0")

        async def stream() -> Any:
            if start and start < self.compacted_before:
                self.gone_served += 1
                gone = status_body(410, "Expired", f"too old resource version: {start}")
                yield json.dumps({"type": "ERROR", "object": gone}) + "\n"
                return
            position = start
            epoch = self.watch_epoch
            deadline = asyncio.get_running_loop().time() + min(seconds, 60)
            while asyncio.get_running_loop().time() < deadline:
                with self.lock:
                    self.collect_garbage()
                    pending = [h for h in self.history if h[0] > position and h[2] == plural]
                for rv, event_type, _, obj in pending:
                    position = rv
                    if selected(obj, selector):
                        yield json.dumps({"type": event_type, "object": obj}) + "\n"
                if self.down or self.watch_epoch != epoch:
                    return
                await asyncio.sleep(0.05)

        return StreamingResponse(stream(), media_type="application/json")


class _Gate:
    """Auth, outage and fault injection in front of every route."""

    def __init__(self, app: Any, double: FakeKubernetes) -> None:
        self.app = app
        self.double = double

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        double = self.double
        with double.lock:
            double.collect_garbage()  # the collector's progress by the time this arrives
        double.requests.append(
            (request.method, request.url.path, request.headers.get("content-type", ""))
        )
        if double.down:
            response: Response = failure(503, "ServiceUnavailable", "the double is down")
        elif request.headers.get("authorization") != f"Bearer {double.token}":
            response = failure(401, "Unauthorized", "Unauthorized")
        else:
            fault = next((f for f in double.faults if f.path_contains in request.url.path), None)
            if fault is None:
                await self.app(scope, receive, send)
                return
            fault.times -= 1
            if fault.times <= 0:
                double.faults.remove(fault)
            response = failure(fault.status, "Injected", "injected fault", fault.headers)
        await response(scope, receive, send)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
