"""VQVAE: shapes for both presets (T=16 and the T=4 conditioning frames), encode/decode
consistency, gradients, a few optimisation steps, input validation, config round trips and the
uint8 conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqvp_core.models.vqvae import VQVAE, VQVAEConfig, clips_to_input, output_to_uint8

# Narrow widths: the shapes only depend on the strides, and these keep every test fast.
SMALL = dict(first_channels=8, channels=16, res_channels=8, embed_dim=8, n_codes=32)



def _model(preset: str = "tiny", **kw) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE(VQVAEConfig.preset(preset, **{**SMALL, **kw}))


def _moving_square(B: int = 2, T: int = 8, S: int = 32) -> torch.Tensor:
    """(B, 3, T, S, S) in [-1, 1]: a bright square moving right on a dark background."""
    x = torch.full((B, 3, T, S, S), -0.8)
    for b in range(B):
        for t in range(T):
            y0, x0 = 4 + 3 * b, 2 + t * (S // (T + 4))
            x[b, b % 3, t, y0:y0 + S // 4, x0:x0 + S // 4] = 0.9
    return x


@pytest.mark.parametrize("preset,size", [("tiny", 64), ("paper", 256)])
@pytest.mark.parametrize("frames", [16, 4])
def test_shapes(preset, size, frames):
    cfg = VQVAEConfig.preset(preset)
    (tt, ht, wt), (tb, hb, wb) = cfg.latent_shapes(frames)
    assert (tt, tb) == (frames // 4, frames // 2) and (ht, hb) == (size // 8, size // 4)
    m = _model(preset).eval()
    x = torch.rand(1, 3, frames, size, size) * 2 - 1
    with torch.no_grad():
        out = m(x)
        top, bottom = m.encode(x)
    assert out.recon.shape == x.shape
    assert top.shape == (1, tt, ht, wt) and bottom.shape == (1, tb, hb, wb)
    assert top.dtype == bottom.dtype == torch.int64
    assert out.top_codes.shape == top.shape and out.bottom_codes.shape == bottom.shape


def test_preset_grids_match_the_design():
    # DESIGN.md, "Configuration": tiny 16x16x8 / 8x8x4, paper 64x64x8 / 32x32x4 (H x W x T)
    assert VQVAEConfig.tiny().latent_shapes() == ((4, 8, 8), (8, 16, 16))
    assert VQVAEConfig.paper().latent_shapes() == ((4, 32, 32), (8, 64, 64))
    # the conditioning frames: top 1 step, bottom 2
    assert VQVAEConfig.paper().latent_shapes(4) == ((1, 32, 32), (2, 64, 64))


def test_full_width_presets_build_and_run_on_meta():
    # full-width paper model: parameters and encoder/decoder shapes without allocating memory
    for preset in ("tiny", "paper"):
        cfg = VQVAEConfig.preset(preset)
        with torch.device("meta"):
            m = VQVAE(cfg)
            x = torch.empty(2, 3, 16, cfg.size, cfg.size)
            h_b = m.enc_b(x)
            h_t = m.enc_t(h_b)
            rec = m._decode(torch.empty(2, cfg.embed_dim, *h_t.shape[2:]),
                            torch.empty(2, cfg.embed_dim, *h_b.shape[2:]))
        (tt, ht, _), (tb, hb, _) = cfg.latent_shapes()
        assert h_b.shape == (2, cfg.channels, tb, hb, hb)
        assert h_t.shape == (2, cfg.channels, tt, ht, ht)
        assert rec.shape == x.shape
    n_tiny = sum(p.numel() for p in VQVAE(VQVAEConfig.tiny()).parameters())
    assert 1e6 < n_tiny < 8e6  # "a few M params at most"


def test_encode_cond_takes_exactly_four_frames():
    m = _model().eval()
    x = torch.rand(2, 3, 16, 64, 64) * 2 - 1
    top, bottom = m.encode_cond(x[:, :, :4])
    assert top.shape == (2, 1, 8, 8) and bottom.shape == (2, 2, 16, 16)
    with pytest.raises(ValueError, match=r"dim 2 \(frames T\) must be 4, got 16"):
        m.encode_cond(x)


@pytest.mark.parametrize("causal", [True, False])
def test_causal_encoder_never_sees_later_frames(causal):
    """causal_encoder: the encoder features of bottom slice j (frames 2j, 2j+1) and of top step k
    (frames 4k..4k+3) do not change when any later frame does; with centred padding they do. And
    the 4 conditioning frames encoded alone give exactly the clip's first top codes."""
    model = _model(causal_encoder=causal).eval()
    x = torch.rand(2, 3, 16, 32, 32) * 2 - 1
    with torch.no_grad():
        model.train()(x)  # codebooks initialised from this batch
        model.eval()
        h_b, codes_t = model.enc_b(x), model.encode(x)[0]
        h_t = model.enc_t(h_b)
        for cut in (4, 8, 12):  # frames >= cut replaced
            y = x.clone()
            y[:, :, cut:] = torch.rand_like(y[:, :, cut:]) * 2 - 1
            y_b = model.enc_b(y)
            same_b = torch.equal(y_b[:, :, : cut // 2], h_b[:, :, : cut // 2])
            same_t = torch.equal(model.enc_t(y_b)[:, :, : cut // 4], h_t[:, :, : cut // 4])
            assert same_b == same_t == causal, cut
        assert torch.equal(model.encode_cond(x[:, :, :4])[0], codes_t[:, :1]) or not causal


@pytest.mark.parametrize("sees", [True, False])
def test_bottom_codes_see_the_top_level_only_when_asked(sees):
    """bottom_sees_top: with it the bottom codes change when the top codebook does (VQ-VAE-2's
    bottom quantizer input includes the decoded top codes); without it they are a function of the
    bottom encoder's features alone, and the model has no top-to-bottom decoder."""
    model = _model(bottom_sees_top=sees)
    x = torch.rand(2, 3, 16, 32, 32) * 2 - 1
    with torch.no_grad():
        model.train()(x)  # codebooks initialised from this batch
        model.eval()
        before = model.encode(x)[1]
        model.quantize_t.codebook.copy_(torch.randn_like(model.quantize_t.codebook) * 3)
        after = model.encode(x)[1]
    assert torch.equal(before, after) != sees
    assert hasattr(model, "dec_t") == sees


@pytest.mark.parametrize("rate", [0.0, 0.99])
def test_bottom_dropout_decodes_some_training_clips_from_the_top_alone(rate):
    """bottom_dropout: in training a dropped clip's reconstruction is the decoder of (top, zeros);
    in eval mode nothing is dropped (forward equals decode_codes)."""
    m = _model(bottom_dropout=rate)
    x = _moving_square(2, 8, 32)
    m.train()(x)                                         # codebooks initialised from this batch
    m.quantize_t.eval(), m.quantize_b.eval()             # no more EMA steps: codes stay fixed
    torch.manual_seed(0)                                 # rate 0.99: both clips dropped at this seed
    out = m(x)                                           # the model itself still in training mode
    with torch.no_grad():
        q_t, q_b = m._encode(x)
        top_only = m._decode(q_t.quantized, torch.zeros_like(q_b.quantized))
        both = m._decode(q_t.quantized, q_b.quantized)
    want = top_only if rate else both
    torch.testing.assert_close(out.recon, want, rtol=1e-5, atol=1e-5)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x).recon, m.decode_codes(*m.encode(x)), rtol=1e-5, atol=1e-5)


def test_decode_codes_matches_forward_in_eval_mode():
    m = _model()
    x = _moving_square(2, 8, 32)
    m.train()(x)  # initialise the codebooks from data, one EMA step
    m.eval()
    with torch.no_grad():
        out = m(x)
        top, bottom = m.encode(x)
        rec = m.decode_codes(top, bottom)
    assert torch.equal(top, out.top_codes) and torch.equal(bottom, out.bottom_codes)
    assert rec.shape == x.shape
    torch.testing.assert_close(rec, out.recon, rtol=1e-5, atol=1e-5)
    # int16 codes as stored in data/latents/ work too
    torch.testing.assert_close(m.decode_codes(top.short(), bottom.short()), rec)


def test_decode_codes_validates_shapes():
    m = _model().eval()
    top = torch.zeros(1, 4, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"bottom_codes shape must be \(1, 8, 16, 16\)"):
        m.decode_codes(top, torch.zeros(1, 8, 16, 15, dtype=torch.long))
    with pytest.raises(ValueError, match="top_codes must be a"):
        m.decode_codes(top[0], torch.zeros(1, 8, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        m.decode_codes(top + 40, torch.zeros(1, 8, 16, 16, dtype=torch.long))


@pytest.mark.parametrize("shape,match", [
    ((2, 3, 16, 64), r"5 dims"),
    ((2, 4, 16, 64, 64), r"dim 1 \(channels\) must be 3, got 4"),
    ((2, 3, 6, 64, 64), r"dim 2 \(frames T\) must be a positive multiple of 4, got 6"),
    ((2, 3, 16, 60, 64), r"dim 3 \(height H\) must be a positive multiple of 8, got 60"),
    ((2, 3, 16, 64, 36), r"dim 4 \(width W\) must be a positive multiple of 8, got 36"),
])
def test_input_validation(shape, match):
    m = _model().eval()
    with pytest.raises(ValueError, match=match):
        m(torch.zeros(shape))
    with pytest.raises(ValueError, match="float"):
        m(torch.zeros(2, 3, 16, 64, 64, dtype=torch.uint8))


def test_losses_and_stats():
    m = _model().train()
    x = _moving_square()
    out = m(x)
    torch.testing.assert_close(out.loss, out.recon_loss + out.commit_loss)
    torch.testing.assert_close(out.recon_loss, ((out.recon - x) ** 2).mean())
    met = out.metrics()
    for level in ("top", "bottom"):
        assert 1.0 <= met[f"{level}_perplexity"] <= 32 + 1e-3
        assert 0.0 < met[f"{level}_usage"] <= 1.0
    assert set(met) >= {"loss", "recon_loss", "commit_loss", "top_restarted", "bottom_restarted"}


@pytest.mark.parametrize("bottom_sees_top", [True, False])
def test_gradients_reach_every_trainable_layer(bottom_sees_top):
    m = _model(bottom_sees_top=bottom_sees_top).train()
    out = m(_moving_square())
    out.recon_loss.backward()  # through both straight-through bottlenecks
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(b.grad is None for b in m.buffers())


def test_a_few_steps_on_a_fixed_batch_reduce_the_loss():
    m = _model(n_codes=64).train()
    x = _moving_square(2, 8, 16)
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        out = m(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.recon_loss.item())
    assert min(losses[-5:]) < 0.5 * losses[0], losses


def test_bf16_autocast_forward_backward():
    m = _model().train()
    x = _moving_square()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.recon.shape == x.shape
    assert out.top_codes.dtype == torch.int64


def test_state_dict_round_trip_gives_the_same_codes():
    m = _model().train()
    x = _moving_square()
    m(x)
    ckpt = {"config": m.config.to_dict(), "state_dict": m.state_dict()}
    m2 = VQVAE(VQVAEConfig.from_dict(ckpt["config"]))
    m2.load_state_dict(ckpt["state_dict"])
    m.eval(), m2.eval()
    with torch.no_grad():
        for a, b in zip(m.encode(x), m2.encode(x)):
            assert torch.equal(a, b)
    assert bool(m2.quantize_t.initialized) and bool(m2.quantize_b.initialized)


# ---------------------------------------------------------------------- config


def test_config_round_trip_and_errors():
    for cfg in (VQVAEConfig.tiny(), VQVAEConfig.paper(), VQVAEConfig.tiny(channels=96)):
        assert VQVAEConfig.from_dict(cfg.to_dict()) == cfg
    assert VQVAEConfig.tiny().n_codes == VQVAEConfig.paper().n_codes == 512
    with pytest.raises(ValueError, match="unknown VQVAEConfig key 'chanels'"):
        VQVAEConfig.from_dict({"chanels": 3})
    with pytest.raises(ValueError, match="VQVAEConfig.channels = 0: .*greater than or equal to 1"):
        VQVAEConfig(channels=0)
    with pytest.raises(ValueError, match="VQVAEConfig.channels = True: .*valid integer"):
        VQVAEConfig(channels=True)
    with pytest.raises(ValueError, match="VQVAEConfig.decay = 1.0: .*less than 1"):
        VQVAEConfig(decay=1.0)
    with pytest.raises(ValueError, match="size = 60: expected a multiple of 8"):
        VQVAEConfig(size=60)
    with pytest.raises(ValueError, match="frozen"):  # configs are values: a changed one is a new config
        VQVAEConfig().channels = 3
    assert VQVAEConfig().replace(channels=96).channels == 96
    with pytest.raises(ValueError, match="preset must be 'tiny' or 'paper'"):
        VQVAEConfig.preset("huge")


# ---------------------------------------------------------------------- conversions


@pytest.mark.parametrize("as_numpy", [True, False])
def test_clips_to_input_and_back(as_numpy):
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, size=(2, 4, 8, 16, 3), dtype=np.uint8)
    clips[0, 0, 0, 0] = [0, 255, 128]
    x = clips_to_input(clips if as_numpy else torch.from_numpy(clips))
    assert x.shape == (2, 3, 4, 8, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x[0, :, 0, 0, 0].tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)
    back = output_to_uint8(x)
    assert back.shape == clips.shape and back.dtype == torch.uint8
    np.testing.assert_array_equal(back.numpy(), clips)
    # out-of-range model outputs are clamped
    assert output_to_uint8(torch.full((1, 3, 1, 1, 1), 3.0)).flatten().tolist() == [255] * 3


def test_conversion_errors():
    with pytest.raises(ValueError, match="uint8"):
        clips_to_input(np.zeros((1, 4, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="5 dims"):
        clips_to_input(np.zeros((4, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="float"):
        output_to_uint8(torch.zeros(1, 3, 1, 1, 1, dtype=torch.uint8))


# ---------------------------------------------------------------------- DDP


def _ddp_model_worker(rank: int, world: int, store: str, out_dir: str, x: torch.Tensor) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)  # two processes on two cores
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same weights on both ranks
        m = VQVAE(VQVAEConfig.tiny(**SMALL))
        torch.manual_seed(1 + rank)  # but different RNG streams: init/restarts must not diverge
        ddp = DDP(m, forward_sync_buffers=False)  # no buffer sync: the quantizers must agree
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        per = x.shape[0] // world
        for _ in range(2):
            out = ddp(x[rank * per:(rank + 1) * per])  # the dataclass output passes through DDP
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        torch.save(m.state_dict(), f"{out_dir}/model{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_keep_identical_models(tmp_path):
    import torch.multiprocessing as mp

    x = torch.cat([_moving_square(2), -_moving_square(2)])  # 4 clips, 2 per rank
    mp.spawn(_ddp_model_worker, args=(2, str(tmp_path / "store"), str(tmp_path), x), nprocs=2,
             join=True)
    s0, s1 = torch.load(tmp_path / "model0.pt"), torch.load(tmp_path / "model1.pt")
    assert s0.keys() == s1.keys()
    for k in s0:
        torch.testing.assert_close(s0[k], s1[k], rtol=1e-6, atol=1e-7, msg=k)
    assert not torch.equal(s0["quantize_b.codebook"], VQVAE(VQVAEConfig.tiny(**SMALL))
                           .state_dict()["quantize_b.codebook"])
