"""Stage `sample`: data/clips/ (test split) + the three models -> data/samples/.

Predicts 16 frames from the first 4 of each test clip (cached sampling by default, the same
codes as the naive sampler). Writes, atomically:
    predictions.npy     uint8 (N, 16, H, W, 3): the given 4 frames decoded + 12 predicted
    draws.npz           'draws': uint8 (S, N, 16, H, W, 3), all S = samples_per_clip draws (the
                        first is predictions.npy), for evaluate's best-of-draws figures
    manifest.parquet    clip_id, row (in predictions.npy), temperature, top_k, seed
    stats.json          split PSNR (of the mean squared error) of predicted frames 5-16 over
                        `samples_per_clip` draws per clip (rows of one batch, one generator seeded with `seed`): one draw, the
                        best draw (the SVG/SAVP protocol), the draws' pixel mean; the copy-last-frame
                        baseline, and how often a draw beats it on a clip
    contact_sheet.png   per clip: ground truth row, prediction row (green: given, red: predicted)
    videos/*.mp4, *.gif given | predicted | ground truth, side by side
and logs them to MLflow with the model files (their DVC md5) as the run's inputs, and registers
the video predictor (the three models as one MLflow pyfunc: stages/mlflow_models.py) as
`sample.register_as` with `sample.alias`.
"""
from __future__ import annotations

import json
from pathlib import Path

from stages.common import StageContext, run_stage
from stages.training import log_dataset
from vqvp_core.clip import GIVEN_FRAMES as GIVEN

CLIPS = Path("data/clips")
MODELS = {"vqvae": Path("models/vqvae"), "top_prior": Path("models/top_prior"), "bottom_prior": Path("models/bottom_prior")}
OUT = Path("data/samples")


def write_videos(folder: Path, clips, preds, ids, fps: float) -> None:
    from vqvp_core.video.write import write_video
    from vqvp_core.viz import hold, mark, side_by_side

    folder.mkdir(parents=True, exist_ok=True)
    for clip, pred, clip_id in zip(clips, preds, ids):
        video = side_by_side(hold(mark(clip[:GIVEN], GIVEN), len(clip)), mark(pred, GIVEN), clip)
        write_video(folder / f"{clip_id}.mp4", video, fps=fps)
        write_video(folder / f"{clip_id}.gif", video, fps=fps)


def _body(ctx: StageContext, args) -> None:
    import numpy as np
    import pandas as pd
    from vqvp_core.atomic import atomic_dir
    from vqvp_core.data.clips import ClipSet

    from vqvp_core.metrics import SampleSetPSNR
    from vqvp_core.sampling.predict import Predictor
    from vqvp_core.train.loop import resolve_device
    from vqvp_core.viz import contact_sheet, mark, save_png

    p = ctx.params.sample
    for split in ("test", "val", "train"):  # a tiny dataset may have no test videos
        test = ClipSet(CLIPS, split)
        if len(test):
            break
    n = min(p.count, len(test))
    clips = np.stack([test[i] for i in range(n)])
    log_dataset(ctx, CLIPS, context="conditioning")
    for path in MODELS.values():
        log_dataset(ctx, path, context="model")
    predictor = Predictor.from_files(*(path / "model.pt" for path in MODELS.values()), device=resolve_device(p.device))
    scores = SampleSetPSNR(clips, GIVEN)
    # every draw of every clip in one batch (row s * n + i: draw s of clip i): at tiny widths the cached
    # sampler's cost per code is mostly fixed overhead, which one large batch pays once
    stacked = np.concatenate([clips] * p.samples_per_clip)
    print(f"sample: {n} clips x {p.samples_per_clip} draws, {p.batch_size} rows at a time", flush=True)
    draws = predictor.predict(stacked, p.temperature, p.top_k, p.seed, p.cached, p.batch_size,
                              progress=not args.no_progress).reshape(p.samples_per_clip, *clips.shape)
    for pred in draws:
        scores.add(pred)
    preds = draws[0]  # predictions.npy: the first draw
    r = scores.result()
    stats = {"clips": n, "split": split, "temperature": p.temperature, "seed": p.seed, "top_k": p.top_k,
             "samples_per_clip": r["samples"], "psnr_predicted_frames": r["single"],
             "psnr_best_of_samples": r["best"], "psnr_mean_of_samples": r["mean"],
             "psnr_copy_last_frame": r["copy_last"], "clips_beating_copy_last": r["beats_copy_last"],
             "psnr_per_frame": r["single_per_frame"], "psnr_mean_of_samples_per_frame": r["mean_per_frame"],
             "psnr_copy_last_per_frame": r["copy_last_per_frame"]}
    ids = test.manifest.clip_id[:n].tolist()
    with atomic_dir(OUT) as tmp:
        np.save(tmp / "predictions.npy", preds)
        np.savez_compressed(tmp / "draws.npz", draws=draws)  # every draw, for evaluate's best-of
        pd.DataFrame({"clip_id": ids, "row": range(n), "temperature": p.temperature, "top_k": p.top_k,
                      "seed": p.seed}).to_parquet(tmp / "manifest.parquet", index=False)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
        rows = [v for i in range(min(n, 8)) for v in (clips[i], mark(preds[i], GIVEN))]
        save_png(contact_sheet(np.stack(rows)), tmp / "contact_sheet.png")
        write_videos(tmp / "videos", clips[: p.videos], preds[: p.videos], ids[: p.videos], ctx.params.ingest.fps)
    ctx.log_metrics({k: v for k, v in stats.items() if isinstance(v, float)})
    ctx.mlflow.log_artifact(str(OUT / "contact_sheet.png"))
    ctx.mlflow.log_artifact(str(OUT / "stats.json"))
    ctx.mlflow.log_artifacts(str(OUT / "videos"), artifact_path="videos")
    from stages.mlflow_models import log_predictor

    files, sampling = {k: path / "model.pt" for k, path in MODELS.items()}, {
        "temperature": p.temperature, "top_k": p.top_k, "seed": p.seed, "batch_size": p.batch_size}
    uri = log_predictor(ctx.mlflow, files, predictor.vqvae.config.size, sampling, p.register_as, p.alias)
    log_predictor(ctx.mlflow, files, predictor.vqvae.config.size, sampling, p.register_video_as, p.alias,
                  video=True, fps=ctx.params.ingest.fps)
    print(f"sample: {n} test clips x {r['samples']} samples -> {OUT}/; PSNR of frames 5-16: one sample "
          f"{r['single']:.2f} dB, best of {r['samples']} {r['best']:.2f} dB, mean of the samples {r['mean']:.2f} dB; "
          f"copy-last-frame {stats['psnr_copy_last_frame']:.2f} dB; a draw beats copy-last on {r['beats_copy_last']:.0%} of the clips"
          + (f"; the predictor is registered as {uri}" if uri else ""))


def main(argv: list[str] | None = None) -> int:
    return run_stage("sample", argv, __doc__.splitlines()[0], _body)


if __name__ == "__main__":
    raise SystemExit(main())
