"""Ingest on real files: synthetic videos, a folder of good and broken videos, a Kinetics CSV."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vqvp_core.config import IngestParams
from vqvp_core.data.clips import ClipSet, read_manifest
from vqvp_core.data.ingest import MANIFEST_COLUMNS, IngestError, run_ingest
from vqvp_core.data.sources import SourceError, kinetics_filename
from tests.vqvp_core.video import fixtures


def synthetic(**kw) -> IngestParams:
    base = dict(source="synthetic", size=32, workers=1, synthetic=dict(n_videos=6, n_frames=32))
    base.update(kw)
    return IngestParams.model_validate(base)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_synthetic_outputs(tmp_path):
    summary = run_ingest(synthetic(), tmp_path / "clips", progress=False)
    out = tmp_path / "clips"
    assert summary.clips == 12 and summary.videos == 6 and summary.rejected == 0  # 2 windows of 16 per video
    assert sorted(p.name for p in out.iterdir()) == ["manifest.parquet", "rejected.csv", "shard-00000.npy", "stats.json"]
    manifest = read_manifest(out)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest.clip_id.is_unique
    clips = ClipSet(out)
    assert len(clips) == 12 and clips[0].shape == (16, 32, 32, 3) and clips[0].dtype == np.uint8
    assert set(manifest.start_time.round(3)) == {0.0, 2.0}  # 16 frames at 8 fps
    stats = json.loads((out / "stats.json").read_text())
    assert stats["clips"] == 12 and sum(stats["splits"].values()) == 12


def test_splits_are_by_video(tmp_path):
    run_ingest(synthetic(synthetic=dict(n_videos=40, n_frames=32)), tmp_path / "clips", progress=False)
    manifest = read_manifest(tmp_path / "clips")
    per_video = manifest.groupby("source_id").split.nunique()
    assert (per_video == 1).all()
    assert set(manifest.split) == {"train", "val", "test"}


def test_byte_identical_across_runs_and_worker_counts(tmp_path):
    run_ingest(synthetic(workers=1, shard_size=5), tmp_path / "a", progress=False)
    run_ingest(synthetic(workers=2, shard_size=5), tmp_path / "b", progress=False)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert len(list((tmp_path / "a").glob("shard-*.npy"))) == 3  # 12 clips, 5 per shard


def test_rerun_replaces_output_atomically(tmp_path):
    out = tmp_path / "clips"
    run_ingest(synthetic(), out, progress=False)
    (out / "stale-file").write_text("from an older run")
    run_ingest(synthetic(synthetic=dict(n_videos=3, n_frames=16)), out, progress=False)
    assert not (out / "stale-file").exists()
    assert len(read_manifest(out)) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_stride_and_max_clips(tmp_path):
    s = run_ingest(synthetic(stride=8, synthetic=dict(n_videos=2, n_frames=32)), tmp_path / "a", progress=False)
    assert s.clips == 2 * 3  # windows start at 0, 8, 16
    s = run_ingest(synthetic(stride=8, max_clips_per_video=2, synthetic=dict(n_videos=2, n_frames=32)),
                   tmp_path / "b", progress=False)
    assert s.clips == 4


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    expected = fixtures.make_zoo(root / "videos" / "mixed")
    (root / "videos" / "README.txt").write_text("not a video")
    (root / "videos" / ".hidden.mp4").write_bytes(b"")  # hidden files are ignored
    return root / "videos", expected


@pytest.mark.parametrize("workers", [1, 2])
def test_folder_of_good_and_broken_videos(zoo, tmp_path, workers):
    folder, expected = zoo
    params = IngestParams(source=str(folder), size=32, fps=30.0, workers=workers)
    summary = run_ingest(params, tmp_path / "clips", progress=False)
    manifest = read_manifest(tmp_path / "clips")
    rejected = pd.read_csv(tmp_path / "clips" / "rejected.csv")
    got = {Path(p).name for p in manifest.source}
    reasons = {Path(p).name: r for p, r in zip(rejected.input, rejected.reason)}
    for name, outcome in expected.items():
        ext_ok = Path(name).suffix.lower() in params.extensions
        if not ext_ok:
            assert reasons[name] == "not_a_video_extension"
        elif outcome == fixtures.ZOO_OK:
            assert name in got, f"{name} should give clips, was rejected: {reasons.get(name)}"
        else:
            assert reasons.get(name) == outcome, f"{name}: expected {outcome}, got {reasons.get(name)}"
    assert reasons["README.txt"] == "not_a_video_extension"
    assert ".hidden.mp4" not in reasons and ".hidden.mp4" not in got
    assert (manifest.label == "mixed").all()  # label = the folder holding the video
    assert summary.rejected == len(rejected)
    assert set(rejected.columns) == {"input", "reason", "detail"} and rejected.detail.notna().all()


def test_no_clip_survives(tmp_path):
    folder = tmp_path / "bad"
    fixtures.write_zero_byte(folder / "a.mp4")
    fixtures.write_not_a_video(folder / "b.mp4")
    with pytest.raises(IngestError, match="no clip survived"):
        run_ingest(IngestParams(source=str(folder), size=32, workers=1), tmp_path / "clips", progress=False)
    assert not (tmp_path / "clips").exists()


def test_unreachable_or_empty_source(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        run_ingest(IngestParams(source=str(tmp_path / "missing")), tmp_path / "clips", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no video files"):
        run_ingest(IngestParams(source=str(tmp_path / "empty")), tmp_path / "clips", progress=False)


def test_kinetics_csv_layout(tmp_path):
    root = tmp_path / "kinetics"
    rows = [("abseiling", "aaaaaaaaaaa", 10, 20, "train"), ("juggling balls", "bbbbbbbbbbb", 0, 10, "validate"),
            ("juggling balls", "ccccccccccc", 5, 15, "test"), ("abseiling", "missingvid0", 1, 11, "train")]
    for label, yid, t0, t1, split in rows[:2]:
        fixtures.write_test_video(root / split / label / kinetics_filename(yid, t0, t1), n_frames=40, fps=10)
    fixtures.write_test_video(root / kinetics_filename("ccccccccccc", 5, 15), n_frames=40, fps=10)  # flat layout
    csv = root / "annotations" / "kinetics600.csv"
    csv.parent.mkdir(parents=True)
    pd.DataFrame(rows, columns=["label", "youtube_id", "time_start", "time_end", "split"]).to_csv(csv, index=False)
    params = IngestParams(source=str(csv), video_root=str(root), size=32, fps=8.0, workers=1)
    summary = run_ingest(params, tmp_path / "clips", progress=False)
    manifest = read_manifest(tmp_path / "clips")
    assert summary.videos == 3 and summary.rejected == 1
    by_id = manifest.drop_duplicates("source_id").set_index("source_id")
    assert by_id.loc["aaaaaaaaaaa", "split"] == "train" and by_id.loc["bbbbbbbbbbb", "split"] == "val"
    assert by_id.loc["bbbbbbbbbbb", "label"] == "juggling balls"
    rejected = pd.read_csv(tmp_path / "clips" / "rejected.csv")
    assert rejected.reason.tolist() == ["missing_file"] and "missingvid0" in rejected.input[0]


def test_kinetics_csv_missing_columns(tmp_path):
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id\nx,y\n")
    with pytest.raises(SourceError, match="lacks columns"):
        run_ingest(IngestParams(source=str(csv)), tmp_path / "clips", progress=False)


def test_resampling_and_crop_of_real_video(tmp_path):
    """A 30 fps, 4 s landscape video at 8 fps gives 32 frames -> 2 clips of 16, square 32x32."""
    video = fixtures.write_test_video(tmp_path / "v" / "a.mp4", n_frames=120, size=(80, 48), fps=30)
    shutil.copy(video.path, tmp_path / "v" / "b copy.mp4")
    run_ingest(IngestParams(source=str(tmp_path / "v"), size=32, fps=8.0, workers=1), tmp_path / "clips",
               progress=False)
    manifest = read_manifest(tmp_path / "clips")
    assert len(manifest) == 4 and sorted(manifest.start_time.unique().tolist()) == [0.0, 2.0]
    assert ClipSet(tmp_path / "clips")[0].shape == (16, 32, 32, 3)
