"""Stage `evaluate`: data/samples/ + data/clips/ + models/vqvae/ -> metrics/eval.json (+ a plot).

- PSNR and SSIM per predicted frame against ground truth, for the model and for the
  copy-last-frame baseline (and for the VQ-VAE's own reconstructions, an upper bound): PSNR as
  the split PSNR (of the mean squared error over clips and frames) and as the mean of per-frame
  PSNR (vqvp_core.metrics explains why both);
- the priors' bits per code (from their metrics files);
- FVD (samples vs originals) and FVD* (samples vs VQ-VAE reconstructions) with the Kinetics-400
  I3D, at each of evaluate.resolutions, k-fold with mean and spread, and the protocol logged.
  Without I3D weights FVD is reported as unavailable with the reason; nothing else changes;
- on synthetic clips, the motion metric (vqvp_core.eval.motion): per object, found or not and
  its centroid error, and PSNR over the objects' pixels, for the model (one draw, best of the
  draws in data/samples/draws.npz), copy-last-frame, the constant-velocity extrapolation and the
  reconstructions; 95% bootstrap intervals over clips (seed evaluate.seed) for the headline
  figures and their differences from copy-last-frame (PSNR and SSIM too).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from stages.common import BadInputError, StageContext, run_stage
from stages.training import log_dataset, write_metrics
from vqvp_core.clip import GIVEN_FRAMES as GIVEN

CLIPS, SAMPLES, VQVAE = Path("data/clips"), Path("data/samples"), Path("models/vqvae/model.pt")
METRICS, PLOT = Path("metrics/eval.json"), Path("metrics/eval_psnr_per_frame.png")
MOTION_PLOT = Path("metrics/eval_motion_per_frame.png")
PER_FRAME = Path("metrics/per_frame")  # one CSV per metric: frame, then a column per system (dvc plots)


def load_draws(preds):
    """Every draw (S, N, 16, H, W, 3) from data/samples/draws.npz; predictions.npy alone when absent."""
    import numpy as np

    if not (SAMPLES / "draws.npz").exists():
        return preds[None]
    with np.load(SAMPLES / "draws.npz") as f:
        draws = f["draws"]
    if draws.shape[1:] != preds.shape or not np.array_equal(draws[0], preds):
        raise BadInputError(f"{SAMPLES}/draws.npz does not match predictions.npy (first draw): re-run sample")
    return draws


def reconstruct(originals, device):
    """The VQ-VAE's reconstructions of the test clips (models/vqvae/model.pt)."""
    from vqvp_core.models.registry import load_model
    from vqvp_core.models.vqvae import reconstruct as decode_own_codes

    return decode_own_codes(load_model(VQVAE, "vqvae", device), originals)


def motion_block(params, preds, originals, recons, manifest, ssims: dict) -> dict:
    """The motion metric (vqvp_core.eval.motion) of every system, or why it is unavailable."""
    from vqvp_core.data.ingest import synthetic_config
    from vqvp_core.eval.motion import motion_metrics
    from vqvp_core.metrics import copy_last_frame, frame_ssim_systems

    if params.ingest.source != "synthetic":
        return {"available": False, "reason": f"ingest.source is {params.ingest.source!r}: the motion metric needs "
                                              "the synthetic generator, which knows every object"}
    systems = {"model": load_draws(preds), "copy_last_frame": copy_last_frame(originals, GIVEN).numpy(),
               "reconstruction": recons}
    return motion_metrics(synthetic_config(params.ingest), manifest.source, manifest.start_time, manifest.fps,
                          originals, systems, known_ssim=ssims, seed=params.evaluate.seed,
                          ssim=lambda videos, target: {k: v.numpy() for k, v in frame_ssim_systems(videos, target).items()})


def fvd_metrics(p, preds, originals, recons, device, progress: bool) -> dict:
    from vqvp_core.eval.fvd import compute_fvd, unavailable_reason
    from vqvp_core.eval.i3d import I3DWeightsError, load_i3d

    reason = unavailable_reason(p.i3d.path, key="evaluate.i3d.path")
    if reason:
        return {"available": False, "reason": reason}
    try:
        extractor = load_i3d(p.i3d.path, p.i3d.sha256, p.i3d.format, device, storage_options=p.i3d.storage_options)
    except I3DWeightsError as exc:
        raise BadInputError(f"evaluate.i3d: {exc}") from exc
    out: dict = {"available": True}
    for res in p.resolutions:
        size = None if res == "full" else int(res)
        for key, ref in (("fvd", originals), ("fvd_star", recons)):
            result = compute_fvd(extractor, preds, ref, resolution=size, k=p.folds, seed=p.seed,
                                 batch_size=p.batch_size, disable=not progress)
            out.setdefault(key, {})[str(res)] = result.to_dict()
    return out


