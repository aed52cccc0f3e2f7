"""An S3 endpoint on loopback for tests: moto's server, as s3fs's own tests use it."""
from __future__ import annotations

import contextlib
from typing import Iterator

import pytest


@contextlib.contextmanager
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1 (a free port); yield its endpoint URL; stop it."""
    from moto.server import ThreadedMotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": ""}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def dvc_s3_remote(repo, endpoint: str) -> None:
    """Make a fresh bucket on `endpoint` the default DVC remote of the git + DVC repo `repo`."""
    import uuid

    import s3fs

    from tests.conftest import BIN, run

    bucket = f"dvc-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, key="testing", secret="testing").mkdir(bucket)
    run([str(BIN / "dvc"), "remote", "add", "-d", "storage", f"s3://{bucket}/store"], repo)
    run([str(BIN / "dvc"), "remote", "modify", "storage", "endpointurl", endpoint], repo)
