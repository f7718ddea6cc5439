"""A client-side check that every error the API answers is documented for its route: the
status among the operation's responses, the code named (in backquotes) in that status's
description. Opt in with ``RunningApi.client(token, contract=True)``."""

from __future__ import annotations

from typing import Any

import httpx


class UndocumentedError(AssertionError):
    pass


def _matches(template: str, path: str) -> bool:
    ours, theirs = template.split("/"), path.split("/")
    return len(ours) == len(theirs) and all(
        a == b or (a.startswith("{") and a.endswith("}")) for a, b in zip(ours, theirs, strict=True)
    )


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    # The template with the most literal segments wins, as a router prefers a fixed path.
    found = [
        (template.count("{"), item[method])
        for template, item in document["paths"].items()
        if _matches(template, path) and method in item
    ]
    if not found:
        return None
    operation: dict[str, Any] = min(found, key=lambda pair: pair[0])[1]
    return operation


def check_documented(document: dict[str, Any], response: httpx.Response) -> None:
    """Raise :class:`UndocumentedError` when ``response`` is an error its route does not
    document (status, or code in that status's description)."""
    if response.status_code < 400:
        return
    request = response.request
    operation = _operation(document, request.method.lower(), request.url.path)
    if operation is None:
        return  # an unknown route: the HTTP layer's own not_found / method_not_allowed
    documented = operation["responses"].get(str(response.status_code))
    if documented is None:
        raise UndocumentedError(
            f"{request.method} {request.url.path} answered {response.status_code}, "
            f"not documented: {sorted(operation['responses'])}"
        )
    response.read()
    code = response.json()["error"]["code"]
    if f"`{code}`" not in documented["description"]:
        raise UndocumentedError(
            f"{request.method} {request.url.path} answered {response.status_code} {code}, "
            f"not named in: {documented['description']!r}"
        )
