"""Core (``v1``) kinds the double serves besides the CRDs: Services and Secrets, with the
OpenAPI schema of the fields a Service and a Secret have (a field outside it is unknown,
refused under ``fieldValidation=Strict`` as kube-apiserver does)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from jsonschema import Draft7Validator

from paas_pitr.cnpg.schema import CrdRegistry, CrdVersion, _convert

_METADATA = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

SERVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "properties": {
                "type": {
                    "type": "string",
                    "enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
                },
                "clusterIP": {"type": "string"},
                "clusterIPs": {"type": "array", "items": {"type": "string"}},
                "selector": _STRING_MAP,
                "sessionAffinity": {"type": "string", "enum": ["None", "ClientIP"]},
                "publishNotReadyAddresses": {"type": "boolean"},
                "ports": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "properties": {
                            "name": {"type": "string"},
                            "protocol": {"type": "string", "enum": ["TCP", "UDP", "SCTP"]},
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                            "targetPort": {"x-kubernetes-int-or-string": True},
                            "appProtocol": {"type": "string"},
                        },
                    },
                },
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}

SECRET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": _METADATA,
        "type": {"type": "string"},
        "immutable": {"type": "boolean"},
        "data": _STRING_MAP,
        "stringData": _STRING_MAP,
    },
}

# The API server's own checks of a basic-auth Secret (what a schema cannot say).
BASIC_AUTH = "kubernetes.io/basic-auth"


def with_core_kinds(registry: CrdRegistry) -> CrdRegistry:
    """A registry serving ``registry``'s CRDs and the core Service and Secret."""
    extended = CrdRegistry(
        versions=dict(registry.versions), unevaluated_rules=registry.unevaluated_rules
    )
    for kind, plural, schema in (
        ("Service", "services", SERVICE_SCHEMA),
        ("Secret", "secrets", SECRET_SCHEMA),
    ):
        extended.versions[("v1", kind)] = CoreVersion(
            group="",
            version="v1",
            kind=kind,
            plural=plural,
            namespaced=True,
            schema=schema,
            validator=Draft7Validator(_convert(schema)),
            has_status_subresource=False,
        )
    return extended


class CoreVersion(CrdVersion):
    @property
    def api_version(self) -> str:
        return self.version


def admit(obj: dict[str, Any], previous: dict[str, Any] | None) -> str | None:
    """What kube-apiserver does to a core object before storing it: a Secret's
    ``stringData`` merged into ``data`` (base64), ``data`` checked to be base64, its
    ``type`` immutable, a basic-auth Secret's keys; a Service's cluster IP assigned and
    kept. Returns why the object is refused, or ``None``."""
    if obj.get("kind") == "Secret":
        data = obj.setdefault("data", {})
        for key, value in (obj.pop("stringData", None) or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        for key, value in data.items():
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return f"data[{key}]: Invalid value: illegal base64 data"
        obj.setdefault("type", "Opaque")
        if previous is not None and previous.get("type", "Opaque") != obj["type"]:
            return "type: Invalid value: field is immutable"
        if obj["type"] == BASIC_AUTH and "username" not in data and "password" not in data:
            return (
                'data[username]: Required value: a basic-auth Secret needs "username" or "password"'
            )
        return None
    if obj.get("kind") == "Service":
        spec = obj.setdefault("spec", {})
        old_ip = ((previous or {}).get("spec") or {}).get("clusterIP")
        if old_ip and spec.get("clusterIP", old_ip) != old_ip:
            return "spec.clusterIP: Invalid value: field is immutable"
        spec["clusterIP"] = old_ip or f"10.96.{len(str(id(obj))) % 250}.{id(obj) % 250 + 1}"
        spec.setdefault("type", "ClusterIP")
        ports = spec.get("ports") or []
        if spec["type"] != "ExternalName" and not ports:
            return "spec.ports: Required value"
        for port in ports:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    return None
