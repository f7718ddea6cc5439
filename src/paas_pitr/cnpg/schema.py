"""Validation of objects against real CustomResourceDefinitions, as strictly as the API server.

``kubectl apply`` sends ``fieldValidation=Strict``: an unknown field (the seed's
``wal.archivingMode``) is a 400, not a silently pruned key. This module turns a CRD's
structural ``openAPIV3Schema`` into a JSON Schema that forbids unknown fields, checks the
object metadata the way the API server does, and evaluates the handful of CEL rules the
CNPG CRDs carry (``x-kubernetes-validations``). It is used by the tests, by the Kubernetes
API test double, and by ``paas-pitr render --crds DIR``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

from paas_pitr.errors import SchemaViolation

CRDS_DIR_ENV = "PAAS_PITR_CRDS_DIR"


_VALUE_KEYWORDS = {
    "type",
    "properties",
    "items",
    "required",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "uniqueItems",
    "additionalProperties",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
}


def _convert(node: Mapping[str, Any], *, in_combinator: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _VALUE_KEYWORDS:
            continue
        if key == "properties":
            out[key] = {k: _convert(v, in_combinator=in_combinator) for k, v in value.items()}
        elif key == "items":
            out[key] = _convert(value, in_combinator=in_combinator)
        elif key == "additionalProperties" and isinstance(value, Mapping):
            out[key] = _convert(value, in_combinator=in_combinator)
        elif key in {"anyOf", "oneOf", "allOf"}:
            out[key] = [_convert(v, in_combinator=True) for v in value]
        elif key == "not":
            out[key] = _convert(value, in_combinator=True)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [*out.get("anyOf", []), {"type": ["integer", "string"]}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    # In a structural schema, value-validation branches (anyOf...) never declare fields;
    # only the node itself prunes, so only the node itself forbids unknown fields.
    if (
        not in_combinator
        and node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


# --- object metadata, checked by the API server itself rather than by the CRD -------------

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_METADATA_FIELDS = {
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
}


def validate_label_key(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        return f"label key {key!r}: prefix must be a DNS-1123 subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return f"label key {key!r}: name must be 1-63 alphanumerics, '-', '_' or '.'"
    return None


def validate_label_value(value: object) -> str | None:
    if not isinstance(value, str):
        return f"label value {value!r} must be a string"
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return f"label value {value!r} must be at most 63 alphanumerics, '-', '_' or '.'"
    return None


def metadata_errors(metadata: object) -> list[str]:
    if not isinstance(metadata, Mapping):
        return ["metadata: must be an object"]
    errors = [f'unknown field "metadata.{k}"' for k in metadata if k not in _METADATA_FIELDS]
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        errors.append("metadata.name: Required value")
    elif len(name) > 253 or not _SUBDOMAIN.match(name):
        errors.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    namespace = metadata.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not _LABEL.match(namespace)):
        errors.append(f"metadata.namespace: {namespace!r} is not a DNS-1123 label")
    for section in ("labels", "annotations"):
        entries = metadata.get(section)
        if entries is None:
            continue
        if not isinstance(entries, Mapping):
            errors.append(f"metadata.{section}: must be a map of strings")
            continue
        for key, value in entries.items():
            problem = validate_label_key(str(key))
            if problem is None and section == "labels":
                problem = validate_label_value(value)
            elif problem is None and not isinstance(value, str):
                problem = f"annotation {key!r} must be a string"
            if problem:
                errors.append(f"metadata.{section}: {problem}")
    owners = metadata.get("ownerReferences")
    if owners is not None:
        if not isinstance(owners, list):
            errors.append("metadata.ownerReferences: must be a list")
        else:
            for index, owner in enumerate(owners):
                missing = [
                    k
                    for k in ("apiVersion", "kind", "name", "uid")
                    if not isinstance(owner, Mapping) or not owner.get(k)
                ]
                if missing:
                    errors.append(f"metadata.ownerReferences[{index}]: missing {missing}")
    return errors


# --- CEL: the rules the CNPG CRDs carry, evaluated by hand -------------------------------

CelCheck = Callable[[Any, Any], bool]


def _has(value: Any, key: str) -> bool:
    return isinstance(value, Mapping) and key in value


_CEL_RULES: dict[str, CelCheck] = {
    "!has(self.serverName)": lambda self, old: not _has(self, "serverName"),
    "!(has(self.imageCatalogRef) && has(self.imageName))": lambda self, old: (
        not (_has(self, "imageCatalogRef") and _has(self, "imageName"))
    ),
    "self == oldSelf": lambda self, old: old is None or self == old,
    "oldSelf == self": lambda self, old: old is None or self == old,
    "self > 0": lambda self, old: isinstance(self, int) and self > 0,
    "!self.exists(a, a.startsWith('--log-level'))": lambda self, old: (
        not any(isinstance(a, str) and a.startswith("--log-level") for a in (self or []))
    ),
    "self.kind == 'ImageCatalog' || self.kind == 'ClusterImageCatalog'": lambda self, old: (
        isinstance(self, Mapping) and self.get("kind") in {"ImageCatalog", "ClusterImageCatalog"}
    ),
    "!has(self.builtinLocale) || self.localeProvider == 'builtin'": lambda self, old: (
        not _has(self, "builtinLocale") or self.get("localeProvider") == "builtin"
    ),
}


def _walk_cel(
    schema: Mapping[str, Any], value: Any, old: Any, path: str, unevaluated: set[str]
) -> Iterator[str]:
    for rule in schema.get("x-kubernetes-validations") or []:
        expression = " ".join(str(rule.get("rule", "")).split())
        check = _CEL_RULES.get(expression)
        if check is None:
            unevaluated.add(expression)
            continue
        if not check(value, old):
            where = path + (rule.get("fieldPath") or "")
            yield f"{where or '<root>'}: Invalid value: {rule.get('message', expression)}"
    if isinstance(value, Mapping):
        for key, subschema in (schema.get("properties") or {}).items():
            if key in value:
                old_child = old.get(key) if isinstance(old, Mapping) else None
                yield from _walk_cel(subschema, value[key], old_child, f"{path}.{key}", unevaluated)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            yield from _walk_cel(schema["items"], item, None, f"{path}[{index}]", unevaluated)


# --- the registry of CRDs ------------------------------------------------------------------


@dataclass(frozen=True)
class CrdVersion:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    schema: Mapping[str, Any]
    validator: Draft7Validator
    has_status_subresource: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


@dataclass
class CrdRegistry:
    versions: dict[tuple[str, str], CrdVersion] = field(default_factory=dict)
    unevaluated_rules: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, directory: Path) -> CrdRegistry:
        registry = cls()
        files = sorted(directory.glob("*.yaml"))
        if not files:
            raise FileNotFoundError(f"no CRD files (*.yaml) in {directory}")
        for path in files:
            for crd in cls.load_file(path):
                registry.add(crd)
        return registry

    @staticmethod
    def load_file(path: Path) -> list[Mapping[str, Any]]:
        with path.open(encoding="utf-8") as handle:
            return [
                document
                for document in yaml.safe_load_all(handle)
                if isinstance(document, Mapping)
                and document.get("kind") == "CustomResourceDefinition"
            ]

    def add(self, crd: Mapping[str, Any]) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            schema = version["schema"]["openAPIV3Schema"]
            entry = CrdVersion(
                group=spec["group"],
                version=version["name"],
                kind=spec["names"]["kind"],
                plural=spec["names"]["plural"],
                namespaced=spec.get("scope") == "Namespaced",
                schema=schema,
                validator=Draft7Validator(_convert(schema)),
                has_status_subresource="status" in (version.get("subresources") or {}),
            )
            self.versions[(entry.api_version, entry.kind)] = entry

    def lookup(self, api_version: str, kind: str) -> CrdVersion | None:
        return self.versions.get((api_version, kind))

    def errors(self, obj: Mapping[str, Any], *, old: Mapping[str, Any] | None = None) -> list[str]:
        """Every reason the API server would refuse ``obj`` (empty when it is valid)."""
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        entry = self.lookup(str(api_version), str(kind))
        if entry is None:
            return [f"no CRD serves apiVersion={api_version!r} kind={kind!r}"]
        problems = metadata_errors(obj.get("metadata"))
        for error in entry.validator.iter_errors(obj):
            problems.append(_describe(error))
        problems.extend(_walk_cel(entry.schema, obj, old, "", self.unevaluated_rules))
        return problems

    def check(self, obj: Mapping[str, Any], *, old: Mapping[str, Any] | None = None) -> None:
        problems = self.errors(obj, old=old)
        if problems:
            name = (obj.get("metadata") or {}).get("name")
            raise SchemaViolation(
                f"{obj.get('kind')} {name!r} is invalid: " + "; ".join(problems),
                details={"errors": problems},
            )


def _describe(error: Any) -> str:
    path = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in error.absolute_path)
    path = path.replace(".[", "[")
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = set((error.schema.get("properties") or {}).keys())
        unknown = sorted(k for k in error.instance if k not in allowed)
        return "; ".join(f'unknown field "{path + "." if path else ""}{key}"' for key in unknown)
    return f"{path or '<root>'}: {error.message}"


def find_crds_dir(start: Path | None = None) -> Path | None:
    """``$PAAS_PITR_CRDS_DIR``, else ``../shared/cnpg/crds`` beside the checkout."""
    configured = os.environ.get(CRDS_DIR_ENV)
    if configured:
        path = Path(configured)
        return path if path.is_dir() else None
    here = (start or Path.cwd()).resolve()
    for base in (here, *here.parents):
        candidate = base.parent / "shared" / "cnpg" / "crds"
        if candidate.is_dir():
            return candidate
    return None
