"""The embedded S3 server with a real rclone: the flags it runs with skip rclone's re-read of
what it wrote, never the check of what it received (a body that does not match its
Content-MD5 is refused, nothing stored), and it serves HTTPS when given a certificate."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from paas_pitr.engines.local.objectstorage import SERVE_FLAGS, EmbeddedS3
from paas_pitr.s3 import ensure_bucket, s3_client

pytestmark = pytest.mark.integration

BUCKET = "objects"


@pytest.fixture
def server(workdir: Path) -> Iterator[EmbeddedS3]:
    s3 = EmbeddedS3(workdir / "s3")
    s3.start()
    ensure_bucket(s3.url, s3.credentials, BUCKET)
    try:
        yield s3
    finally:
        s3.stop()


def test_the_server_runs_without_its_post_upload_rehash(server: EmbeddedS3) -> None:
    assert server.pid is not None
    command = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
    assert SERVE_FLAGS == ("--ignore-checksum", "--dir-cache-time", "100ms")
    assert command[-4:-1] == [b"--ignore-checksum", b"--dir-cache-time", b"100ms"]


def test_a_file_written_into_the_served_folder_is_listed_and_served_at_once(
    server: EmbeddedS3,
) -> None:
    client = s3_client(server.url, server.credentials)
    client.put_object(Bucket=BUCKET, Key="wals/0000000100000000/first", Body=b"1")
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="wals/")  # cached by the server
    assert [item["Key"] for item in listed["Contents"]] == ["wals/0000000100000000/first"]
    served = server.folder_of(f"s3://{BUCKET}/wals", server.credentials)
    assert served is not None
    folder = served.path
    (folder / "0000000100000000" / "second").write_bytes(b"22")
    (folder / "0000000100000000" / ".rclone_temp_put_third.0a1b").write_bytes(b"partial")

    # Within the server's directory cache time (100 ms), and for good.
    time.sleep(0.15)
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="wals/")
    assert [item["Key"] for item in listed["Contents"]] == [
        "wals/0000000100000000/first",
        "wals/0000000100000000/second",
    ]
    body = client.get_object(Bucket=BUCKET, Key="wals/0000000100000000/second")["Body"]
    assert body.read() == b"22"


def test_a_body_is_stored_exactly_and_one_that_does_not_match_its_md5_is_refused(
    server: EmbeddedS3,
) -> None:
    client = s3_client(server.url, server.credentials)
    body = bytes(range(256)) * 40_000
    digest = hashlib.md5(body, usedforsecurity=False)  # S3's Content-MD5 and ETag
    md5 = base64.b64encode(digest.digest()).decode()
    answer = client.put_object(Bucket=BUCKET, Key="wal/good", Body=body, ContentMD5=md5)
    assert answer["ETag"] == f'"{digest.hexdigest()}"'
    assert (server.data / BUCKET / "wal" / "good").read_bytes() == body

    wrong = base64.b64encode(hashlib.md5(b"other", usedforsecurity=False).digest()).decode()
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=BUCKET, Key="wal/bad", Body=body, ContentMD5=wrong)
    assert refused.value.response["Error"]["Code"] == "BadDigest"
    assert not (server.data / BUCKET / "wal" / "bad").exists()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl to make a certificate")
def test_given_a_certificate_it_serves_https(workdir: Path) -> None:
    certificate, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
            "-out", str(certificate),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    s3 = EmbeddedS3(workdir / "tls-s3", tls=(certificate, key))
    s3.start()
    try:
        assert s3.url.startswith("https://127.0.0.1:")
        (s3.data / BUCKET).mkdir()
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=s3.url,
            aws_access_key_id=s3.credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=s3.credentials["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
            verify=str(certificate),
            # As every client of the embedded server: no streamed checksum trailer.
            config=Config(request_checksum_calculation="when_required"),
        )
        client.put_object(Bucket=BUCKET, Key="k", Body=b"over tls")
        assert (s3.data / BUCKET / "k").read_bytes() == b"over tls"
    finally:
        s3.stop()
