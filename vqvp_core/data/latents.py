"""Reading `data/latents/` (written by extract_latents): code grids per clip, memory-mapped."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

ARRAYS = ("top", "bottom", "cond_top", "cond_bottom")


class LatentSet:
    """One split's code grids. Item i is a dict of int64 tensors:
    top (Tt, Ht, Wt), bottom (Tb, Hb, Wb), cond_top (1, Ht, Wt), cond_bottom (2, Hb, Wb)."""

    def __init__(self, latents_dir: str | Path, split: str | None = None):
        self.dir = Path(latents_dir)
        manifest_path = self.dir / "manifest.parquet"
        if not manifest_path.exists():
            raise FileNotFoundError(f"{manifest_path} not found: run the extract_latents stage first")
        manifest = pd.read_parquet(manifest_path)
        self.manifest = manifest if split is None else manifest[manifest.split == split].reset_index(drop=True)
        self.rows = self.manifest.row.to_numpy()
        self._arrays: dict[str, np.ndarray] | None = None

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {k: np.load(self.dir / f"{k}.npy", mmap_mode="r") for k in ARRAYS}
        return self._arrays

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r = int(self.rows[i])
        return {k: torch.from_numpy(np.array(a[r], dtype=np.int64)) for k, a in self.arrays.items()}

    def all(self, key: str) -> np.ndarray:
        """Every row of one array for this split (e.g. for code statistics)."""
        return np.asarray(self.arrays[key][self.rows])

    def __getstate__(self):  # DataLoader workers reopen the mmaps themselves
        return {**self.__dict__, "_arrays": None}
