"""Bottom prior: shapes, within-slice causality proved with gradients (every position of the tiny
16x16 slice, a subset of the paper 64x64 slice), slice n's dependence on bottom slices n-W..n-1
only, conditioning on the top, batched training entry point, loss, naive sampling."""
from __future__ import annotations

import pytest
import torch

from vqvp_core.models.bottom_prior import BottomPrior, BottomPriorConfig, past_window
from vqvp_core.models.pixelcnn import bits_per_code, min_layers_no_blind_spot

TINY, PAPER = (16, 16), (64, 64)              # (Hb, Wb) of the presets; top grid is half


def small_config(**kw) -> BottomPriorConfig:
    base = dict(n_codes=32, n_codes_top=24, embed_dim=8, channels=8, n_layers=2, kernel=3,
                first_kernel=3, attn_every=2, attn_heads=2, attn_channels=8, out_hidden=16,
                dropout=0.0, top_embed_dim=8, top_up_hidden=8, top_up_channels=8, past_channels=8,
                cond_channels=8, cond_res_blocks=1, cond_res_hidden=8)
    base.update(kw)
    return BottomPriorConfig(**base)


def make_inputs(cfg: BottomPriorConfig, hw, batch=1, seed=0):
    """A full bottom grid (B, 8, Hb, Wb) and top grid (B, 4, Ht, Wt)."""
    g = torch.Generator().manual_seed(seed)
    hb, wb = hw
    bottom = torch.randint(0, cfg.n_codes, (batch, cfg.n_steps, hb, wb), generator=g)
    top = torch.randint(0, cfg.n_codes_top, (batch, cfg.n_steps // 2, hb // 2, wb // 2), generator=g)
    return bottom, top


def model_for(cfg, seed=0) -> BottomPrior:
    torch.manual_seed(seed)
    return BottomPrior(cfg).eval()


class Capture:
    def __init__(self, module):
        self.outs = []
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, out):
        out.retain_grad()
        self.outs.append(out)

    def close(self):
        self.handle.remove()


def project(logits_sel: torch.Tensor) -> torch.Tensor:
    proj = torch.randn(logits_sel.shape[1], generator=torch.Generator().manual_seed(1))
    return (logits_sel.movedim(1, -1) @ proj).sum()


def within_slice_grads(model: BottomPrior, bottom, top, n: int, positions):
    """(P, Hb*Wb): |d <r, logits of slice n at position p> / d embedding of slice-n code j|."""
    p = len(positions)
    rep = lambda z: z.expand(p, *z.shape[1:])
    nn_ = torch.full((p,), n)
    cap = Capture(model.embed)
    try:
        logits = model(rep(bottom[:, n]), rep(model.past_window(bottom, n)), rep(top), nn_)
    finally:
        cap.close()
    past_emb, cur_emb = cap.outs                       # condition() embeds past, then the slice
    assert cur_emb.shape[1:3] == bottom.shape[2:]
    project(logits.flatten(2)[torch.arange(p), :, torch.tensor(positions)]).backward()
    return cur_emb.grad.abs().sum(-1).flatten(1)


def assert_causal_complete(g, positions):
    for row, i in enumerate(positions):
        assert torch.all(g[row, i:] == 0), f"position {i} depends on itself or a later code"
        blind = (g[row, :i] == 0).nonzero().flatten().tolist()
        assert not blind, f"position {i} is blind to earlier positions {blind}"


# ----------------------------------------------------------------------------- config, helpers


def test_presets_valid_and_round_trip():
    for cfg in (BottomPriorConfig.tiny(), BottomPriorConfig.paper()):
        assert BottomPriorConfig.from_dict(cfg.to_dict()) == cfg
        assert cfg.n_layers >= min_layers_no_blind_spot(cfg.attn_every)
    paper = BottomPriorConfig.paper()
    assert (paper.window, paper.top_up_channels, paper.attn_every) == (4, 1024, 5)


@pytest.mark.parametrize("bad", [dict(window=17), dict(window=0), dict(attn_every=3, n_layers=2),
                                 dict(kernel=2), dict(n_steps=7), dict(n_given=8),
                                 dict(scheduled_sampling=-0.1), dict(scheduled_sampling=1.5),
                                 dict(own_past=1.5), dict(own_past_temperature=0.0)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="BottomPriorConfig"):
        small_config(**bad)


def test_past_window():
    bottom = torch.arange(8)[None, :, None, None].expand(2, 8, 2, 2)     # slice k holds code k
    pad = 99
    assert past_window(bottom, 2, 4, pad)[0, :, 0, 0].tolist() == [pad, pad, 0, 1]
    assert past_window(bottom, 7, 4, pad)[0, :, 0, 0].tolist() == [3, 4, 5, 6]
    assert past_window(bottom, 0, 2, pad)[0, :, 0, 0].tolist() == [pad, pad]
    per_row = past_window(bottom, torch.tensor([3, 6]), 4, pad)[:, :, 0, 0].tolist()
    assert per_row == [[pad, 0, 1, 2], [2, 3, 4, 5]]
    assert past_window(bottom, 5, 1, pad)[0, :, 0, 0].tolist() == [4]


@pytest.mark.parametrize("window", [1, 2, 4, 6])
def test_window_sizes(window):
    cfg = small_config(window=window)
    model = model_for(cfg)
    bottom, top = make_inputs(cfg, TINY)
    n = torch.tensor([3])
    out = model(bottom[:, 3], model.past_window(bottom, n), top, n)
    assert out.shape == (1, cfg.n_codes, *TINY)


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("hw", [TINY, PAPER])
def test_shapes_and_batched_slices_match_single_slices(hw):
    cfg = small_config()
    model = model_for(cfg)
    batch = 2 if hw == TINY else 1
    bottom, top = make_inputs(cfg, hw, batch=batch)
    with torch.no_grad():
        assert model.top_features(top).shape == (batch, cfg.top_up_channels, 8, *hw)
        slices = [2, 7] if hw == TINY else [5]
        allv = model.forward_all_slices(bottom, top, slices)
        assert allv.shape == (batch, cfg.n_codes, len(slices), *hw)
        for i, n in enumerate(slices):
            nn_ = torch.full((batch,), n)
            one = model(bottom[:, n], model.past_window(bottom, n), top, nn_)
            assert one.shape == (batch, cfg.n_codes, *hw)
            torch.testing.assert_close(allv[:, :, i], one, rtol=1e-4, atol=1e-5)
        if hw == TINY:
            assert model.forward_all_slices(bottom, top).shape[2] == 6     # default: slices 2..7


def test_tiny_preset_forward_all_slices():
    cfg = BottomPriorConfig.tiny()
    model = model_for(cfg)
    bottom, top = make_inputs(cfg, TINY)
    assert model.forward_all_slices(bottom, top).shape == (1, 512, 6, *TINY)


def test_per_row_slice_index():
    cfg = small_config()
    model = model_for(cfg)
    bottom, top = make_inputs(cfg, TINY, batch=2)
    n = torch.tensor([2, 6])
    both = model(bottom[torch.arange(2), n], model.past_window(bottom, n), top, n)
    for b in range(2):
        nb = n[b:b + 1]
        alone = model(bottom[b:b + 1, n[b]], model.past_window(bottom[b:b + 1], nb), top[b:b + 1], nb)
        torch.testing.assert_close(both[b:b + 1], alone, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- causality


def test_within_slice_causal_no_blind_spot_every_position_tiny():
    cfg = small_config()
    model = model_for(cfg)
    bottom, top = make_inputs(cfg, TINY)
    positions = list(range(TINY[0] * TINY[1]))
    g = within_slice_grads(model, bottom, top, 4, positions)
    assert_causal_complete(g, positions)


def test_within_slice_causal_no_blind_spot_paper_subset():
    cfg = small_config()
    model = model_for(cfg)
    bottom, top = make_inputs(cfg, PAPER)
    hb, wb = PAPER
    n = hb * wb
    fixed = [0, 1, wb - 1, wb, wb + 1, n // 2, n - wb, n - 1]
    rnd = torch.randperm(n, generator=torch.Generator().manual_seed(3))[:4].tolist()
    positions = fixed + rnd
    g = within_slice_grads(model, bottom, top, 2, positions)
    assert_causal_complete(g, positions)


@pytest.mark.parametrize("past_slices", ["previous", "given"])
@pytest.mark.parametrize("window", [4, 2])
def test_slice_depends_only_on_its_past_window(window, past_slices):
    # through the real training path: bottom codes are embedded once (pad slices in front), so
    # the gradient w.r.t. that embedding shows which bottom slices each slice's logits read;
    # past_slices='given': every generated slice reads the given slices' window, no drawn slice
    cfg = small_config(window=window, past_slices=past_slices)
    model = model_for(cfg)
    bottom, top = make_inputs(cfg, TINY)
    slices = list(range(2, 8))
    cap = Capture(model.embed)
    logits = model.forward_all_slices(bottom, top, slices)           # (1, K, S, Hb, Wb)
    cap.close()
    (emb,) = cap.outs                                                # (1, W+8, Hb, Wb, E)
    for i, n in enumerate(slices):
        emb.grad = None
        project(logits[:, :, i]).backward(retain_graph=True)
        g = emb.grad.abs().sum(-1)[0, window:]                       # (8, Hb, Wb): slice m
        end = n if past_slices == "previous" else min(n, cfg.n_given)
        for m in range(8):
            touched = bool((g[m] > 0).any())
            if end - window <= m < end:
                assert touched, f"slice {n} ignores past slice {m}"
            elif m == n:
                assert g[m].flatten()[-1] == 0                       # no one reads the last code
                assert touched
            else:
                assert not touched, f"slice {n} depends on slice {m}"


def test_top_conditioning_and_past_window_change_the_output():
    cfg = small_config()
    model = model_for(cfg)
    bottom, top = make_inputs(cfg, TINY)
    cap = Capture(model.top_embed)
    logits = model.forward_all_slices(bottom, top, [5])
    cap.close()
    project(logits).backward()
    g = cap.outs[0].grad.abs().sum(-1)[0]                            # (4, Ht, Wt)
    # the paper's upsampler reaches, for slice n, the top steps i with 2i-3 <= n <= 2i+4 (time
    # kernels 4/s2, 3, 3); slice 5 -> steps 1, 2, 3, every spatial position of them
    assert (g > 0).flatten(1).all(1).tolist() == [False, True, True, True]
    # first position of a slice: only conditioning can move it
    with torch.no_grad():
        n = torch.tensor([5])
        base = model(bottom[:, 5], model.past_window(bottom, n), top, n)[:, :, 0, 0]
        top2 = (top + 1) % cfg.n_codes_top
        past2 = (model.past_window(bottom, n) + 1) % cfg.n_codes
        assert not torch.allclose(base, model(bottom[:, 5], model.past_window(bottom, n), top2, n)[:, :, 0, 0])
        assert not torch.allclose(base, model(bottom[:, 5], past2, top, n)[:, :, 0, 0])


# ----------------------------------------------------------------------------- training


def test_loss_decreases_on_a_fixed_batch():
    cfg = small_config(channels=16, embed_dim=16)
    model = model_for(cfg).train()
    bottom, top = make_inputs(cfg, TINY, batch=1)
    slices = [2, 6]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = bits_per_code(model.forward_all_slices(bottom, top, slices), bottom[:, slices])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        unused = [k for k, prm in model.named_parameters() if prm.grad is None]
        assert not unused, f"parameters without gradient (DDP would fail): {unused}"
    assert losses[0] == pytest.approx(5.0, abs=0.5)                  # ~log2(32) at init
    assert losses[-1] < losses[0] - 0.3


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_scheduled_sampling_mixes_in_the_models_own_draws(rate):
    """A fraction `rate` of the generated slices' codes become the model's draws from its own
    teacher-forced prediction; the given slices never change; rate 1 = all draws: with a model
    that puts all its mass on one code per position, exactly its argmax."""
    cfg = small_config(scheduled_sampling=rate)
    model = model_for(cfg)
    bottom, top = make_inputs(cfg, TINY, batch=4)
    mixed = model.own_samples_mixed_in(bottom, top, generator=torch.Generator().manual_seed(0))
    assert mixed.shape == bottom.shape and torch.equal(mixed[:, :2], bottom[:, :2])
    changed = (mixed[:, 2:] != bottom[:, 2:]).float().mean().item()
    # draws from a 32-code model at init rarely equal the random true code
    assert changed == pytest.approx(rate * (1 - 1 / cfg.n_codes), abs=0.05)
    if rate == 1.0:
        with torch.no_grad():
            model.pixelcnn.out[-1].bias.add_(1e4 * torch.nn.functional.one_hot(torch.tensor(3), cfg.n_codes))
            assert (model.own_samples_mixed_in(bottom, top)[:, 2:] == 3).all()
    assert not torch.is_grad_enabled() or mixed.grad_fn is None


def test_scheduled_sampling_in_training_only():
    """The model's objective draws inputs in train mode only: eval-mode bits stay teacher-forced."""
    cfg = small_config(scheduled_sampling=0.5)
    model = model_for(cfg)
    bottom, top = make_inputs(cfg, (4, 4), batch=2)
    batch = {"top": top, "cond_top": top[:, :1], "bottom": bottom, "cond_bottom": bottom[:, :2]}
    with torch.no_grad():
        ev, targets = model.eval().logits_and_targets(batch)
        assert torch.equal(ev, model.forward_all_slices(bottom, top)) and torch.equal(targets, bottom[:, 2:])
        torch.manual_seed(0)
        tr, targets = model.train().logits_and_targets(batch)
        assert torch.equal(targets, bottom[:, 2:]) and not torch.allclose(tr, ev)


@pytest.mark.parametrize("draws", ["teacher_forced", "autoregressive"])
@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
def test_own_past_replaces_whole_generated_slices_with_draws(rate, draws):
    """own_past: per clip and generated slice, with probability `rate`, the past grid holds the
    model's own draw of that slice (autoregressive: the last slice, nobody's past, stays true);
    given slices never change; at rate 1 with a model that puts its mass on one code, exactly that
    code; off: None."""
    cfg = small_config(own_past=rate, own_past_temperature=0.5, own_past_draws=draws, n_steps=6)
    model = model_for(cfg)
    if draws == "autoregressive":
        from vqvp_core.sampling.cached import sample_slices_given_past

        if rate:
            with pytest.raises(ValueError, match="needs a slice sampler"):
                model.own_draws_in_past(*make_inputs(cfg, (8, 8), batch=1))
        model.slice_sampler = sample_slices_given_past
    bottom, top = make_inputs(cfg, (8, 8), batch=8)
    past = model.own_draws_in_past(bottom, top, generator=torch.Generator().manual_seed(0))
    if rate == 0:
        assert past is None
        return
    last = -1 if draws == "autoregressive" else None
    assert past.shape == bottom.shape and torch.equal(past[:, :2], bottom[:, :2]) and past.grad_fn is None
    if last:
        assert torch.equal(past[:, -1], bottom[:, -1])
    replaced = (past[:, 2:last] != bottom[:, 2:last]).float().mean((2, 3))  # (B, S): 0 or ~1 per slice
    assert ((replaced < 0.01) | (replaced > 0.8)).all()
    assert (replaced > 0.8).float().mean().item() == pytest.approx(rate, abs=0.25)
    if rate == 1.0:
        with torch.no_grad():
            model.pixelcnn.out[-1].bias.add_(1e4 * torch.nn.functional.one_hot(torch.tensor(3), cfg.n_codes))
        assert (model.own_draws_in_past(bottom, top)[:, 2:last] == 3).all()


def test_autoregressive_own_past_is_the_samplers_draw_given_the_true_past():
    from vqvp_core.sampling.cached import sample_slices_given_past

    cfg = small_config(own_past=1.0, own_past_draws="autoregressive", n_steps=6)
    model = model_for(cfg).train()
    model.slice_sampler = sample_slices_given_past
    bottom, top = make_inputs(cfg, (8, 8), batch=2, seed=4)
    g = torch.Generator().manual_seed(1)
    want = sample_slices_given_past(model, top, bottom, [2, 3, 4], 1.0, None, g)   # slice 5: nobody's past
    past = model.own_draws_in_past(bottom, top, generator=torch.Generator().manual_seed(1))
    assert torch.equal(past[:, 2:5], want) and model.training                      # train mode restored


@pytest.mark.parametrize("copy_kernel", [0, 3])
def test_own_past_feeds_the_windows_only_and_training_only(copy_kernel):
    """With a past grid, each slice's logits are those of its own stream over that past: equal to
    the single-slice forward on (stream from bottom, window and copy path from past). Eval-mode
    bits stay teacher-forced; train mode changes the logits, never the targets."""
    cfg = small_config(own_past=1.0, copy_kernel=copy_kernel)
    model = model_for(cfg)
    if copy_kernel:
        torch.nn.init.normal_(model.copy.weight)
    bottom, top = make_inputs(cfg, (4, 4), batch=2, seed=1)
    past, _ = make_inputs(cfg, (4, 4), batch=2, seed=2)
    with torch.no_grad():
        both = model.forward_all_slices(bottom, top, past=past)            # (B, K, S, Hb, Wb)
        for i, n in enumerate(range(2, cfg.n_steps)):
            nn_ = torch.full((2,), n)
            one = model(bottom[:, n], model.past_window(past, n), top, nn_)
            torch.testing.assert_close(both[:, :, i], one, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="past must be shaped like bottom"):
            model.forward_all_slices(bottom, top, past=past[:, :4])
        batch = {"top": top, "cond_top": top[:, :1], "bottom": bottom, "cond_bottom": bottom[:, :2]}
        ev, targets = model.eval().logits_and_targets(batch)
        assert torch.equal(ev, model.forward_all_slices(bottom, top)) and torch.equal(targets, bottom[:, 2:])
        tr, targets = model.train().logits_and_targets(batch)
        assert torch.equal(targets, bottom[:, 2:]) and not torch.allclose(tr, ev)


# ----------------------------------------------------------------------------- sampling


def test_naive_sampling():
    cfg = small_config()
    model = model_for(cfg)
    bottom, top = make_inputs(cfg, (2, 4), batch=2)
    given = bottom[:, :2]
    a = model.sample(top, given, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(5))
    b = model.sample(top, given, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(5))
    assert a.shape == bottom.shape and a.dtype == torch.long
    assert torch.equal(a[:, :2], given)
    assert ((a >= 0) & (a < cfg.n_codes)).all()
    assert torch.equal(a, b)
    # greedy samples are a fixed point of the batched training path
    greedy = model.sample(top, given, temperature=0)
    with torch.no_grad():
        assert torch.equal(model.forward_all_slices(greedy, top).argmax(1), greedy[:, 2:])


def test_loss_is_bits_per_code_of_the_teacher_forced_logits():
    from vqvp_core.models.pixelcnn import bits_per_code
    from vqvp_core.train.objective import Objective, step_fn

    cfg = small_config()
    model = model_for(cfg).eval()
    bottom, top = make_inputs(cfg, (4, 4), batch=2)
    batch = {"top": top, "cond_top": top[:, :1], "bottom": bottom, "cond_bottom": bottom[:, :2]}
    with torch.no_grad():
        loss, metrics = step_fn(Objective(model), batch)
        assert torch.equal(loss, bits_per_code(*model.logits_and_targets(batch)))
        assert torch.equal(metrics["bits_per_code"], loss)


# ------------------------------------------------------------------ frequency-weighted loss


@pytest.mark.parametrize("power", [0.25, 0.5, 1.0])
def test_code_weights_favour_rare_codes_and_keep_the_losss_scale(power):
    from vqvp_core.models.pixelcnn import code_weights

    counts = torch.tensor([900, 60, 30, 10, 0])
    w = code_weights(counts, power)
    freq = counts.double() / counts.sum()
    assert torch.isclose((w.double() * freq).sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.all(w[1:4] > w[:3])                            # rarer -> heavier
    assert torch.isclose(w[1] / w[0], torch.tensor((60 / 900) ** -power, dtype=torch.float32))
    assert torch.isclose(w[4] / w[0], torch.tensor(100.0))       # unseen: capped
    assert torch.equal(code_weights(counts, 0.0), torch.ones(5))


def test_weighted_bits_are_bits_with_equal_weights_and_weight_each_target():
    from vqvp_core.models.pixelcnn import weighted_bits_per_code

    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(3, 6, 4, 4, generator=g), torch.randint(0, 6, (3, 4, 4), generator=g)
    equal, plain = weighted_bits_per_code(logits, targets, torch.full((6,), 2.5))
    assert torch.allclose(equal, bits_per_code(logits, targets))
    assert torch.allclose(plain, bits_per_code(logits, targets))
    w = torch.rand(6, generator=g) + 0.1
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    want = (w[targets] * nll).sum() / w[targets].sum() / torch.log(torch.tensor(2.0))
    assert torch.allclose(weighted_bits_per_code(logits, targets, w)[0], want)


def test_weighted_loss_trains_on_weights_and_reports_plain_bits():
    from vqvp_core.models.pixelcnn import weighted_bits_per_code

    cfg = small_config(code_weight_power=0.5)
    model = model_for(cfg).eval()
    bottom, top = make_inputs(cfg, (4, 4), batch=2)
    batch = {"top": top, "cond_top": top[:, :1], "bottom": bottom, "cond_bottom": bottom[:, :2]}
    counts = torch.bincount(bottom[:, 2:].flatten(), minlength=cfg.n_codes)
    with torch.no_grad():
        unset, _ = model.loss(batch)                              # weights all 1 until set
        model.set_code_counts(counts)
        loss, metrics = model.loss(batch)
        logits, targets = model.logits_and_targets(batch)
    assert torch.allclose(unset, bits_per_code(logits, targets))
    assert torch.allclose(loss, weighted_bits_per_code(logits, targets, model.code_weights)[0])
    assert not torch.allclose(loss, metrics["bits_per_code"])
    assert torch.allclose(metrics["bits_per_code"], bits_per_code(logits, targets))
    # the weights come from the data, not the checkpoint: a model file of the paper's prior loads
    assert "code_weights" not in model.state_dict()
    BottomPrior(small_config()).load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match=r"code counts must be \(32,\)"):
        model.set_code_counts(counts[:5])


def test_prior_stage_sets_the_weights_from_the_training_codes():
    import numpy as np

    from stages.train_bottom_prior import build_model
    from vqvp_core.models.pixelcnn import code_weights

    cfg = small_config(code_weight_power=1.0)
    bottom, _ = make_inputs(cfg, (4, 4), batch=3)

    class Codes:
        def all(self, key):
            assert key == "bottom"
            return bottom.numpy().astype(np.int16)

    model = build_model(cfg, Codes())
    counts = torch.bincount(bottom[:, 2:].flatten(), minlength=cfg.n_codes)
    assert torch.equal(model.code_weights, code_weights(counts, 1.0))
    assert torch.equal(build_model(small_config(), Codes()).code_weights,
                       torch.ones(cfg.n_codes))


# ------------------------------------------------------------------------------- copy path


def with_random_copy(model: BottomPrior, seed=0) -> BottomPrior:
    """The copy path is zero-initialised (the paper's model at step 0): give it weights."""
    torch.manual_seed(seed)
    torch.nn.init.normal_(model.copy.weight)
    torch.nn.init.normal_(model.copy.bias)
    return model


def test_copy_path_starts_as_the_paper_model():
    cfg = small_config()
    bottom, top = make_inputs(cfg, TINY, batch=2)
    plain = model_for(cfg)
    copying = BottomPrior(cfg.replace(copy_kernel=3)).eval()
    copying.load_state_dict(plain.state_dict(), strict=False)   # same weights but the copy conv
    with torch.no_grad():
        torch.testing.assert_close(copying.forward_all_slices(bottom, top), plain.forward_all_slices(bottom, top))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_copy_logits_put_each_offsets_weight_on_the_code_found_there(k):
    cfg = small_config(copy_kernel=k)
    model = model_for(cfg)
    prev = torch.randint(0, cfg.n_codes, (2, *TINY))
    prev[1, 0, 0] = cfg.pad_code                                 # a pad code adds nothing
    cond = torch.randn(2, cfg.cond_channels, 1, *TINY)
    p = k // 2
    for o, (dy, dx) in enumerate((dy, dx) for dy in range(k) for dx in range(k)):
        with torch.no_grad():
            model.copy.weight.zero_()
            model.copy.bias.zero_()
            model.copy.bias[o] = 1.0
            got = model.copy_logits(cond, prev)                  # (2, K, Hb, Wb)
        want = torch.zeros_like(got)
        for y in range(TINY[0]):
            for x in range(TINY[1]):
                sy, sx = y + dy - p, x + dx - p
                if 0 <= sy < TINY[0] and 0 <= sx < TINY[1]:
                    for b in range(2):
                        if prev[b, sy, sx] < cfg.n_codes:
                            want[b, prev[b, sy, sx], y, x] = 1.0
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="prev"):
        model.copy_logits(cond, None)


@pytest.mark.parametrize("bad", [2, 4])
def test_copy_kernel_must_be_odd(bad):
    with pytest.raises(ValueError, match="copy_kernel"):
        small_config(copy_kernel=bad)


def test_copy_path_batched_slices_match_single_slices_and_stay_causal():
    cfg = small_config(copy_kernel=3)
    model = with_random_copy(model_for(cfg))
    bottom, top = make_inputs(cfg, TINY, batch=2)
    slices = [2, 3, 7]
    with torch.no_grad():
        allv = model.forward_all_slices(bottom, top, slices)
        for i, n in enumerate(slices):
            one = model(bottom[:, n], model.past_window(bottom, n), top, torch.full((2,), n))
            torch.testing.assert_close(allv[:, :, i], one, rtol=1e-4, atol=1e-5)
    # the training path copies slice n-1: with a constant weight 1 on the centre offset, the copy
    # model's logits minus the plain model's (same weights) are exactly one-hot of slice n-1
    plain = BottomPrior(cfg.replace(copy_kernel=0)).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        model.copy.weight.zero_()
        model.copy.bias.zero_()
        model.copy.bias[4] = 1.0                                     # offset (1, 1) of 3x3: the cell itself
        diff = model.forward_all_slices(bottom, top, slices) - plain.forward_all_slices(bottom, top, slices)
    for i, n in enumerate(slices):
        want = torch.nn.functional.one_hot(bottom[:, n - 1], cfg.n_codes).permute(0, 3, 1, 2).float()
        torch.testing.assert_close(diff[:, :, i], want, atol=1e-5, rtol=0)


def test_the_training_stage_gives_autoregressive_own_past_its_sampler():
    from stages.train_bottom_prior import build_model
    from vqvp_core.sampling.cached import sample_slices_given_past

    assert build_model(small_config(), None).slice_sampler is None
    model = build_model(small_config(own_past=0.5, own_past_draws="autoregressive"), None)
    assert model.slice_sampler is sample_slices_given_past
