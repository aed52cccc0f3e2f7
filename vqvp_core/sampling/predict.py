"""Prediction: 4 given frames in, 16 frames out (the given 4 reconstructed + 12 predicted).

    predictor = Predictor.from_files("models/vqvae/model.pt", "models/top_prior/model.pt",
                                     "models/bottom_prior/model.pt", device="cpu")
    frames = predictor.predict(clips, temperature=1.0, top_k=None, seed=0)  # uint8 (B, 16, H, W, 3)

Steps, as in the paper: the VQ-VAE encodes the 4 conditioning frames on their own (top 1 step,
bottom 2 steps); the top prior samples the 3 future top steps in raster order; the bottom prior
samples bottom slices 2..7 one by one given the whole top grid and the past slices; the VQ-VAE
decodes the given + predicted codes into all 16 frames. `cached=True` (the default) uses the
cached samplers, which give exactly the codes of the naive ones for the same seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqvp_core.models.bottom_prior import BottomPrior
from vqvp_core.models.registry import load_model
from vqvp_core.models.top_prior import TopPrior
from vqvp_core.models.vqvae import VQVAE, clips_to_input, output_to_uint8
from vqvp_core.clip import GIVEN_FRAMES as COND_FRAMES



@dataclass
class Predictor:
    vqvae: VQVAE
    top_prior: TopPrior
    bottom_prior: BottomPrior

    @classmethod
    def from_files(cls, vqvae: str | Path, top_prior: str | Path, bottom_prior: str | Path,
                   device: torch.device | str = "cpu") -> "Predictor":
        return cls(load_model(vqvae, "vqvae", device), load_model(top_prior, "top_prior", device),
                   load_model(bottom_prior, "bottom_prior", device))

    @property
    def device(self) -> torch.device:
        return next(self.vqvae.parameters()).device

    @torch.no_grad()
    def sample_codes(self, given: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                     generator: torch.Generator | None = None, cached: bool = True):
        """given float (B, 3, 4, H, W) in [-1, 1] -> (top (B, 4, Ht, Wt), bottom (B, 8, Hb, Wb))."""
        from vqvp_core.sampling.cached import sample_bottom_cached, sample_top_cached

        cond_top, cond_bottom = self.vqvae.encode_cond(given)  # (B, 1, Ht, Wt), (B, 2, Hb, Wb)
        if cached:
            future = sample_top_cached(self.top_prior, cond_top, cond_bottom, temperature, top_k, generator)
        else:
            future = self.top_prior.sample(cond_top, cond_bottom, temperature, top_k, generator)
        top = torch.cat([cond_top, future], 1)  # (B, 1 + 3, Ht, Wt)
        if cached:
            bottom = sample_bottom_cached(self.bottom_prior, top, cond_bottom, temperature, top_k, generator)
        else:
            bottom = self.bottom_prior.sample(top, cond_bottom, temperature, top_k, generator)
        return top, bottom

    @torch.no_grad()
    def predict(self, clips: np.ndarray | torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                seed: int | None = 0, cached: bool = True, batch_size: int = 16,
                progress: bool = False) -> np.ndarray:
        """uint8 clips (B, T >= 4, H, W, 3): their first 4 frames are the given ones ->
        uint8 (B, 16, H, W, 3). The same seed gives the same frames. ``progress``: a bar over the
        batches."""
        from tqdm.auto import tqdm

        clips = torch.as_tensor(np.asarray(clips))
        if clips.dim() != 5 or clips.shape[1] < COND_FRAMES or clips.shape[-1] != 3:
            raise ValueError(f"clips must be uint8 (B, T >= {COND_FRAMES}, H, W, 3), got shape {tuple(clips.shape)}")
        self.vqvae.eval(), self.top_prior.eval(), self.bottom_prior.eval()
        generator = torch.Generator(self.device)
        generator.manual_seed(int(seed) if seed is not None else torch.seed())
        out = []
        for start in tqdm(range(0, clips.shape[0], batch_size), desc="predict", unit="batch", disable=not progress):
            given = clips_to_input(clips[start:start + batch_size, :COND_FRAMES], self.device)
            top, bottom = self.sample_codes(given, temperature, top_k, generator, cached)
            out.append(output_to_uint8(self.vqvae.decode_codes(top, bottom)).cpu().numpy())
        return np.concatenate(out)