def _body(ctx: StageContext, args) -> None:
    from vqvp_core.eval.frames import frame_metrics, plot_psnr_per_frame, write_per_frame
    from vqvp_core.eval.motion import headline, plot_per_frame, summary
    from vqvp_core.sampling.samples import load_samples
    from vqvp_core.train.loop import resolve_device

    p = ctx.params.evaluate
    device = resolve_device(p.device)
    for path in (SAMPLES, Path("models/vqvae")):
        log_dataset(ctx, path, context="evaluation")
    preds, originals, manifest = load_samples(SAMPLES, CLIPS)
    recons = reconstruct(originals, device)
    stats = json.loads((SAMPLES / "stats.json").read_text())
    frames, ssims = frame_metrics(preds, originals, recons, p.seed)
    metrics = {"n_samples": int(len(preds)), "sample_seed": stats.get("seed"), "temperature": stats.get("temperature"),
               "given_frames": GIVEN, **frames}
    t0 = time.perf_counter()
    metrics["motion"] = motion = motion_block(ctx.params, preds, originals, recons, manifest, ssims)
    for name in ("top_prior", "bottom_prior"):
        path = Path(f"metrics/{name}.json")
        if path.exists():
            prior = json.loads(path.read_text())
            metrics.setdefault("bits_per_code", {})[name] = {k.split("/", 1)[1]: prior[k] for k in prior
                                                              if k.startswith(("eval/bits", "baseline/"))}
    metrics["fvd"] = fvd_metrics(p, preds, originals, recons, device, not args.no_progress)
    write_metrics(METRICS, metrics)
    plot_psnr_per_frame(metrics["psnr_per_frame"], PLOT)
    plot_per_frame(motion if motion["available"] else {"frames": [], "per_frame": {}}, MOTION_PLOT)
    write_per_frame(metrics, motion, PER_FRAME)
    ctx.log_metrics({f"{m}/{k}": v for m in ("psnr", "ssim") for k, v in metrics[m].items()})
    ctx.log_metrics({**{f"{m}/model_minus_copy_last": metrics[f"{m}_model_minus_copy_last"]["value"]
                        for m in ("psnr", "ssim")}, **(headline(motion) if motion["available"] else {})})
    for key in ("fvd", "fvd_star"):
        for res, result in metrics["fvd"].get(key, {}).items():
            ctx.log_metrics({f"{key}/{res}": result["fvd"], f"{key}/{res}_std": result["std"]})
    ctx.mlflow.set_tag("vqvp.fvd", "computed" if metrics["fvd"]["available"] else metrics["fvd"]["reason"])
    ctx.mlflow.log_artifact(str(METRICS))
    ctx.mlflow.log_artifact(str(PLOT))
    ctx.mlflow.log_artifact(str(MOTION_PLOT))
    fvd = metrics["fvd"]
    fvd_text = (", ".join(f"FVD@{r} {v['fvd']:.1f}±{v['std']:.1f}" for r, v in fvd["fvd"].items())
                if fvd["available"] else f"FVD unavailable: {fvd['reason']}")
    print(f"evaluate: {len(preds)} samples; PSNR frames 5-16 model {metrics['psnr']['model']:.2f} dB vs "
          f"copy-last-frame {metrics['psnr']['copy_last_frame']:.2f} dB (model ahead on "
          f"{metrics['clips_model_beats_copy_last']:.0%} of the clips); SSIM {metrics['ssim']['model']:.3f} vs "
          f"{metrics['ssim']['copy_last_frame']:.3f}; {fvd_text}")
    print("evaluate: motion " + (summary(motion) + f" ({time.perf_counter() - t0:.1f} s)"
                                 if motion["available"] else f"unavailable: {motion['reason']}"))


def main(argv: list[str] | None = None) -> int:
    return run_stage("evaluate", argv, __doc__.splitlines()[0], _body)


if __name__ == "__main__":
    raise SystemExit(main())
