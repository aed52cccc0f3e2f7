"""SampleSetPSNR: the PSNR statistics of several draws per clip."""
import numpy as np
import pytest

from vqvp_core.metrics import SampleSetPSNR, frame_psnr


def _clips(seed, n=3, t=6):
    return np.random.default_rng(seed).integers(0, 256, (n, t, 8, 8, 3), dtype=np.uint8)


def test_one_sample_all_statistics_agree():
    target, pred = _clips(0), _clips(1)
    s = SampleSetPSNR(target, given=2)
    s.add(pred)
    r = s.result()
    direct = frame_psnr(pred, target)[:, 2:]
    assert r["samples"] == 1 and r["single"] == pytest.approx(direct.mean().item())
    assert r["best"] == pytest.approx(r["single"])
    assert r["mean"] == pytest.approx(r["single"])
    assert len(r["single_per_frame"]) == len(r["mean_per_frame"]) == 4


@pytest.mark.parametrize("n_samples", [2, 5])
def test_best_and_mean_of_several_draws(n_samples):
    target = _clips(0)
    draws = [_clips(10 + i) for i in range(n_samples)]
    s = SampleSetPSNR(target, given=2)
    for d in draws:
        s.add(d)
    r = s.result()
    per_clip = np.stack([frame_psnr(d, target)[:, 2:].mean(1).numpy() for d in draws])  # (S, N)
    assert r["single"] == pytest.approx(per_clip.mean())
    assert r["best"] == pytest.approx(per_clip.max(0).mean()) and r["best"] >= r["single"]
    mean = np.round(np.mean(np.stack(draws).astype(np.float64), 0)).astype(np.uint8)
    assert r["mean"] == pytest.approx(frame_psnr(mean, target)[:, 2:].mean().item())
    # independent noise draws: their average is closer to anything than one draw is
    assert r["mean"] > r["single"]


def test_a_perfect_draw_is_the_best():
    target = _clips(0)
    s = SampleSetPSNR(target, given=2)
    s.add(_clips(1))
    s.add(target)
    assert s.result()["best"] > 90  # the exact clip: PSNR clamped at 100 dB


def test_result_before_add_is_an_error():
    with pytest.raises(ValueError, match="before any add"):
        SampleSetPSNR(_clips(0)).result()
