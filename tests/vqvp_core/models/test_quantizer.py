"""EMAQuantizer: eq. 3 by hand, straight-through, init from data, dead-code restarts, stats,
fp32 distances under autocast, state in buffers, and DDP (2 gloo processes on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vqvp_core.models.quantizer import EMAQuantizer



def _q(**kw) -> EMAQuantizer:
    base = dict(n_codes=8, dim=4, init_from_data=False, restart_dead=False)
    return EMAQuantizer(**{**base, **kw})


def _set_codebook(q: EMAQuantizer, e: torch.Tensor, n: torch.Tensor | None = None) -> None:
    n = torch.ones(e.shape[0]) if n is None else n
    q.codebook.copy_(e)
    q.cluster_size.copy_(n)
    q.embed_sum.copy_(e * n[:, None])


def _flat(z: torch.Tensor) -> torch.Tensor:
    return z.movedim(1, -1).reshape(-1, z.shape[1])  # (B, C, *S) -> (N, C)


# ---------------------------------------------------------------------- eq. 3


@pytest.mark.parametrize("decay", [0.0, 0.5, 0.99])
@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_ema_update_matches_eq3_by_hand(decay, eps):
    torch.manual_seed(0)
    K, D = 5, 3
    q = _q(n_codes=K, dim=D, decay=decay, eps=eps)
    e0 = torch.randn(K, D) * 3
    n0 = torch.tensor([2.0, 0.5, 1.0, 3.0, 1.5])
    _set_codebook(q, e0, n0)
    z = torch.randn(2, D, 2, 3, 2)  # (B, C, T, H, W): 24 vectors
    q.train()
    out = q(z)

    # by hand, in float64 numpy
    f = _flat(z).double().numpy()
    e = e0.double().numpy()
    codes = ((f[:, None, :] - e[None]) ** 2).sum(-1).argmin(1)
    n_i = np.bincount(codes, minlength=K).astype(np.float64)
    s_i = np.zeros((K, D))
    for j, k in enumerate(codes):
        s_i[k] += f[j]
    N = n0.double().numpy() * decay + n_i * (1 - decay)
    m = (e0 * n0[:, None]).double().numpy() * decay + s_i * (1 - decay)
    tot = N.sum()
    N_smooth = (N + eps) / (tot + K * eps) * tot
    e_new = m / N_smooth[:, None]

    assert out.codes.shape == (2, 2, 3, 2) and out.codes.dtype == torch.int64
    np.testing.assert_array_equal(out.codes.reshape(-1).numpy(), codes)
    np.testing.assert_allclose(q.cluster_size.numpy(), N, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q.embed_sum.numpy(), m, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q.codebook.numpy(), e_new, rtol=1e-4, atol=1e-5)
    # the returned vectors are those of the codebook that chose the codes (pre-update)
    np.testing.assert_allclose(_flat(out.quantized).detach().numpy(), e[codes], rtol=1e-6, atol=1e-6)


def test_eval_mode_leaves_state_untouched():
    torch.manual_seed(0)
    q = _q(init_from_data=True, restart_dead=True).eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q(torch.randn(2, 4, 2, 2, 2))
    for k, v in q.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0])
def test_commitment_loss_and_straight_through(beta):
    torch.manual_seed(0)
    q = _q(beta=beta).eval()
    z = torch.randn(2, 4, 2, 3, 3, requires_grad=True)
    out = q(z)
    expect = beta * ((z.detach() - q.lookup(out.codes)) ** 2).mean()
    torch.testing.assert_close(out.commit_loss, expect)
    # forward: the code vectors; backward: identity (straight-through)
    torch.testing.assert_close(out.quantized.detach(), q.lookup(out.codes))
    (out.quantized * 3).sum().backward()
    torch.testing.assert_close(z.grad, torch.full_like(z, 3.0))


def test_gradient_reaches_the_encoder_through_the_bottleneck():
    torch.manual_seed(0)
    enc = torch.nn.Conv3d(3, 4, 3, padding=1)
    dec = torch.nn.Conv3d(4, 3, 3, padding=1)
    q = _q(init_from_data=True).train()
    x = torch.randn(2, 3, 4, 6, 6)
    out = q(enc(x))
    # the reconstruction term alone (no commitment) must reach the encoder
    ((dec(out.quantized) - x) ** 2).mean().backward()
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0
    assert q.codebook.grad is None  # the codebook learns by EMA only


# ---------------------------------------------------------------------- init and restarts


def _rows_in(rows: torch.Tensor, data: torch.Tensor, atol: float = 1e-6) -> torch.Tensor:
    """Per row of `rows`, whether it equals some row of `data`."""
    return (torch.cdist(rows.double(), data.double()).min(1).values <= atol)


@pytest.mark.parametrize("n_vectors_per_code", [0.5, 4])
def test_init_from_first_training_batch(n_vectors_per_code, monkeypatch):
    torch.manual_seed(0)
    K = 16
    q = _q(n_codes=K, init_from_data=True)
    calls = []
    orig = q._init_codebook
    monkeypatch.setattr(q, "_init_codebook", lambda flat: (calls.append(1), orig(flat)))
    assert not bool(q.initialized)
    n = int(K * n_vectors_per_code)  # 8 (fewer vectors than codes: drawn with replacement) or 64
    z = torch.randn(n, 4, 1, 1, 1) * 5 + 10  # far from the N(0, 1) initial codebook
    q.eval()(z)
    assert not calls and not bool(q.initialized), "eval mode must not initialise"
    q.train()(z)
    assert calls == [1] and bool(q.initialized)
    # every code starts on (or, with replacement, within noise of) a data vector; one EMA step
    # (decay 0.99) then moves it by little
    assert (torch.cdist(q.codebook, _flat(z)).min(1).values < 0.5).all()
    assert float(q(z).stats.usage) > 0.4  # data-initialised codes are used
    q(z + 100)  # later batches never re-initialise
    assert calls == [1]


def test_init_rows_are_batch_vectors_exactly():
    torch.manual_seed(0)
    q = _q(n_codes=8, init_from_data=True).train()
    z = torch.randn(4, 4, 2, 2, 2) + 3  # 32 vectors >= 8 codes
    q._init_codebook(_flat(z))
    assert _rows_in(q.codebook, _flat(z)).all()
    assert len(torch.unique(q.codebook, dim=0)) == 8  # drawn without replacement
    torch.testing.assert_close(q.embed_sum, q.codebook)
    torch.testing.assert_close(q.cluster_size, torch.ones(8))


@pytest.mark.parametrize("threshold", [0.5, 1.0, 2.0])
def test_dead_codes_restart_onto_batch_vectors(threshold):
    torch.manual_seed(0)
    K, D = 8, 4
    q = _q(n_codes=K, dim=D, restart_dead=True, dead_threshold=threshold, decay=0.9)
    e = torch.randn(K, D)
    e[4:] += 1000.0  # codes 4..7 are never chosen
    _set_codebook(q, e, torch.full((K,), 0.5 * threshold))  # and their counts are low
    live = torch.tensor([True] * 4 + [False] * 4)
    # every live code gets 30 distinct vectors close to it
    z = (e[:4].repeat(30, 1) + 0.01 * torch.randn(120, D)).reshape(120, D, 1, 1, 1)
    q.train()
    out = q(z)
    assert int(out.stats.restarted) == 4
    data = _flat(z)
    assert _rows_in(q.codebook[~live], data).all(), "dead codes must jump onto batch vectors"
    assert (q.cluster_size[~live] == threshold).all()
    torch.testing.assert_close(q.embed_sum[~live], q.codebook[~live] * threshold)
    # live codes: a plain EMA step towards the data they attract, no restart
    assert (q.cluster_size[live] >= threshold).all()
    torch.testing.assert_close(q.codebook[live], e[:4], rtol=0, atol=0.05)
    # a restarted code that attracts vectors survives: all codes alive next step
    out2 = q(torch.cat([z, q.codebook[~live].reshape(4, D, 1, 1, 1).repeat(10, 1, 1, 1, 1)]))
    assert int(out2.stats.restarted) == 0


def test_error_weighted_restarts_land_on_badly_coded_vectors():
    torch.manual_seed(0)
    K, D = 8, 4
    q = _q(n_codes=K, dim=D, restart_dead=True, restart_sampling="error", decay=0.9)
    e = torch.randn(K, D)
    e[4:] += 1000.0  # codes 4..7 are dead
    _set_codebook(q, e, torch.tensor([50.0] * 4 + [0.1] * 4))
    good = e[:4].repeat(250, 1)  # 1000 vectors sitting on the live codes
    far = e[0] + 30.0 + torch.randn(4, D)  # 4 vectors no code fits
    z = torch.cat([good, far]).reshape(-1, D, 1, 1, 1)
    q.train()(z)
    # each dead code now sits on one of the 4 badly coded vectors (uniform draws: on `good`)
    assert _rows_in(q.codebook[4:], far).all()
    assert len({tuple(r.tolist()) for r in q.codebook[4:]}) == 4


def test_uniform_restarts_draw_from_the_whole_batch():
    torch.manual_seed(0)
    q = _q(n_codes=8, dim=4, restart_dead=True, restart_sampling="uniform", decay=0.9)
    e = torch.randn(8, 4)
    e[4:] += 1000.0
    _set_codebook(q, e, torch.tensor([50.0] * 4 + [0.1] * 4))
    z = torch.cat([e[:4].repeat(250, 1), e[0] + 30.0 + torch.randn(4, 4)]).reshape(-1, 4, 1, 1, 1)
    q.train()(z)
    assert _rows_in(q.codebook[4:], e[:4]).all()  # 1000 of 1004 vectors are the live codes


def test_bad_restart_sampling():
    with pytest.raises(ValueError, match="restart_sampling must be 'uniform' or 'error', got 'worst'"):
        _q(restart_sampling="worst")


def test_no_restart_when_disabled():
    q = _q(restart_dead=False, n_codes=8)
    e = torch.randn(8, 4)
    e[4:] += 1000
    _set_codebook(q, e, torch.full((8,), 0.01))
    q.train()(e[:4].reshape(4, 4, 1, 1, 1))
    assert (q.codebook[4:] > 500).all()


# ---------------------------------------------------------------------- stats


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_codes", [4, 64])
def test_perplexity_and_usage_bounds(seed, n_codes):
    torch.manual_seed(seed)
    q = EMAQuantizer(n_codes=n_codes, dim=4).train()
    out = q(torch.randn(2, 4, 2, 4, 4))
    p, u = float(out.stats.perplexity), float(out.stats.usage)
    assert 1.0 - 1e-5 <= p <= n_codes + 1e-3
    assert 1.0 / n_codes - 1e-6 <= u <= 1.0
    assert p <= u * n_codes + 1e-3  # perplexity cannot exceed the number of codes in use


def test_perplexity_extremes():
    K = 8
    q = _q(n_codes=K).eval()
    e = torch.randn(K, 4) * 10
    _set_codebook(q, e)
    same = e[3].reshape(1, 4, 1, 1, 1).repeat(16, 1, 1, 1, 1)
    s = q(same).stats
    assert float(s.perplexity) == pytest.approx(1.0) and float(s.usage) == pytest.approx(1 / K)
    every = e.repeat(3, 1).reshape(3 * K, 4, 1, 1, 1)
    s = q(every).stats
    assert float(s.perplexity) == pytest.approx(K, rel=1e-5) and float(s.usage) == 1.0


# ---------------------------------------------------------------------- misc


def test_distances_in_fp32_under_autocast():
    torch.manual_seed(0)
    q = EMAQuantizer(n_codes=256, dim=32, init_from_data=False, restart_dead=False).eval()
    z = torch.randn(4, 32, 4, 8, 8)
    ref = q(z)
    # bf16 distances would pick other codes for some vectors: the check below has teeth
    flat, e = _flat(z), q.codebook
    d16 = (e.bfloat16().float().pow(2).sum(1) - 2 * (flat.bfloat16() @ e.bfloat16().t()).float())
    assert (d16.argmin(1) != ref.codes.reshape(-1)).any()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
        out_b = q(z.to(torch.bfloat16))
    assert torch.equal(out.codes, ref.codes)
    assert out_b.quantized.dtype == torch.bfloat16
    torch.testing.assert_close(out_b.codes, q(z.to(torch.bfloat16).float()).codes)


def test_state_lives_in_buffers_and_survives_state_dict():
    torch.manual_seed(0)
    q = EMAQuantizer(n_codes=16, dim=4, restart_dead=False).train()
    z = torch.randn(4, 4, 2, 2, 2)
    q(z)
    sd = q.state_dict()
    assert set(sd) == {"codebook", "cluster_size", "embed_sum", "initialized"}
    assert list(q.parameters()) == []
    q2 = EMAQuantizer(n_codes=16, dim=4, restart_dead=False)
    q2.load_state_dict(sd)
    assert bool(q2.initialized)
    q2.train()(z * 0 + 50)  # must not re-initialise from this batch
    assert q2.codebook.abs().max() < 25


def test_lookup_roundtrip_and_validation():
    torch.manual_seed(0)
    q = EMAQuantizer(n_codes=16, dim=4).eval()
    z = torch.randn(2, 4, 2, 3, 3)
    out = q(z)
    torch.testing.assert_close(q.lookup(out.codes), out.quantized)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        q.lookup(torch.full((1, 2, 2, 2), 16))
    with pytest.raises(ValueError, match="integer"):
        q.lookup(torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="channels"):
        q(torch.randn(2, 5, 2, 2, 2))


@pytest.mark.parametrize("restart_dead", [False, True])
def test_normalized_codes_stay_on_the_sphere_and_pick_by_cosine(restart_dead):
    torch.manual_seed(0)
    q = EMAQuantizer(n_codes=8, dim=4, normalize=True, restart_dead=restart_dead).train()
    for _ in range(5):
        z = torch.randn(2, 4, 2, 3, 3) * torch.rand(2, 1, 2, 3, 3) * 10  # lengths vary widely
        out = q(z)
        torch.testing.assert_close(q.codebook.norm(dim=1), torch.ones(8))
    q.eval()
    z = torch.randn(2, 4, 2, 3, 3)
    out = q(z)
    flat = z.movedim(1, -1).reshape(-1, 4)
    cos = torch.nn.functional.normalize(flat, dim=1) @ q.codebook.t()
    assert torch.equal(out.codes.flatten(), cos.argmax(1))
    # the length of a vector never changes its code
    assert torch.equal(q(z * (torch.rand(2, 1, 2, 3, 3) * 7 + 0.1)).codes, out.codes)
    torch.testing.assert_close(q.lookup(out.codes), out.quantized)
    # straight-through passes the gradient of the normalised input
    zg = z.clone().requires_grad_(True)
    q(zg).quantized.sum().backward()
    assert zg.grad.abs().sum() > 0


# ---------------------------------------------------------------------- distributed


def _ddp_worker(rank: int, world: int, store: str, out_dir: str, z_all: torch.Tensor,
                kw: dict, steps: int) -> None:
    torch.set_num_threads(1)  # two processes on two cores
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)  # different RNG per rank: broadcasts must fix that
        q = EMAQuantizer(**kw)
        if not kw["init_from_data"]:
            torch.manual_seed(0)
            q = EMAQuantizer(**kw)  # same initial codebook on every rank
        q.train()
        per = z_all.shape[1] // world
        restarted = 0
        for s in range(steps):
            restarted += int(q(z_all[s, rank * per:(rank + 1) * per]).stats.restarted)
        state = {k: v.clone() for k, v in q.state_dict().items()}
        torch.save({"state": state, "restarted": restarted}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("init_and_restart", [False, True])
def test_ddp_codebooks_identical_and_equal_to_single_process(tmp_path, init_and_restart):
    torch.manual_seed(0)
    steps, world = 3, 2
    z_all = torch.randn(steps, 4, 8, 2, 3, 3)  # per step a batch of 4, split 2 + 2
    kw = dict(n_codes=32, dim=8, decay=0.9, init_from_data=init_and_restart,
              restart_dead=init_and_restart, dead_threshold=1.0)
    mp.spawn(_ddp_worker, args=(world, str(tmp_path / "store"), str(tmp_path), z_all, kw, steps),
             nprocs=world, join=True)
    res0, res1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    r0, r1 = res0["state"], res1["state"]
    if init_and_restart:
        assert res0["restarted"] > 0 and res0["restarted"] == res1["restarted"]
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{k} differs across ranks"
    if not init_and_restart:
        # the same as one process updating on the concatenated batch
        torch.manual_seed(0)
        q = EMAQuantizer(**kw).train()
        for s in range(steps):
            q(z_all[s])
        for k, v in q.state_dict().items():
            torch.testing.assert_close(r0[k], v, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("normalize", [False, True])
def test_merge_gives_one_canonical_code_per_cluster(k, normalize):
    """After merge(k), the codebook holds k distinct vectors; codes of one cluster are duplicates,
    and quantizing picks the lowest index of each: a vector near a cluster always gets one code."""
    torch.manual_seed(0)
    q = EMAQuantizer(n_codes=16, dim=4, init_from_data=False, normalize=normalize).eval()
    centres = torch.randn(k, 4) * 5
    owner = torch.arange(16) % k  # 16 codes scattered tightly around k centres
    q.codebook.copy_(centres[owner] + 0.01 * torch.randn(16, 4))
    if normalize:
        q.codebook.copy_(F.normalize(q.codebook, dim=1))
    labels = q.merge(k)
    assert torch.unique(q.codebook, dim=0).shape[0] == k
    # the clusters found are the codes' own groups (up to renaming)
    assert all(len(set(labels[owner == c].tolist())) == 1 for c in range(k))
    assert len(set(labels.tolist())) == k
    if normalize:
        assert torch.allclose(q.codebook.norm(dim=1), torch.ones(16), atol=1e-5)
    z = (q.codebook[torch.randint(0, 16, (50,))] + 1e-4 * torch.randn(50, 4)).t().reshape(1, 4, 50)
    codes = q(z).codes.flatten()
    canonical = {int(labels[i]): i for i in reversed(range(16))}  # the lowest index of each cluster
    assert set(codes.tolist()) <= set(canonical.values())
    assert torch.equal(q.codebook[codes], q.codebook[[canonical[int(labels[c])] for c in codes]])


def test_merge_weights_codes_by_use_and_checks_k():
    q = EMAQuantizer(n_codes=3, dim=1, init_from_data=False).eval()
    q.codebook.copy_(torch.tensor([[0.0], [1.0], [10.0]]))
    q.cluster_size.copy_(torch.tensor([9.0, 1.0, 5.0]))
    q.merge(2)
    assert torch.allclose(q.codebook.flatten(), torch.tensor([0.1, 0.1, 10.0]))  # (9*0 + 1*1) / 10
    with pytest.raises(ValueError, match="k must be in"):
        q.merge(0)
