"""Frame-level evaluation figures: PSNR and SSIM of the predicted frames for each system, with
bootstrap intervals, and the per-frame curves as a plot and as CSV plot data (dvc plots).
The `evaluate` stage (stages/evaluate.py) calls these on the arrays it loads."""
from __future__ import annotations

from pathlib import Path

from vqvp_core.clip import GIVEN_FRAMES as GIVEN


def frame_metrics(preds, originals, recons, seed: int = 0) -> tuple[dict, dict]:
    """PSNR (split PSNR: of the mean squared error over clips and frames; per frame index; and the
    mean of per-frame PSNR with its count of exact frames) and SSIM of frames 5-16 for the model,
    copy-last-frame and the VQ-VAE's reconstructions, with 95% bootstrap intervals over clips
    (and of model minus copy-last-frame), and the fraction of clips where the model's error is
    below copy-last-frame's. Also returns the SSIM per clip and frame, {system: (N, 12)}."""
    from vqvp_core.eval.motion import frame_intervals
    from vqvp_core.metrics import beats, copy_last_frame, frame_mse, frame_ssim_systems, psnr_summary

    systems = {"model": preds, "copy_last_frame": copy_last_frame(originals, GIVEN).numpy(), "reconstruction": recons}
    out: dict = {k: {} for k in ("psnr", "psnr_frame_mean", "exact_frames", "ssim", "psnr_per_frame", "ssim_per_frame")}
    ssims = {k: v.numpy() for k, v in frame_ssim_systems({k: v[:, GIVEN:] for k, v in systems.items()},
                                                        originals[:, GIVEN:]).items()}
    mses = {}
    for name, video in systems.items():
        mses[name] = frame_mse(video, originals)[:, GIVEN:]
        psnr, ssim = psnr_summary(mses[name], originals[0, 0].size), ssims[name]
        out["psnr"][name], out["psnr_per_frame"][name] = psnr["split"], psnr["split_per_frame"]
        out["psnr_frame_mean"][name], out["exact_frames"][name] = psnr["frame_mean"], psnr["exact_frames"]
        out["ssim"][name], out["ssim_per_frame"][name] = float(ssim.mean()), ssim.mean(0).tolist()
    out.update(frame_intervals({k: v.numpy() for k, v in mses.items()}, ssims, originals[0, 0].size, seed=seed))
    out["clips_model_beats_copy_last"] = beats(mses["model"], mses["copy_last_frame"])
    return out, ssims


def plot_psnr_per_frame(per_frame: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in per_frame.items():
        ax.plot(range(GIVEN + 1, GIVEN + 1 + len(values)), values, marker="o", label=name.replace("_", " "))
    ax.set(xlabel="frame index (1-4 given)", ylabel="PSNR (dB) of the split's MSE", title="PSNR per predicted frame")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_per_frame(metrics: dict, motion: dict, folder: Path) -> list[Path]:
    """The per-frame curves as plot data DVC renders and compares across commits and experiments
    (`dvc plots show` / `dvc plots diff`, dvc.yaml's top-level plots): ``folder/METRIC.csv`` with a
    `frame` column (5..16) and one column per system. PSNR and SSIM for every system; the motion
    metric's centroid error, objects found and object PSNR where the source is synthetic."""
    from vqvp_core.atomic import write_text

    if motion.get("available"):
        tables = {m: motion["per_frame"][m] for m in ("psnr", "ssim", "centroid_error_px", "found", "object_psnr")}
        frames = motion["frames"]
    else:
        tables = {"psnr": metrics["psnr_per_frame"], "ssim": metrics["ssim_per_frame"]}
        frames = list(range(GIVEN + 1, GIVEN + 1 + len(next(iter(tables["psnr"].values())))))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, per_system in tables.items():
        systems = sorted(per_system)
        rows = [",".join(["frame", *systems])]
        for i, frame in enumerate(frames):
            cells = ["" if per_system[s][i] is None else f"{per_system[s][i]:.6g}" for s in systems]
            rows.append(",".join([str(frame), *cells]))
        write_text(folder / f"{name}.csv", "\n".join(rows) + "\n")
        written.append(folder / f"{name}.csv")
    for stale in set(folder.glob("*.csv")) - set(written):  # a metric no longer computed
        stale.unlink()
    return written
