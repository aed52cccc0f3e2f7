"""An s3:// folder source and an s3:// Kinetics CSV, through s3fs against moto's server on loopback."""
import uuid

import pandas as pd
import pytest
import s3fs

from tests.s3server import moto_s3
from tests.vqvp_core.video import fixtures
from vqvp_core.config import IngestParams
from vqvp_core.data.clips import read_manifest
from vqvp_core.data.ingest import run_ingest
from vqvp_core.data.sources import SourceError, kinetics_filename


@pytest.fixture
def s3(monkeypatch, tmp_path):
    with moto_s3(monkeypatch) as endpoint:
        opts = {"client_kwargs": {"endpoint_url": endpoint}, "key": "testing", "secret": "testing"}
        fs = s3fs.S3FileSystem(**opts)
        bucket = f"videos-{uuid.uuid4().hex[:8]}"  # moto keeps buckets across servers in one process
        fs.mkdir(bucket)
        local = tmp_path / "local"
        fixtures.write_test_video(local / "cats" / "a b.mp4", n_frames=40, fps=10)
        fixtures.write_test_video(local / "dogs" / "c.webm", n_frames=40, fps=10)
        fixtures.write_zero_byte(local / "dogs" / "empty.mp4")
        fixtures.write_test_video(local / kinetics_filename("yt_id_00001", 3, 13), n_frames=40, fps=10)
        fs.put(str(local) + "/", f"{bucket}/raw/", recursive=True)
        pd.DataFrame([("cats", "yt_id_00001", 3, 13, "test")],
                     columns=["label", "youtube_id", "time_start", "time_end", "split"]
                     ).to_csv(tmp_path / "k.csv", index=False)
        fs.put(str(tmp_path / "k.csv"), f"{bucket}/k.csv")
        s3fs.S3FileSystem.clear_instance_cache()
        yield bucket, opts


@pytest.mark.parametrize("workers", [1, 2])
def test_s3_folder_source(s3, tmp_path, workers):
    bucket, opts = s3
    params = IngestParams(source=f"s3://{bucket}/raw", storage_options=opts, size=32, workers=workers)
    summary = run_ingest(params, tmp_path / "clips", progress=False)
    manifest = read_manifest(tmp_path / "clips")
    assert summary.rejected == 1 and summary.videos == 4
    assert set(manifest.label) >= {"cats", "dogs"}
    assert all(src.startswith(f"s3://{bucket}/raw/") for src in manifest.source)
    rejected = pd.read_csv(tmp_path / "clips" / "rejected.csv")
    assert rejected.reason.tolist() == ["empty_file"] and rejected.input[0] == f"s3://{bucket}/raw/dogs/empty.mp4"


def test_s3_kinetics_csv(s3, tmp_path):
    bucket, opts = s3
    params = IngestParams(source=f"s3://{bucket}/k.csv", video_root=f"s3://{bucket}/raw", storage_options=opts,
                          size=32, workers=1)
    run_ingest(params, tmp_path / "clips", progress=False)
    manifest = read_manifest(tmp_path / "clips")
    assert set(manifest.split) == {"test"} and set(manifest.source_id) == {"yt_id_00001"}


def test_unreachable_bucket(s3, tmp_path):
    params = IngestParams(source="s3://no-such-bucket/videos", storage_options=s3[1], workers=1)
    with pytest.raises(SourceError, match="no-such-bucket"):
        run_ingest(params, tmp_path / "clips", progress=False)
