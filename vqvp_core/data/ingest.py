"""Ingest: raw videos -> 16-frame uint8 clips in shards, a manifest and a rejected-input report.

Layout of the output folder (written atomically: built beside the target, then swapped in):
    shard-00000.npy ...   uint8 (N, clip_len, size, size, 3), at most `shard_size` clips each
    manifest.parquet      one row per clip: clip_id, source, source_id, start_time, fps, label,
                          split, shard, index
    rejected.csv          every skipped input and why (input, reason, detail)
    stats.json            counts per split, videos, rejections

Decoding runs in a process pool (one video per task). Each worker streams its clips into a
staging file, so memory stays bounded by one clip in the worker and one shard in the writer.
Results are consumed in source order, so the same inputs and params give byte-identical outputs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from vqvp_core.atomic import atomic_dir
from vqvp_core.data.sources import Rejected, VideoItem, assign_split, list_videos

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["clip_id", "source", "source_id", "start_time", "fps", "label", "split", "shard", "index"]


class IngestError(RuntimeError):
    """The stage as a whole cannot produce clips (no source, or no clip survived)."""


@dataclass
class VideoResult:
    item: VideoItem
    staged: str | None = None          # raw uint8 clips, back to back
    starts: list[float] = field(default_factory=list)
    fps: float = 0.0
    label: str = ""
    rejected: Rejected | None = None


@dataclass
class IngestSummary:
    videos: int
    videos_ok: int
    clips: int
    rejected: int
    splits: dict[str, int]
    rejected_by_reason: dict[str, int]
    shards: int
    seconds: float
    frames: int
    source_digest: str = ""   # of the list of inputs: what the raw source held when ingested

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def synthetic_config(params):
    """The generator's config from an `IngestParams`: its synthetic section at ingest's size/fps."""
    from vqvp_core.data.synthetic import SyntheticConfig

    return SyntheticConfig.at(params.synthetic, params.size, params.fps)


def _clip_iter(item: VideoItem, params):
    """(start_time, clip) for one video, and its fps/label. Raises VideoError on bad input."""
    if item.uri.startswith("synthetic://"):
        from vqvp_core.data.synthetic import generate_video, video_metadata
        from vqvp_core.video.io import iter_windows

        cfg = synthetic_config(params)
        index = int(item.uri.split("://", 1)[1])
        frames = generate_video(cfg, index)
        meta = video_metadata(cfg, index)
        windows = iter_windows(iter(frames), clip_len=params.clip_len, stride=params.stride)
        return ((start / params.fps, clip) for start, clip in windows), params.fps, meta.get("label", "")

    import fsspec

    from vqvp_core.video.io import read_clips

    def gen():
        with fsspec.open(item.uri, "rb", **params.storage_options) as fh:
            yield from read_clips(fh, target_fps=params.fps, size=params.size,
                                  clip_len=params.clip_len, stride=params.stride)
    return gen(), params.fps, item.label


def process_video(item: VideoItem, params, staging: str, slot: int) -> VideoResult:
    """Decode one video into a staging file. Never raises for bad input: it reports it."""
    from vqvp_core.video.io import VideoError

    result = VideoResult(item=item)
    path = os.path.join(staging, f"{slot:08d}.bin")
    try:
        clips, result.fps, result.label = _clip_iter(item, params)
        with open(path, "wb") as out:
            for start, clip in clips:
                out.write(np.ascontiguousarray(clip, dtype=np.uint8).tobytes())
                result.starts.append(round(float(start), 6))
                if params.max_clips_per_video and len(result.starts) >= params.max_clips_per_video:
                    break
        if not result.starts:
            raise VideoError("too_short", f"fewer than {params.clip_len} frames at {params.fps:g} fps")
        result.staged = path
    except VideoError as exc:
        result.rejected = Rejected(item.uri, exc.reason, str(exc))
    except FileNotFoundError as exc:
        result.rejected = Rejected(item.uri, "missing_file", str(exc))
    except Exception as exc:  # a decoder or network fault on one input must not stop the stage
        log.warning("unexpected error on %s: %r", item.uri, exc)
        result.rejected = Rejected(item.uri, "error", f"{type(exc).__name__}: {exc}")
    if result.rejected is not None:
        result.starts = []
        if os.path.exists(path):
            os.remove(path)
    return result


def _work(args) -> VideoResult:
    return process_video(*args)


class ShardWriter:
    """Appends clips to a fixed-size buffer and writes a shard each time it fills."""

    def __init__(self, out: Path, shard_size: int, clip_shape: tuple[int, ...]):
        self.out, self.shard_size = out, shard_size
        self.buffer = np.empty((shard_size, *clip_shape), dtype=np.uint8)
        self.fill, self.shard = 0, 0

    @property
    def shard_name(self) -> str:
        return f"shard-{self.shard:05d}.npy"

    def add(self, clip: np.ndarray) -> tuple[str, int]:
        name, index = self.shard_name, self.fill
        self.buffer[self.fill] = clip
        self.fill += 1
        if self.fill == self.shard_size:
            self.flush()
        return name, index

    def flush(self) -> None:
        if self.fill:
            np.save(self.out / self.shard_name, self.buffer[: self.fill])
            self.shard += 1
            self.fill = 0


def _results(items, params, staging, workers):
    jobs = [(item, params, staging, i) for i, item in enumerate(items)]
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_work, jobs)
        return
    # spawn, not fork: the parent may hold threads (MLflow, Prefect) that fork would copy mid-lock.
    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_work, jobs, chunksize=1)


def _clip_id(source_id: str, start: float) -> str:
    return hashlib.sha1(f"{source_id}@{start:.6f}".encode()).hexdigest()[:16]


def run_ingest(params, out_dir: str | Path, progress: bool = True) -> IngestSummary:
    """Ingest `params.source` into `out_dir` (replaced atomically). See the module docstring."""
    t0 = time.perf_counter()
    items, rejected = list_videos(params)
    if not items:
        raise IngestError(f"source {params.source!r} holds no video files "
                          f"(looked for {params.extensions}); {len(rejected)} other inputs skipped")
    workers = params.workers or os.cpu_count() or 1
    clip_shape = (params.clip_len, params.size, params.size, 3)
    rows: list[dict] = []
    with atomic_dir(out_dir) as tmp:
        staging = tmp / ".staging"
        staging.mkdir()
        writer = ShardWriter(tmp, params.shard_size, clip_shape)
        bar = tqdm(total=len(items), desc="ingest", unit="video", disable=not progress)
        for res in _results(items, params, str(staging), workers):
            bar.update(1)
            if res.rejected is not None:
                rejected.append(res.rejected)
                bar.set_postfix(clips=len(rows), rejected=len(rejected))
                continue
            split = res.item.split or assign_split(res.item.source_id, params.split.seed,
                                                   params.split.train, params.split.val)
            staged = np.memmap(res.staged, dtype=np.uint8, mode="r",
                               shape=(len(res.starts), *clip_shape))
            for k, start in enumerate(res.starts):
                shard, index = writer.add(staged[k])
                rows.append(dict(clip_id=_clip_id(res.item.source_id, start), source=res.item.uri,
                                 source_id=res.item.source_id, start_time=start, fps=float(res.fps),
                                 label=res.label, split=split, shard=shard, index=index))
            del staged
            os.remove(res.staged)
            bar.set_postfix(clips=len(rows), rejected=len(rejected))
        bar.close()
        writer.flush()
        staging.rmdir()
        if not rows:
            reasons = sorted({r.reason for r in rejected})
            raise IngestError(f"no clip survived ingest of {params.source!r}: all {len(items)} videos were "
                              f"rejected (reasons: {reasons}); see the log for details")
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
        manifest.to_parquet(tmp / "manifest.parquet", index=False)
        rej = pd.DataFrame([r.__dict__ for r in rejected], columns=["input", "reason", "detail"])
        rej.sort_values(["input", "reason"], kind="stable").to_csv(tmp / "rejected.csv", index=False)
        summary = IngestSummary(
            videos=len(items), videos_ok=int(manifest.source.nunique()), clips=len(rows), rejected=len(rejected),
            splits={s: int((manifest.split == s).sum()) for s in ("train", "val", "test")},
            rejected_by_reason={k: int(v) for k, v in rej.reason.value_counts().sort_index().items()},
            shards=writer.shard, seconds=0.0, frames=len(rows) * params.clip_len,
            source_digest=hashlib.sha256("\n".join(sorted({it.uri for it in items} | {r.input for r in rejected}))
                                         .encode()).hexdigest()[:32])
        (tmp / "stats.json").write_text(json.dumps({k: v for k, v in summary.to_dict().items()
                                                    if k != "seconds"}, indent=2, sort_keys=True) + "\n")
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary
