"""Ingest throughput vs bare PyAV decoding of the same files, measured in one run.

    python bench/ingest.py [--videos 48] [--frames 96] [--size 128] [--fps 30] [--workers 0]

Writes synthetic mp4 videos (h264) to a temp folder, then times
  1. bare decoding: PyAV decodes every frame to an RGB ndarray, nothing else, with the same
     number of processes as ingest;
  2. the whole ingest (decode, resample, resize + crop, windows, shards, manifest), at the
     videos' own frame rate so both decode the same frames.
Prints source frames/s for both and their ratio (ingest / bare; 1.0 means no overhead).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402

from vqvp_core.config import IngestParams  # noqa: E402
from vqvp_core.data.ingest import run_ingest  # noqa: E402
from vqvp_core.data.synthetic import SyntheticConfig, generate_video  # noqa: E402
from vqvp_core.video.write import write_video  # noqa: E402


def bare_decode(path: str) -> int:
    n = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"  # as ingest: deterministic, one decoding thread per process
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24")
            n += 1
    return n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--size", type=int, default=128, help="source frame size (ingest crops to 64)")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--workers", type=int, default=0, help="processes; 0 = all cores")
    args = ap.parse_args(argv)
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="vqvp-bench-") as tmp:
        src = Path(tmp) / "videos"
        cfg = SyntheticConfig(n_videos=args.videos, n_frames=args.frames, size=args.size, speed=(1.0, 6.0))
        for i in range(args.videos):
            write_video(src / f"v{i:04d}.mp4", generate_video(cfg, i), fps=args.fps)
        paths = sorted(str(p) for p in src.glob("*.mp4"))

        t0 = time.perf_counter()
        with mp.get_context("spawn").Pool(workers) as pool:
            frames = sum(pool.map(bare_decode, paths, chunksize=1))
        bare_s = time.perf_counter() - t0

        params = IngestParams(source=str(src), size=64, fps=float(args.fps), workers=workers)
        t0 = time.perf_counter()
        summary = run_ingest(params, Path(tmp) / "clips", progress=False)
        ingest_s = time.perf_counter() - t0

    print(f"videos: {args.videos} x {args.frames} frames, {args.size}x{args.size} h264 -> 64x64 clips, "
          f"{workers} processes; {summary.clips} clips, {summary.rejected} rejected")
    print(f"bare PyAV decode : {frames / bare_s:9.1f} source frames/s  ({bare_s:.2f} s)")
    print(f"whole ingest     : {frames / ingest_s:9.1f} source frames/s  ({ingest_s:.2f} s)")
    print(f"ratio ingest/bare: {bare_s / ingest_s:.2f} (1.00 = ingest costs no more than decoding alone)")


if __name__ == "__main__":
    main()
