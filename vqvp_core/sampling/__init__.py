"""Sampling from the priors: cached (fast) generation that reproduces the naive samplers
code for code (see ``vqvp_core.sampling.cached``)."""
from vqvp_core.sampling.cached import (
    CachedPixelCNN,
    bottom_logits_cached,
    exact_float32,
    sample_bottom_cached,
    sample_bottom_slice_cached,
    sample_slices_given_past,
    sample_top_cached,
    top_logits_cached,
)

__all__ = ["CachedPixelCNN", "bottom_logits_cached", "exact_float32", "sample_bottom_cached",
           "sample_bottom_slice_cached", "sample_slices_given_past",
           "sample_top_cached", "top_logits_cached"]
