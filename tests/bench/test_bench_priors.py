"""bench/priors.py's GEMM accounting: the (M, K, N) shapes it records for a forward pass must add
up to exactly the FLOPs torch's FlopCounterMode counts for the same convolutions and matmuls, for
plain, strided, transposed and grouped convs, and for both priors."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import priors as bench  # noqa: E402  (bench/priors.py)
from vqvp_core.models.bottom_prior import BottomPrior, BottomPriorConfig  # noqa: E402
from vqvp_core.models.top_prior import TopPrior, TopPriorConfig  # noqa: E402

GEMM_OPS = ("convolution", "mm", "addmm", "bmm")


def _recorded_and_counted(fn):
    recorder, counter = bench.GemmShapes(), FlopCounterMode(display=False)
    with torch.no_grad(), counter, recorder:
        fn()
    recorded = sum(2 * m * k * n * count for (m, k, n), count in recorder.shapes.items())
    counted = sum(v for op, v in counter.get_flop_counts()["Global"].items()
                  if str(op).split(".")[1] in GEMM_OPS)  # keys: aten.convolution, aten.mm, ...
    return recorded, counted


@pytest.mark.parametrize("layer, shape", [
    (nn.Conv3d(4, 6, (2, 3, 1), padding=(0, 1, 0)), (2, 4, 3, 5, 5)),
    (nn.Conv3d(4, 6, 4, stride=2, padding=1), (2, 4, 4, 8, 8)),
    (nn.ConvTranspose3d(4, 6, (4, 3, 3), stride=(2, 1, 1), padding=(1, 1, 1)), (2, 4, 2, 5, 5)),
    (nn.Conv2d(4, 6, 3, padding=1, groups=2), (2, 4, 7, 7)),
    (nn.Linear(5, 7), (3, 4, 5)),
])
def test_gemm_shapes_match_flop_counter(layer, shape):
    x = torch.randn(shape)
    recorded, counted = _recorded_and_counted(lambda: layer(x))
    assert counted > 0 and recorded == counted


@pytest.mark.parametrize("kind", ["top", "bottom"])
def test_gemm_shapes_cover_a_prior(kind):
    cfg = (TopPriorConfig if kind == "top" else BottomPriorConfig).tiny()
    model = (TopPrior if kind == "top" else BottomPrior)(cfg).eval()
    data = bench.batches(kind, cfg, 2, (4, 4), "cpu")
    recorded, counted = _recorded_and_counted(lambda: bench.loss_fn(kind, model, data))
    assert counted > 0 and recorded == counted


def test_gemm_ceiling_is_a_positive_rate():
    rate = bench.gemm_ceiling({(64, 32, 16): 2}, torch.device("cpu"), "fp32", min_s=0.001)
    assert 0 < rate < float("inf")
