"""S3 access shared by every part of paas-pitr: the one boto3 client factory, and the few
direct calls made outside :class:`paas_pitr.bucket.Bucket` (creating the bucket, asking
whether a folder is empty, the time of a folder's newest object).

Every error is an ``ObjectStoreError`` (503 ``object_store_unavailable``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from paas_pitr.errors import ObjectStoreError

ACCESS_KEY = "AWS_ACCESS_KEY_ID"
SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
# Any region works for non-AWS endpoints, but boto3 must be given one to sign requests.
REGION = "us-east-1"


def s3_client(endpoint: str, credentials: Mapping[str, str]) -> Any:
    """A boto3 S3 client for ``endpoint``, shaped for S3 servers that are not AWS.

    Path-style addressing: the embedded rclone server and most S3-compatible stores serve no
    per-bucket host names. Checksums only where an operation requires them: since botocore
    1.36 every upload carries a CRC header that non-AWS servers reject (the same reason the
    barman-cloud scripts run with ``AWS_REQUEST_CHECKSUM_CALCULATION=when_required``).
    """
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=credentials.get(ACCESS_KEY),
        aws_secret_access_key=credentials.get(SECRET_KEY),
        region_name=REGION,
        config=BotoConfig(
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


_clients: dict[tuple[str, str, str], Any] = {}
_clients_lock = threading.Lock()


def cached_client(endpoint: str, credentials: Mapping[str, str]) -> Any:
    """:func:`s3_client`, built once per endpoint and keys.

    Building a client costs tens of milliseconds (it loads the service model); boto3
    clients are thread-safe once built, but building them concurrently is not.
    """
    key = (endpoint, credentials.get(ACCESS_KEY, ""), credentials.get(SECRET_KEY, ""))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            if len(_clients) > 16:  # credentials rotated many times: start afresh
                _clients.clear()
            client = _clients[key] = s3_client(endpoint, credentials)
        return client


def ensure_bucket(endpoint: str, credentials: dict[str, str], bucket: str) -> None:
    """Create ``bucket`` unless it exists: barman-cloud >= 3.16 no longer creates it."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(endpoint, credentials)
    try:
        client.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise ObjectStoreError(f"cannot reach bucket {bucket!r} at {endpoint}: {exc}") from exc
    except BotoCoreError as exc:
        raise ObjectStoreError(f"cannot reach the object store at {endpoint}: {exc}") from exc
    try:
        client.create_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        raise ObjectStoreError(f"cannot create bucket {bucket!r} at {endpoint}: {exc}") from exc


def newest_object_time(
    endpoint: str, credentials: dict[str, str], bucket: str, prefix: str
) -> float | None:
    """Last-modified time of the newest object under ``prefix`` (the WAL archive's head)."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(endpoint, credentials)
    newest: float | None = None
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                stamp = item["LastModified"].timestamp()
                newest = stamp if newest is None or stamp > newest else newest
    except (ClientError, BotoCoreError) as exc:
        raise ObjectStoreError(f"cannot list {prefix!r}: {exc}") from exc
    return newest


def has_objects(endpoint: str, credentials: dict[str, str], bucket: str, prefix: str) -> bool:
    """Whether anything is stored under ``prefix``."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(endpoint, credentials)
    try:
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except (ClientError, BotoCoreError) as exc:
        raise ObjectStoreError(f"cannot list {prefix!r}: {exc}") from exc
    return bool(page.get("Contents"))
