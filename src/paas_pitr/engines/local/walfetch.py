"""Prefetch WAL segments from a barman-cloud archive into a local spool, in ONE process.

    python -m paas_pitr.engines.local.walfetch DESTINATION SERVER SPOOL FIRST COUNT JOBS

Started in the background by restore_command. barman-cloud-wal-restore starts a Python
interpreter and boto3 for every segment (~0.5 s each on a 2-core machine), which kept WAL
replay ~5x slower than a local copy. This fetches the COUNT segments after FIRST with one
S3 client and JOBS threads, decompresses them as barman stored them, and renames each into
the spool when complete; restore_command then only moves files. Anything it cannot do (an
unknown compression, a missing object) it leaves to barman-cloud-wal-restore.
Credentials and the endpoint come from the environment (AWS_*, PAAS_PITR_WALFETCH_ENDPOINT).
"""

from __future__ import annotations

import bz2
import gzip
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

DECOMPRESSORS = {"": lambda data: data, ".gz": gzip.decompress, ".bz2": bz2.decompress}


def following(name: str, count: int) -> list[str]:
    timeline, log, segment = name[:8], int(name[8:16], 16), int(name[16:24], 16)
    names = []
    for _ in range(count):
        segment += 1
        if segment > 0xFF:  # 16 MiB segments: 256 per log file
            segment, log = 0, log + 1
        names.append(f"{timeline}{log:08X}{segment:08X}")
    return names


def fetch_one(client: Any, bucket: str, prefix: str, name: str, spool: Path) -> bool:
    target = spool / name
    marker = spool / f".inflight-{name}"
    if target.exists():
        return True
    try:
        marker.mkdir()
    except FileExistsError:
        return True  # restore_command is fetching it, or another prefetch is
    try:
        listing = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}{name[:16]}/{name}")
        for item in listing.get("Contents", []):
            suffix = item["Key"].rsplit(name, 1)[-1]
            decompress = DECOMPRESSORS.get(suffix)
            if decompress is None:
                continue
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            partial = spool / f".part-{name}"
            partial.write_bytes(decompress(body))
            partial.rename(target)
            return True
        return False
    except Exception:  # a prefetch never fails recovery: restore_command fetches itself
        return False
    finally:
        marker.rmdir()


def main(argv: list[str]) -> int:
    destination, server, spool_dir, first, count, jobs = argv
    import boto3
    from botocore.config import Config

    bucket, _, path = destination.removeprefix("s3://").partition("/")
    prefix = f"{path.strip('/')}/{server}/wals/".lstrip("/")
    client = boto3.client(
        "s3",
        endpoint_url=os.environ.get("PAAS_PITR_WALFETCH_ENDPOINT") or None,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}),
    )
    spool = Path(spool_dir)
    names = following(first, int(count))
    with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        results = list(pool.map(lambda n: fetch_one(client, bucket, prefix, n, spool), names))
    return 0 if any(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
