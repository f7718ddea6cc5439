"""The HTTP API (FastAPI): routes under /v1 and /api/v1, one error envelope, bearer auth."""

from paas_pitr.api.app import create_app

__all__ = ["create_app"]
