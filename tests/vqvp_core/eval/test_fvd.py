"""The Fréchet distance against closed forms, the k-fold protocol, resizing, the unavailable reason."""
import numpy as np
import pytest
import torch

from vqvp_core.eval.fvd import (
    NO_WEIGHTS_REASON,
    FVDResult,
    FVDUnavailable,
    compute_fvd,
    frechet_distance,
    fvd,
    fvd_kfold,
    require_weights,
    resize_videos,
    stats,
    unavailable_reason,
)


def _spd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d + (0 if rank else 0.1) * np.eye(d)


def _direct(x, y):
    """FVD computed directly in numpy: eigendecompositions, no scipy."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr)


def test_identical_gaussians_give_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=16), _spd(rng, 16)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("m1,s1,m2,s2", [(0.0, 1.0, 0.0, 1.0), (1.5, 2.0, -0.5, 0.5), (3.0, 0.1, 3.0, 4.0)])
def test_one_dimensional(m1, s1, m2, s2):
    got = frechet_distance([m1], [[s1**2]], [m2], [[s2**2]])
    assert got == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-10, abs=1e-12)


def test_diagonal_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_commuting_covariances():
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    a, b = rng.uniform(0.05, 5, 12), rng.uniform(0.05, 5, 12)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(np.zeros(12), s1, np.zeros(12), s2) == pytest.approx(expected, rel=1e-8)


def test_symmetric_and_translation():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 8)), rng.normal(size=(150, 8)) * 1.5 + 0.3
    assert fvd(x, y) == pytest.approx(fvd(y, x), rel=1e-9)
    shift = rng.normal(size=8) * 10
    assert fvd(x + shift, y + shift) == pytest.approx(fvd(x, y), rel=1e-8)
    # shifting one set by c adds |c|^2 (same covariance)
    assert fvd(x + shift, x) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_matches_direct_numpy_on_random_features():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 32)) @ rng.normal(size=(32, 32))
    y = rng.normal(size=(250, 32)) @ rng.normal(size=(32, 32)) + 0.5
    assert fvd(x, y) == pytest.approx(_direct(x, y), rel=1e-8)


def test_rank_deficient_covariances():
    """Fewer samples than dimensions (singular covariances): finite, >= 0, matches the PSD form."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, 40)), rng.normal(size=(7, 40)) + 0.2
    got = fvd(x, y)
    assert np.isfinite(got) and got >= 0
    assert got == pytest.approx(_direct(x, y), rel=1e-4)
    assert fvd(x, x) == pytest.approx(0.0, abs=1e-3)


def test_stats_is_float64_unbiased():
    x = np.arange(12, dtype=np.float32).reshape(4, 3) ** 1.5
    mu, sigma = stats(x)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False, ddof=1))
    with pytest.raises(ValueError, match="at least 2"):
        stats(x[:1])
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_kfold_two_folds_consistent_and_deterministic():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(40, 6)), rng.normal(size=(40, 6)) + 0.4
    r = fvd_kfold(a, b, k=2, seed=0)
    assert len(r["folds"]) == 2 and r["k"] == 2 and r["seed"] == 0
    assert (r["n_a"], r["n_b"]) == (40, 40) and r["paired"] and r["fold_sizes"] == [[20, 20], [20, 20]]
    assert r["mean"] == pytest.approx(np.mean(r["folds"])) and r["std"] == pytest.approx(np.std(r["folds"]))
    assert fvd_kfold(a, b, k=2, seed=0) == r
    assert fvd_kfold(a, b, k=2, seed=1)["folds"] != r["folds"]
    # paired: fold i of A and of B hold the same indices
    perm = np.random.default_rng(0).permutation(40)
    assert r["folds"][0] == pytest.approx(fvd(a[perm[:20]], b[perm[:20]]))


def test_kfold_unpaired_and_errors():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(21, 4)), rng.normal(size=(30, 4))
    r = fvd_kfold(a, b, k=3, seed=2)
    assert not r["paired"] and len(r["folds"]) == 3
    assert [s[0] for s in r["fold_sizes"]] == [7, 7, 7] and sum(s[1] for s in r["fold_sizes"]) == 30
    with pytest.raises(ValueError, match="at least 4"):
        fvd_kfold(a[:3], b, k=2)
    with pytest.raises(ValueError, match="same size"):
        fvd_kfold(a, b, paired=True)


def test_resize_videos():
    rng = np.random.default_rng(8)
    v = rng.integers(0, 256, size=(2, 3, 16, 16, 3), dtype=np.uint8)
    area = resize_videos(v, 4, mode="area")
    expected = v.reshape(2, 3, 4, 4, 4, 4, 3).astype(np.float64).mean(axis=(3, 5))
    np.testing.assert_array_equal(area, np.clip(np.round(expected), 0, 255).astype(np.uint8))
    bil = resize_videos(torch.from_numpy(v), 8)
    assert bil.dtype == np.uint8 and bil.shape == (2, 3, 8, 8, 3)
    const = np.full((1, 2, 20, 20, 3), 77, np.uint8)
    np.testing.assert_array_equal(resize_videos(const, 7), 77)
    np.testing.assert_array_equal(resize_videos(const, (5, 9)).shape, (1, 2, 5, 9, 3))
    with pytest.raises(ValueError, match="uint8"):
        resize_videos(v.astype(np.float32), 4)


def test_unavailable_reason():
    assert unavailable_reason(None) == NO_WEIGHTS_REASON.format(key="evaluate.i3d.path")
    assert "no I3D weights configured (evaluate.i3d.path)" in unavailable_reason("")
    assert unavailable_reason("/some/i3d.pt") is None
    with pytest.raises(FVDUnavailable, match="Kinetics-400") as exc:
        require_weights(None)
    assert "README" in exc.value.reason
    assert require_weights("s3://b/i3d.pt") == "s3://b/i3d.pt"
    assert "x.y" in FVDUnavailable.no_weights("x.y").reason


class _MeanColour:
    """A stand-in extractor: the mean colour of each video (3-d features)."""

    def features(self, videos, batch_size=8, disable=False, desc="", total=None):
        return np.concatenate([np.asarray(c, np.float64).mean(axis=(1, 2, 3)) for c in videos])

    def protocol(self):
        return {"weights": {"sha256": "0" * 64, "format": "state_dict"}, "preprocessing": "mean colour"}


def test_compute_fvd_records_protocol():
    rng = np.random.default_rng(9)
    a = rng.integers(0, 256, size=(12, 4, 16, 16, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, size=a.shape), 0, 255).astype(np.uint8)
    res = compute_fvd(_MeanColour(), a, b, resolution=8, k=2, seed=3, batch_size=5)
    assert isinstance(res, FVDResult)
    d = res.to_dict()
    assert d["resolution"] == 8 and d["k"] == 2 and d["seed"] == 3 and d["n_a"] == d["n_b"] == 12
    assert d["weights"]["sha256"] == "0" * 64 and d["frames"] == 4 and d["feature_dim"] == 3
    fa = resize_videos(a, 8).astype(np.float64).mean(axis=(1, 2, 3))
    fb = resize_videos(b, 8).astype(np.float64).mean(axis=(1, 2, 3))
    assert res.fvd == pytest.approx(fvd_kfold(fa, fb, k=2, seed=3)["mean"])
