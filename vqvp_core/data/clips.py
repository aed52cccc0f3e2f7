"""Reading `data/clips/`: the manifest and the clips of one split, memory-mapped from the shards."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def read_manifest(clips_dir: str | Path, split: str | None = None) -> pd.DataFrame:
    path = Path(clips_dir) / "manifest.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the ingest stage first (vqvp stage ingest)")
    manifest = pd.read_parquet(path)
    if split is not None:
        manifest = manifest[manifest.split == split].reset_index(drop=True)
    return manifest


class ClipSet:
    """Clips of one split as uint8 arrays (clip_len, H, W, 3); shards are opened lazily with mmap."""

    def __init__(self, clips_dir: str | Path, split: str | None = None):
        self.dir = Path(clips_dir)
        self.manifest = read_manifest(self.dir, split)
        self._shards: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.manifest)

    def _shard(self, name: str) -> np.ndarray:
        if name not in self._shards:
            self._shards[name] = np.load(self.dir / name, mmap_mode="r")
        return self._shards[name]

    def __getitem__(self, i: int) -> np.ndarray:
        row = self.manifest.iloc[i]
        return np.array(self._shard(row["shard"])[int(row["index"])])  # a writable copy of one clip

    def __getstate__(self):  # DataLoader workers reopen the mmaps themselves
        return {"dir": self.dir, "manifest": self.manifest, "_shards": {}}
