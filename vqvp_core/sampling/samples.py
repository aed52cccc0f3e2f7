"""Reading a sample stage's output back: the predicted clips beside their ground truth."""
from __future__ import annotations

from pathlib import Path


def load_samples(samples: str | Path, clips: str | Path):
    """(predictions, originals, manifest): the sampled clips of ``samples`` (predictions.npy,
    manifest.parquet, as `sample` writes them) and their ground truth from the clip set ``clips``,
    row by row; the manifest gains each clip's source, start_time and fps (for the motion metric).
    FileNotFoundError when the predictions or any sampled clip are missing."""
    import numpy as np
    import pandas as pd

    from vqvp_core.data.clips import ClipSet

    samples, clips_dir = Path(samples), Path(clips)
    if not (samples / "predictions.npy").exists():
        raise FileNotFoundError(f"{samples}/predictions.npy not found: run the sample stage first")
    manifest = pd.read_parquet(samples / "manifest.parquet")
    clips = ClipSet(clips_dir)
    index = {cid: i for i, cid in enumerate(clips.manifest.clip_id)}
    missing = [c for c in manifest.clip_id if c not in index]
    if missing:
        raise FileNotFoundError(f"{len(missing)} sampled clips are not in {clips_dir} (e.g. {missing[0]}): re-run sample")
    originals = np.stack([clips[index[c]] for c in manifest.clip_id])
    rows = clips.manifest.iloc[[index[c] for c in manifest.clip_id]]
    for col in ("source", "start_time", "fps"):
        manifest[col] = rows[col].to_numpy()
    return np.load(samples / "predictions.npy"), originals, manifest
