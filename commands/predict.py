"""`vqvp predict VIDEO --out OUT.mp4`: 4 frames of a video in, 16 predicted frames out.

VIDEO is a path or URL (anything fsspec opens: s3://, https://, ...) in any format PyAV reads;
frames are resampled to ingest.fps and resized/cropped to the VQ-VAE's frame size exactly as
ingest does.
Writes OUT.mp4 and OUT.gif (the 16 frames: the 4 given ones decoded, then 12 predicted) and
OUT_side_by_side.mp4 (given | predicted | ground truth, the last when the video is long enough).
Models come from models/*/model.pt by default, or from MLflow as models:/NAME@ALIAS.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from vqvp_core.clip import CLIP_FRAMES as CLIP, GIVEN_FRAMES as GIVEN

DEFAULTS = {"vqvae": "models/vqvae/model.pt", "top_prior": "models/top_prior/model.pt",
            "bottom_prior": "models/bottom_prior/model.pt"}


SYNTHETIC_ONLY = (
    "vqvp predict: note: these models were trained on synthetic shapes on black only (the demo's data); "
    "on real footage even the 4 given frames decode as dark blobs. Train the same pipeline on your own "
    "videos: vqvp run -S ingest.source=/path/to/videos (README, 'Prediction').")


def resolve_model(ref: str, tmp: Path) -> Path:
    """A local model file, or `models:/NAME@ALIAS` / `models:/NAME/VERSION` from the MLflow registry
    (the registered pyfunc's model file)."""
    if not ref.startswith("models:/"):
        return Path(ref)
    import mlflow

    from stages.common import tracking_uri
    from stages.mlflow_models import download_component

    mlflow.set_tracking_uri(tracking_uri())
    return download_component(ref, tmp / ref[len("models:/"):].replace("@", "_").replace("/", "_"))


def read_frames(video: str, fps: float, size: int, start: int):
    """Up to 16 frames from frame `start` (at `fps`), or a clear error."""
    from vqvp_core.video.io import VideoError, read_clip

    try:
        return read_clip(video, fps, size, start)
    except VideoError as exc:
        if exc.reason == "too_short":
            raise SystemExit(f"vqvp predict: {video} is too short: {exc.message}") from None
        raise SystemExit(f"vqvp predict: cannot read {video}: {exc}") from None


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("video", help="a video file or URL")
    ap.add_argument("--out", required=True, help="output .mp4 (a .gif and a _side_by_side.mp4 are written beside it)")
    ap.add_argument("--start", type=int, default=0, help="first given frame, counted at ingest.fps (default 0)")
    ap.add_argument("--temperature", type=float, default=None,
                    help="sampling temperature (default: sample.temperature in --params; tiny 0.4, paper 1.0)")
    ap.add_argument("--top-k", type=int, default=None,
                    help="sample only among the k most likely codes (1 = greedy; default: all codes)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed: the same seed, the same prediction (default 0)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="where the models run (default auto: a GPU if there is one)")
    ap.add_argument("--params", default="params.yaml", help="where ingest.fps comes from (default %(default)s)")
    ap.add_argument("--fps", type=float, default=None, help="frame rate to resample to (default: ingest.fps)")
    for kind, default in DEFAULTS.items():
        ap.add_argument(f"--{kind.replace('_', '-')}", default=default, help=f"file or models:/NAME@ALIAS (default {default})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vqvp predict", description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    from vqvp_core.config import ConfigError, load_params

    if args.start < 0 or (args.temperature or 0) < 0 or (args.top_k is not None and args.top_k < 1):
        print("vqvp predict: error: --start and --temperature must be >= 0, --top-k >= 1", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        print(f"vqvp predict: error: --out must end in .mp4, got {out}", file=sys.stderr)
        return 2
    try:
        params = load_params(args.params)
        fps = args.fps or params.ingest.fps
        temperature = params.sample.temperature if args.temperature is None else args.temperature
    except ConfigError as exc:
        print(f"vqvp predict: {exc}", file=sys.stderr)
        return 2

    from vqvp_core.models.registry import read_model_file
    from vqvp_core.sampling.predict import Predictor
    from vqvp_core.train.loop import resolve_device
    from vqvp_core.video.write import write_video
    from vqvp_core.viz import hold, mark, side_by_side

    with tempfile.TemporaryDirectory() as tmp:
        try:
            paths = {k: resolve_model(getattr(args, k), Path(tmp)) for k in DEFAULTS}
            predictor = Predictor.from_files(paths["vqvae"], paths["top_prior"], paths["bottom_prior"],
                                             device=resolve_device(args.device))
            source = read_model_file(paths["vqvae"]).get("data_source")
        except Exception as exc:  # a missing file, an unknown registered model or alias
            print(f"vqvp predict: cannot load the models: {exc}; train them first (vqvp run)", file=sys.stderr)
            return 3
    # frames at the size the VQ-VAE was trained on, resized and cropped as ingest does
    frames = read_frames(args.video, fps, predictor.vqvae.config.size, args.start)
    pred = predictor.predict(frames[None, :GIVEN], temperature, args.top_k, args.seed)[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, pred, fps=fps)
    write_video(out.with_suffix(".gif"), pred, fps=fps)
    panels = [hold(mark(frames[:GIVEN], GIVEN), CLIP), mark(pred, GIVEN)]
    if len(frames) == CLIP:
        panels.append(frames)
    side = out.with_name(out.stem + "_side_by_side.mp4")
    write_video(side, side_by_side(*panels), fps=fps)
    print(f"vqvp predict: {out}, {out.with_suffix('.gif')}, {side} "
          f"(given | predicted{' | ground truth' if len(frames) == CLIP else ''})")
    if source == "synthetic":
        print(SYNTHETIC_ONLY, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
