"""A DVC remote on S3 (dvc-s3 with an endpoint URL): push and pull through moto's server on loopback."""
import hashlib
import shutil

import pytest

from tests.conftest import BIN, TINY_INGEST, run
from tests.s3server import dvc_s3_remote, moto_s3

pytestmark = pytest.mark.integration


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_push_and_pull_through_s3(repo, monkeypatch):
    flags = [a for o in TINY_INGEST for a in ("-S", o)]
    (repo / "params.yaml").write_text(run([str(BIN / "vqvp"), "params", "--preset", "tiny", *flags], repo).stdout)
    dvc = str(BIN / "dvc")
    run([dvc, "repro", "--single-item", "ingest"], repo)
    before = digests(repo / "data/clips")
    with moto_s3(monkeypatch) as endpoint:
        dvc_s3_remote(repo, endpoint)
        run([dvc, "push", "ingest"], repo)
        # a second machine: no cache, no data; the pull brings back the same bytes
        shutil.rmtree(repo / ".dvc" / "cache")
        shutil.rmtree(repo / "data/clips")
        run([dvc, "pull", "ingest"], repo)
    assert digests(repo / "data/clips") == before
