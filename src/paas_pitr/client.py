"""A small client of the paas-pitr API, used by the CLI (and usable from scripts)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from paas_pitr.errors import DependencyError, PitrError


class ApiError(PitrError):
    """An error answered by the server, with its stable code."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message, details=details)
        self.status = status
        self.api_code = code


class PitrClient:
    def __init__(self, base_url: str, token: str | None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PitrClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DependencyError(f"cannot reach {self._http.base_url}: {exc}") from exc
        return self._answer(response)

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.is_error:
            error = body.get("error") or {}
            raise ApiError(
                response.status_code,
                str(error.get("code", "http_error")),
                str(error.get("message", response.text[:200])),
                error.get("details") or {},
            )
        return body.get("data")

    def create_addon(
        self, app: str, plan: str, version: str | None = None, addon_id: str | None = None
    ) -> Any:
        body: dict[str, Any] = {"plan": plan}
        if version:
            body["version"] = version
        if addon_id:
            body["addon_id"] = addon_id
        return self.request("POST", f"/v1/apps/{app}/addons", json=body)

    def addons(self, app: str) -> Any:
        return self.request("GET", f"/v1/apps/{app}/addons")

    def addon(self, app: str, addon: str) -> Any:
        return self.request("GET", f"/v1/apps/{app}/addons/{addon}")

    def change_plan(self, app: str, addon: str, plan: str) -> Any:
        return self.request("PATCH", f"/v1/apps/{app}/addons/{addon}", json={"plan": plan})

    def delete_addon(self, app: str, addon: str) -> Any:
        return self.request("DELETE", f"/v1/apps/{app}/addons/{addon}")

    def backups(self, app: str, addon: str, page: int = 1, per_page: int = 50) -> Any:
        return self.request(
            "GET",
            f"/v1/apps/{app}/addons/{addon}/backups",
            params={"page": page, "per_page": per_page},
        )

    def create_backup(self, app: str, addon: str) -> Any:
        return self.request("POST", f"/v1/apps/{app}/addons/{addon}/backups")

    def restore(
        self,
        app: str,
        addon: str,
        timestamp: str | None,
        idempotency_key: str | None = None,
        *,
        target: dict[str, Any] | None = None,
    ) -> Any:
        """``target``: a body naming another recovery target (lsn, xid, restore_point,
        before_event, inclusive) instead of ``timestamp``."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.request(
            "POST",
            f"/v1/apps/{app}/addons/{addon}/restore",
            json=target if target is not None else {"timestamp": timestamp},
            headers=headers,
        )

    def events(self, app: str, addon: str, params: dict[str, str], timeout: float) -> Any:
        return self.request(
            "GET", f"/v1/apps/{app}/addons/{addon}/events", params=params, timeout=timeout
        )

    def events_streamed(
        self,
        app: str,
        addon: str,
        params: dict[str, str],
        timeout: float,
        on_progress: Callable[[dict[str, int]], None],
    ) -> Any:
        """:meth:`events` with the scan's progress: ``on_progress`` gets each
        ``{segments_done, segments_total, bytes_done, bytes_total}`` the server streams
        (``application/x-ndjson``); an error once the scan started raises :class:`ApiError`
        with its code (the HTTP status is then 200)."""
        path = f"/v1/apps/{app}/addons/{addon}/events"
        headers = {"Accept": "application/x-ndjson"}
        try:
            with self._http.stream(
                "GET", path, params=params, headers=headers, timeout=timeout
            ) as response:
                if response.is_error or not response.headers.get("content-type", "").startswith(
                    "application/x-ndjson"
                ):
                    response.read()
                    return self._answer(response)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    message = json.loads(line)
                    if "progress" in message:
                        on_progress(message["progress"])
                    elif "result" in message:
                        return message["result"]
                    else:
                        error = message.get("error") or {}
                        raise ApiError(
                            response.status_code,
                            str(error.get("code", "internal_error")),
                            str(error.get("message", line[:200])),
                            error.get("details") or {},
                        )
        except httpx.HTTPError as exc:
            raise DependencyError(f"cannot reach {self._http.base_url}: {exc}") from exc
        except ValueError as exc:
            raise DependencyError(f"{path} answered a line that is not JSON: {exc}") from exc
        raise DependencyError(f"{path} ended its answer before the scan's result")

    def create_restore_point(self, app: str, addon: str, name: str) -> Any:
        return self.request(
            "POST", f"/v1/apps/{app}/addons/{addon}/restore-points", json={"name": name}
        )

    def restore_points(self, app: str, addon: str) -> Any:
        return self.request("GET", f"/v1/apps/{app}/addons/{addon}/restore-points")

    def restore_status(self, app: str, addon: str, restore_id: str) -> Any:
        return self.request("GET", f"/v1/apps/{app}/addons/{addon}/restores/{restore_id}")

    def restores(self, app: str, addon: str) -> Any:
        return self.request("GET", f"/v1/apps/{app}/addons/{addon}/restores")

    def undo_restore(self, app: str, addon: str, restore_id: str) -> Any:
        return self.request("POST", f"/v1/apps/{app}/addons/{addon}/restores/{restore_id}/undo")

    def delete_restore(self, app: str, addon: str, restore_id: str) -> None:
        self.request("DELETE", f"/v1/apps/{app}/addons/{addon}/restores/{restore_id}")

    # --- restore drills ------------------------------------------------------------------

    def start_drill(self, app: str, addon: str, timestamp: str | None = None) -> Any:
        body = {"timestamp": timestamp} if timestamp else {}
        return self.request("POST", f"/v1/apps/{app}/addons/{addon}/drills", json=body)

    def drill(self, app: str, addon: str, drill_id: str) -> Any:
        return self.request("GET", f"/v1/apps/{app}/addons/{addon}/drills/{drill_id}")

    def drills(self, app: str, addon: str, page: int = 1, per_page: int = 20) -> Any:
        return self.request(
            "GET",
            f"/v1/apps/{app}/addons/{addon}/drills",
            params={"page": page, "per_page": per_page},
        )
