"""Evaluation: FVD with the Kinetics-400 I3D (weights supplied by the user, sha256-checked).

The function ``fvd`` is not re-exported here: it would shadow the submodule
``vqvp_core.eval.fvd``; use ``from vqvp_core.eval.fvd import fvd``.
"""
from vqvp_core.eval.fvd import (
    NO_WEIGHTS_REASON,
    FVDResult,
    FVDUnavailable,
    compute_fvd,
    frechet_distance,
    fvd_kfold,
    require_weights,
    resize_videos,
    stats,
    unavailable_reason,
)
from vqvp_core.eval.i3d import (
    MIN_FRAMES,
    FeatureExtractor,
    I3DWeightsError,
    InceptionI3d,
    WeightsInfo,
    detect_format,
    load_i3d,
    preprocess_videos,
)

__all__ = [
    "NO_WEIGHTS_REASON", "FVDResult", "FVDUnavailable", "compute_fvd", "frechet_distance",
    "fvd_kfold", "require_weights", "resize_videos", "stats", "unavailable_reason",
    "MIN_FRAMES", "FeatureExtractor", "I3DWeightsError", "InceptionI3d", "WeightsInfo",
    "detect_format", "load_i3d", "preprocess_videos",
]
