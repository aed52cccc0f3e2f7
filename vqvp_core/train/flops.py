"""Counting the FLOPs of work as it runs (torch.utils.flop_counter.FlopCounterMode).

FlopCounterMode counts the matrix work (matmuls, convolutions and their transposed and backward
forms, attention) that the dispatcher sees, forward and backward; element-wise ops (activations,
norms, the optimizer's update) count as zero. For these models that is almost all of the work
and exactly what a machine's matmul peak measures, so FLOPs / seconds / peak is the utilization.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "format_flops"]


class _Count:
    total: int = 0


@contextlib.contextmanager
def count_flops() -> Iterator[_Count]:
    """``with count_flops() as c: ...`` then ``c.total``: the FLOPs run inside the block."""
    counter = FlopCounterMode(display=False)
    result = _Count()
    with counter:
        yield result
    result.total = int(counter.get_total_flops())


def format_flops(flops: float) -> str:
    """1.23e13 -> '12.30 TFLOP' (GFLOP below one TFLOP)."""
    return f"{flops / 1e12:.2f} TFLOP" if flops >= 1e12 else f"{flops / 1e9:.1f} GFLOP"
