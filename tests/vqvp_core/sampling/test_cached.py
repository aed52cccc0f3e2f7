"""Cached sampling (vqvp_core.sampling.cached) against the naive samplers of both priors.

The cached samplers must give exactly the naive samplers' codes for the same weights and seed
(torch.equal), over seeds, temperatures (1.0, 1.2, 0 = greedy), top-k (None, 5) and batch sizes
(1, 3), on the tiny preset's grids (top 3x8x8, bottom slices 16x16) with small widths and two
attention layers; and their per-position logits, teacher-forced, must equal the naive forward's.
"""
from __future__ import annotations

import pytest
import torch

from vqvp_core.models.bottom_prior import BottomPrior, BottomPriorConfig
from vqvp_core.models.top_prior import TopPrior, TopPriorConfig
from vqvp_core.sampling import (
    bottom_logits_cached,
    exact_float32,
    sample_bottom_cached,
    sample_bottom_slice_cached,
    sample_top_cached,
    top_logits_cached,
)

TOP_GRID = (3, 8, 8)          # (Tp, Ht, Wt) of the tiny preset
BOTTOM_HW = (16, 16)          # (Hb, Wb) of the tiny preset


@pytest.fixture(autouse=True)
def _one_thread():
    """The naive samplers are thousands of tiny passes: one intra-op thread keeps them fast on a
    shared machine (the cached samplers use one thread on CPU by default anyway)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def top_config(**kw) -> TopPriorConfig:
    # 4 blocks, attention after blocks 2 and 4 -> 2 attention layers
    base = dict(n_codes=32, n_codes_bottom=24, embed_dim=8, channels=8, n_layers=4, kernel=3,
                kernel_t=2, first_kernel=5, first_kernel_t=3, attn_every=2, attn_heads=2,
                attn_channels=8, out_hidden=16, dropout=0.0, cond_embed_dim=8, cond_mid_channels=8,
                cond_channels=8, cond_res_blocks=1, cond_res_hidden=8)
    base.update(kw)
    return TopPriorConfig(**base)


def bottom_config(**kw) -> BottomPriorConfig:
    base = dict(n_codes=32, n_codes_top=24, embed_dim=8, channels=8, n_layers=4, kernel=3,
                first_kernel=5, attn_every=2, attn_heads=2, attn_channels=8, out_hidden=16,
                dropout=0.0, top_embed_dim=8, top_up_hidden=8, top_up_channels=8, past_channels=8,
                cond_channels=8, cond_res_blocks=1, cond_res_hidden=8)
    base.update(kw)
    return BottomPriorConfig(**base)


def top_model(cfg, seed=0) -> TopPrior:
    torch.manual_seed(seed)
    return TopPrior(cfg).eval()


def bottom_model(cfg, seed=0) -> BottomPrior:
    torch.manual_seed(seed)
    return BottomPrior(cfg).eval()


def top_inputs(cfg: TopPriorConfig, grid=TOP_GRID, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    _, ht, wt = grid
    codes = torch.randint(0, cfg.n_codes, (batch, cfg.pred_steps, ht, wt), generator=g)
    cond_top = torch.randint(0, cfg.n_codes, (batch, 1, ht, wt), generator=g)
    cond_bottom = torch.randint(0, cfg.n_codes_bottom, (batch, 2, 2 * ht, 2 * wt), generator=g)
    return codes, cond_top, cond_bottom


def bottom_inputs(cfg: BottomPriorConfig, hw=BOTTOM_HW, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    hb, wb = hw
    bottom = torch.randint(0, cfg.n_codes, (batch, cfg.n_steps, hb, wb), generator=g)
    top = torch.randint(0, cfg.n_codes_top, (batch, cfg.n_steps // 2, hb // 2, wb // 2), generator=g)
    return bottom, top


def gen(seed):
    return torch.Generator().manual_seed(seed)


# (seed, temperature, top_k, batch): every temperature with and without top-k, both batch sizes
CASES = [(0, 1.0, None, 1), (1, 1.0, 5, 3), (2, 1.2, None, 3), (3, 1.2, 5, 1),
         (4, 0.0, None, 1), (5, 0.0, 5, 3)]


# ----------------------------------------------------------------------------- logits


@pytest.mark.parametrize("kw", [
    {},                                                            # the test config
    dict(kernel=5, first_kernel=7, kernel_t=2, first_kernel_t=3),  # the paper's kernels
    dict(kernel_t=1, first_kernel_t=1),                            # no time taps after layer 0
    dict(kernel_t=3, first_kernel_t=2, n_layers=5, attn_every=5),  # 3 steps back, last block attends
])
def test_top_cached_logits_equal_naive_forward(kw):
    cfg = top_config(**kw)
    model = top_model(cfg)
    codes, ct, cb = top_inputs(cfg, batch=2)
    with torch.no_grad():
        naive = model(codes, ct, cb)
    cached = top_logits_cached(model, codes, ct, cb)
    torch.testing.assert_close(cached, naive, rtol=1e-5, atol=1e-5)


def test_top_cached_logits_tiny_preset_and_odd_grid():
    cfg = TopPriorConfig.tiny()
    model = top_model(cfg)
    for grid in (TOP_GRID, (3, 5, 7)):
        codes, ct, cb = top_inputs(cfg, grid, batch=2)
        with torch.no_grad():
            naive = model(codes, ct, cb)
        torch.testing.assert_close(top_logits_cached(model, codes, ct, cb), naive, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [bottom_config(), bottom_config(kernel=5, first_kernel=7),
                                 BottomPriorConfig.tiny()], ids=["small", "paper-kernels", "tiny"])
def test_bottom_cached_logits_equal_naive_forward(cfg):
    model = bottom_model(cfg)
    bottom, top = bottom_inputs(cfg, batch=2)
    n = torch.tensor([3, 6])
    with torch.no_grad():
        cond = model.condition(model.past_window(bottom, n), n, top=top)
        naive = model.logits_from_cond(bottom[torch.arange(2), n], cond)
    cached = bottom_logits_cached(model, bottom[torch.arange(2), n], cond)
    torch.testing.assert_close(cached, naive, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- codes


@pytest.mark.parametrize("seed,temperature,top_k,batch", CASES)
def test_top_cached_sampling_equals_naive(seed, temperature, top_k, batch):
    cfg = top_config()
    model = top_model(cfg, seed=seed)
    _, ct, cb = top_inputs(cfg, batch=batch, seed=seed)
    naive = model.sample(ct, cb, temperature, top_k, gen(seed))
    cached = sample_top_cached(model, ct, cb, temperature, top_k, gen(seed))
    assert cached.shape == (batch, *TOP_GRID) and cached.dtype == torch.long
    assert torch.equal(cached, naive)


@pytest.mark.parametrize("seed,temperature,top_k,batch", CASES)
def test_bottom_cached_sampling_equals_naive(seed, temperature, top_k, batch):
    # 4 slices (2 given, 2 generated) keep the naive sampler fast; the 8-slice clip is below
    cfg = bottom_config(n_steps=4)
    model = bottom_model(cfg, seed=seed)
    bottom, top = bottom_inputs(cfg, batch=batch, seed=seed)
    given = bottom[:, :2]
    naive = model.sample(top, given, temperature, top_k, gen(seed))
    cached = sample_bottom_cached(model, top, given, temperature, top_k, gen(seed))
    assert cached.shape == (batch, 4, *BOTTOM_HW) and cached.dtype == torch.long
    assert torch.equal(cached[:, :2], given)
    assert torch.equal(cached, naive)


def test_bottom_cached_sampling_full_clip_equals_naive():
    cfg = bottom_config()                          # 8 slices: 2 given, 6 generated
    model = bottom_model(cfg, seed=7)
    bottom, top = bottom_inputs(cfg, batch=1, seed=7)
    naive = model.sample(top, bottom[:, :2], 1.0, None, gen(7))
    cached = sample_bottom_cached(model, top, bottom[:, :2], 1.0, None, gen(7))
    assert torch.equal(cached, naive)


def test_top_cached_sampling_tiny_preset_equals_naive():
    cfg = TopPriorConfig.tiny()
    model = top_model(cfg, seed=3)
    _, ct, cb = top_inputs(cfg, batch=2, seed=3)
    naive = model.sample(ct, cb, 1.0, None, gen(3))
    assert torch.equal(sample_top_cached(model, ct, cb, 1.0, None, gen(3)), naive)


def test_float64_model():
    cfg = top_config()
    model = top_model(cfg, seed=1).double()
    _, ct, cb = top_inputs(cfg, batch=2, seed=1)
    naive = model.sample(ct, cb, 1.2, None, gen(1))
    assert torch.equal(sample_top_cached(model, ct, cb, 1.2, None, gen(1)), naive)


# ----------------------------------------------------------------------------- behaviour


def test_same_seed_same_codes_and_generator_advanced_like_naive():
    cfg = top_config()
    model = top_model(cfg)
    _, ct, cb = top_inputs(cfg, batch=3)
    g1, g2 = gen(11), gen(11)
    a = sample_top_cached(model, ct, cb, 1.0, 5, g1)
    model.sample(ct, cb, 1.0, 5, g2)
    assert torch.equal(g1.get_state(), g2.get_state())
    assert torch.equal(sample_top_cached(model, ct, cb, 1.0, 5, gen(11)), a)
    assert not torch.equal(sample_top_cached(model, ct, cb, 1.0, 5, gen(12)), a)


def test_train_mode_model_samples_as_in_eval_and_is_restored():
    cfg = top_config(dropout=0.5)
    model = top_model(cfg)
    _, ct, cb = top_inputs(cfg, batch=1)
    naive_eval = model.eval().sample(ct, cb, 1.0, None, gen(2))
    model.train()
    threads = torch.get_num_threads()
    cached = sample_top_cached(model, ct, cb, 1.0, None, gen(2), cpu_threads=None)
    assert torch.equal(cached, naive_eval)
    assert model.training and all(m.training for m in model.modules())
    assert torch.get_num_threads() == threads


def test_codes_are_ordinary_tensors_usable_in_training():
    cfg = bottom_config(n_steps=4)
    model = bottom_model(cfg)
    bottom, top = bottom_inputs(cfg, hw=(8, 8))
    codes = sample_bottom_cached(model, top, bottom[:, :2], 1.0, None, gen(0))
    assert not codes.is_inference()
    model.train()
    model.forward_all_slices(codes, top).sum().backward()   # no "inference tensor" error


def test_cpu_threads_restored():
    cfg = top_config()
    model = top_model(cfg)
    _, ct, cb = top_inputs(cfg, grid=(3, 4, 4))
    torch.set_num_threads(2)
    sample_top_cached(model, ct, cb, cpu_threads=1)
    assert torch.get_num_threads() == 2


def test_bad_arguments():
    cfg = bottom_config(n_steps=4)
    model = bottom_model(cfg)
    bottom, top = bottom_inputs(cfg, hw=(8, 8))
    with pytest.raises(ValueError, match="cond_bottom"):
        sample_bottom_cached(model, top, bottom[:, :3])
    tmodel = top_model(top_config())
    _, ct, cb = top_inputs(tmodel.config, grid=(3, 4, 4))
    with pytest.raises(ValueError, match="temperature"):
        sample_top_cached(tmodel, ct, cb, temperature=-1.0)
    with pytest.raises(ValueError, match="cond_bottom"):
        sample_top_cached(tmodel, ct, cb[:, :, :4])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (1.2, 5), (0.0, None)])
def test_cuda_cached_sampling_equals_naive(temperature, top_k):
    dev = torch.device("cuda")
    cfg = top_config()
    model = top_model(cfg, seed=4).to(dev)
    _, ct, cb = top_inputs(cfg, batch=3, seed=4)
    ct, cb = ct.to(dev), cb.to(dev)
    with exact_float32():
        naive = model.sample(ct, cb, temperature, top_k, torch.Generator(dev).manual_seed(4))
        cached = sample_top_cached(model, ct, cb, temperature, top_k, torch.Generator(dev).manual_seed(4))
    assert cached.device.type == "cuda"
    assert torch.equal(cached, naive)
    bcfg = bottom_config(n_steps=4)
    bmodel = bottom_model(bcfg, seed=4).to(dev)
    bottom, top = (z.to(dev) for z in bottom_inputs(bcfg, batch=3, seed=4))
    with exact_float32():
        naive = bmodel.sample(top, bottom[:, :2], temperature, top_k, torch.Generator(dev).manual_seed(4))
        cached = sample_bottom_cached(bmodel, top, bottom[:, :2], temperature, top_k,
                                      torch.Generator(dev).manual_seed(4))
    assert torch.equal(cached, naive)


@pytest.mark.parametrize("past_slices", ["previous", "given"])
@pytest.mark.parametrize("k", [1, 3])
def test_bottom_cached_with_copy_path_equals_naive(k, past_slices):
    cfg = bottom_config(n_steps=4, copy_kernel=k, past_slices=past_slices)
    model = bottom_model(cfg, seed=3)
    torch.manual_seed(3)
    torch.nn.init.normal_(model.copy.weight)
    torch.nn.init.normal_(model.copy.bias)
    bottom, top = bottom_inputs(cfg, batch=2, seed=3)
    n = torch.tensor([2, 3])
    with torch.no_grad():
        cond = model.condition(model.past_window(bottom, n), n, top=top)
        prev = model.past_window(bottom, n)[:, -1]
        naive = model.logits_from_cond(bottom[torch.arange(2), n], cond, prev)
    torch.testing.assert_close(bottom_logits_cached(model, bottom[torch.arange(2), n], cond, prev), naive,
                               rtol=1e-5, atol=1e-5)
    naive = model.sample(top, bottom[:, :2], 1.0, None, gen(3))
    cached = sample_bottom_cached(model, top, bottom[:, :2], 1.0, None, gen(3))
    assert torch.equal(cached, naive)


@pytest.mark.parametrize("copy_kernel", [0, 3])
def test_one_slice_given_the_past_is_the_draw_sampling_makes_there(copy_kernel):
    # slice 3 drawn given the past of a full draw is that draw's slice 3 (same generator state);
    # the slices after it never matter; only generated slices can be drawn
    cfg = bottom_config(n_steps=4, copy_kernel=copy_kernel)
    model = bottom_model(cfg, seed=5)
    if copy_kernel:
        torch.nn.init.normal_(model.copy.weight)
    bottom, top = bottom_inputs(cfg, batch=2, seed=5)
    g = gen(5)
    full = sample_bottom_cached(model, top, bottom[:, :2], 1.0, None, g)
    state = g.get_state()
    g2 = gen(5)
    first = sample_bottom_slice_cached(model, top, full, 2, 1.0, None, g2)
    assert torch.equal(first, full[:, 2])
    past = full.clone()
    past[:, 3] = torch.randint(0, cfg.n_codes, past[:, 3].shape)   # slice >= n never enters
    assert torch.equal(sample_bottom_slice_cached(model, top, past, 3, 1.0, None, g2), full[:, 3])
    assert torch.equal(g2.get_state(), state)
    for n in (1, 4):
        with pytest.raises(ValueError, match="not generated"):
            sample_bottom_slice_cached(model, top, full, n)
