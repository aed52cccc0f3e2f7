"""PSNR over a split (split PSNR, mean of per-frame PSNR) and SampleSetPSNR's draw statistics."""
import math

import numpy as np
import pytest
import torch

from vqvp_core.metrics import (SampleSetPSNR, beats, copy_last_frame, frame_mse, frame_psnr, psnr_ceiling,
                               psnr_summary)


def _clips(seed, n=3, t=6):
    return np.random.default_rng(seed).integers(0, 256, (n, t, 8, 8, 3), dtype=np.uint8)


def _split_psnr(pred, target, given=2):
    err = (pred[:, given:].astype(np.float64) - target[:, given:].astype(np.float64)) ** 2
    return 10 * math.log10(255.0**2 / err.mean())


def test_frame_psnr_of_an_exact_frame_is_the_uint8_ceiling():
    target = _clips(0)
    pred = target.copy()
    pred[0, 0, 0, 0, 0] ^= 1  # one value off by one: the smallest error a uint8 frame can have
    psnr = frame_psnr(pred, target)
    assert psnr[0, 0].item() == pytest.approx(psnr_ceiling(8 * 8 * 3))
    assert torch.all(frame_psnr(target, target) == psnr[0, 0])  # exact frames: the same, not infinity
    assert psnr_ceiling(64 * 64 * 3) == pytest.approx(89.03, abs=0.01)


def test_split_psnr_is_not_swayed_by_exact_frames():
    """A static clip that copy-last-frame predicts exactly: the mean of per-frame PSNR jumps by
    the ceiling, the split PSNR (of the mean squared error) moves as little as the clip's error."""
    target = _clips(0, n=4)
    target[3] = target[3, :1]  # clip 3 is one still frame
    mse = frame_mse(copy_last_frame(target, 2), target)[:, 2:]
    summary = psnr_summary(mse, 8 * 8 * 3)
    assert summary["exact_frames"] == 4
    assert summary["split"] == pytest.approx(_split_psnr(copy_last_frame(target, 2).numpy(), target))
    moving = psnr_summary(mse[:3], 8 * 8 * 3)
    assert summary["frame_mean"] - moving["frame_mean"] > 15  # one exact clip in four: +~20 dB
    assert abs(summary["split"] - moving["split"]) < 1.3      # 10 log10(4/3): only the mean's count
    assert len(summary["split_per_frame"]) == 4


def test_beats_counts_clips_with_lower_error():
    a = torch.tensor([[1.0, 1.0], [5.0, 5.0], [2.0, 2.0]])
    b = torch.tensor([[2.0, 2.0], [1.0, 1.0], [2.0, 2.0]])  # a tie is not a win
    assert beats(a, b) == pytest.approx(1 / 3)


def test_one_sample_all_statistics_agree():
    target, pred = _clips(0), _clips(1)
    s = SampleSetPSNR(target, given=2)
    s.add(pred)
    r = s.result()
    assert r["samples"] == 1 and r["single"] == pytest.approx(_split_psnr(pred, target))
    assert r["best"] == pytest.approx(r["single"]) and r["mean"] == pytest.approx(r["single"])
    assert r["copy_last"] == pytest.approx(_split_psnr(copy_last_frame(target, 2).numpy(), target))
    assert len(r["single_per_frame"]) == len(r["mean_per_frame"]) == len(r["copy_last_per_frame"]) == 4


@pytest.mark.parametrize("n_samples", [2, 5])
def test_best_and_mean_of_several_draws(n_samples):
    target = _clips(0)
    draws = [_clips(10 + i) for i in range(n_samples)]
    s = SampleSetPSNR(target, given=2)
    for d in draws:
        s.add(d)
    r = s.result()
    assert r["single"] == pytest.approx(np.mean([_split_psnr(d, target) for d in draws]))
    clip_mse = np.stack([frame_mse(d, target)[:, 2:].mean(1).numpy() for d in draws])  # (S, N)
    assert r["best"] == pytest.approx(10 * math.log10(255.0**2 / clip_mse.min(0).mean()))
    assert r["best"] >= max(_split_psnr(d, target) for d in draws) >= r["single"]
    mean = np.round(np.mean(np.stack(draws).astype(np.float64), 0)).astype(np.uint8)
    assert r["mean"] == pytest.approx(_split_psnr(mean, target))
    # independent noise draws: their average is closer to anything than one draw is
    assert r["mean"] > r["single"]


def test_beats_copy_last_over_draws():
    target = _clips(0, n=2)
    better = target.copy()
    better[1] = _clips(5, n=2)[1]  # clip 0 exact, clip 1 noise (worse than copy-last)
    s = SampleSetPSNR(target, given=2)
    s.add(better)                   # wins on 1 of 2 clips
    s.add(target)                   # wins on both
    assert s.result()["beats_copy_last"] == pytest.approx(0.75)


def test_a_perfect_draw_is_the_best():
    target = _clips(0)
    s = SampleSetPSNR(target, given=2)
    s.add(_clips(1))
    s.add(target)
    assert s.result()["best"] == pytest.approx(psnr_ceiling(8 * 8 * 3))


def test_result_before_add_is_an_error():
    with pytest.raises(ValueError, match="before any add"):
        SampleSetPSNR(_clips(0)).result()


def test_frame_mse_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one shape"):
        frame_mse(_clips(0), _clips(0, n=2))


@pytest.mark.parametrize("shape", [(2, 3, 24, 20, 3), (1, 2, 9, 13, 3), (1, 1, 11, 11, 3)])
def test_frame_ssim_by_separable_filtering_equals_the_2d_convolution(shape):
    from vqvp_core.metrics import _frame_ssim_conv, frame_ssim, frame_ssim_systems

    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, shape, dtype=np.uint8)
    pred = np.clip(target.astype(int) + rng.integers(-40, 40, shape), 0, 255).astype(np.uint8)
    ref = _frame_ssim_conv(pred, target)
    assert torch.allclose(frame_ssim(pred, target), ref, atol=1e-5)
    assert torch.all(frame_ssim(target, target) == 1.0)
    both = frame_ssim_systems({"a": pred, "b": target}, target, chunk=1)  # chunks of one clip
    assert torch.allclose(both["a"], ref, atol=1e-5) and torch.all(both["b"] == 1.0)
