"""Parts 2 and 3 of bench/gpu.py: one cached full-size prediction, and cached == naive sampling on
the device (see bench/gpu.py's docstring for what each measures)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any

import torch

from gpu_common import _sync, log, timed  # bench/gpu_common.py
from gpu_common import Preset
from vqvp_core.models.bottom_prior import BottomPrior
from vqvp_core.models.top_prior import TopPrior
from vqvp_core.models.vqvae import VQVAE, VQVAEConfig, clips_to_input
from vqvp_core.sampling import cached as cached_mod
from vqvp_core.sampling.cached import exact_float32, sample_bottom_cached, sample_top_cached
from vqvp_core.sampling.predict import Predictor

# ----------------------------------------------------------------------------- 2. prediction


@contextmanager
def timed_samplers(device: torch.device, times: dict[str, float]):
    """Time the cached top / bottom samplers inside Predictor.sample_codes (which looks them up
    in vqvp_core.sampling.cached at each call), restoring the module afterwards."""
    orig = {"top": cached_mod.sample_top_cached, "bottom": cached_mod.sample_bottom_cached}

    def wrap(name, fn):
        def inner(*a, **kw):
            _sync(device)
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            _sync(device)
            times[name] = times.get(name, 0.0) + time.perf_counter() - t0
            return out
        return inner

    cached_mod.sample_top_cached = wrap("top", orig["top"])
    cached_mod.sample_bottom_cached = wrap("bottom", orig["bottom"])
    try:
        yield times
    finally:
        cached_mod.sample_top_cached, cached_mod.sample_bottom_cached = orig["top"], orig["bottom"]


def n_predicted(vc: VQVAEConfig, size: int) -> tuple[int, int]:
    (tt, ht, wt), (tb, hb, wb) = vc.latent_shapes(vc.frames, size, size)
    return (tt - 1) * ht * wt, (tb - 2) * hb * wb


@torch.no_grad()
def warm_full_size(predictor: Predictor, clips) -> None:
    """Run the convolutions of a full-size prediction once (the VQ-VAE's encoder and decoder, the
    priors' conditioning stacks), so that cuDNN's autotuning for their shapes is not timed."""
    vq, top_m, bot_m = predictor.vqvae, predictor.top_prior, predictor.bottom_prior
    ct, cb = vq.encode_cond(clips_to_input(torch.as_tensor(clips), predictor.device))
    top = torch.cat([ct] * (1 + top_m.config.pred_steps), 1)             # (1, 4, Ht, Wt)
    top_m.condition(ct, cb)
    feats = bot_m.top_features(top)
    bottom = torch.cat([cb] * (feats.shape[2] // 2), 1)                   # (1, 8, Hb, Wb)
    bot_m.condition(bot_m.past_window(bottom, 2), torch.full((1,), 2, device=cb.device), top_feats=feats)
    vq.decode_codes(top, bottom)
    _sync(predictor.device)


def bench_predict(p: Preset, priors: tuple[TopPrior, BottomPrior], device: torch.device, args,
                  available_s: float) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    with device:
        vq = VQVAE(p.vqvae)
    predictor = Predictor(vq.to(device).eval(), *priors)
    size = p.vqvae.size
    n_top, n_bottom = n_predicted(p.vqvae, size)
    g = torch.Generator().manual_seed(args.seed)

    def clip(s):
        return torch.randint(0, 256, (1, 4, s, s, 3), dtype=torch.uint8, generator=g).numpy()

    warm = min(32 if device.type == "cuda" else 16, size)
    wt, wb = n_predicted(p.vqvae, warm)
    for _ in range(2 if device.type == "cuda" else 1):  # the second run is the estimate's rate
        t0 = time.perf_counter()
        predictor.predict(clip(warm), seed=args.seed, cached=True, batch_size=1)
        t_warm = time.perf_counter() - t0
    est = t_warm / (wt + wb) * (n_top + n_bottom) * 1.2
    log(f"  warm-up: a {warm}x{warm} prediction ({wt + wb} codes) in {t_warm:.2f} s; the {size}x{size} "
        f"one estimated at {est:.0f} s")
    x = clip(size)
    warm_full_size(predictor, x)
    res: dict[str, Any] = {"size": size, "batch": 1, "cached": True, "codes_top": n_top, "codes_bottom": n_bottom,
                           "warmup_size": warm, "warmup_s": t_warm, "estimate_s": est}
    if est > available_s:
        res["skipped"] = f"estimated {est:.0f} s > {available_s:.0f} s left for it"
        log(f"  SKIPPED the {size}x{size} prediction: {res['skipped']}")
        return res
    with timed_samplers(device, {}) as parts:
        _sync(device)
        t0 = time.perf_counter()
        frames = predictor.predict(x, seed=args.seed, cached=True, batch_size=1)
        seconds = time.perf_counter() - t0
    n = n_top + n_bottom
    res.update(seconds=seconds, codes=n, codes_per_s=n / seconds, top_s=parts.get("top"),
               bottom_s=parts.get("bottom"), frames_shape=list(frames.shape))
    rest = seconds - (parts.get("top", 0.0) + parts.get("bottom", 0.0))
    log(f"  {size}x{size}, batch 1, cached: {seconds:.2f} s for {n:,} codes ({n_top:,} top + {n_bottom:,} "
        f"bottom) = {n / seconds:,.0f} codes/s; top sampling {parts.get('top', 0):.2f} s "
        f"({n_top / parts['top']:,.0f} codes/s), bottom {parts.get('bottom', 0):.2f} s "
        f"({n_bottom / parts['bottom']:,.0f} codes/s), VQ-VAE encode + decode {rest:.2f} s; "
        f"frames {tuple(frames.shape)}")
    return res


# ----------------------------------------------------------------------------- 3. cached == naive


@contextmanager
def cpu_threads(device: torch.device, n: int):
    """On CPU, n intra-op threads (the naive samplers' thousands of tiny passes run fastest on
    one); nothing on CUDA."""
    old = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _first_diff(a: torch.Tensor, b: torch.Tensor) -> list[int] | None:
    d = (a != b).nonzero()
    return d[0].tolist() if len(d) else None


def check_inputs(top_m: TopPrior, bot_m: BottomPrior, side: int, seed: int, device: torch.device):
    tc = top_m.config
    g = torch.Generator().manual_seed(seed)
    ct = torch.randint(0, tc.n_codes, (1, 1, side, side), generator=g).to(device)
    cb = torch.randint(0, tc.n_codes_bottom, (1, 2, 2 * side, 2 * side), generator=g).to(device)
    return ct, cb


@torch.no_grad()
def estimate_naive(top_m: TopPrior, bot_m: BottomPrior, side: int, slices: int, device: torch.device,
                   seed: int) -> float:
    """Seconds the naive samplers would take at this grid: one full forward of each, timed after
    one untimed, times the number of codes; the cached samplers are counted at a tenth of that."""
    ct, cb = check_inputs(top_m, bot_m, side, seed, device)
    cond = top_m.condition(ct, cb)
    codes = torch.zeros(1, top_m.config.pred_steps, side, side, dtype=torch.long, device=device)
    tt = slices // 2 + 1                                    # top steps: 2 * tt - 2 slices generated
    top = torch.cat([ct, codes[:, :tt - 1]], 1)
    bottom = torch.zeros(1, 2 * tt, 2 * side, 2 * side, dtype=torch.long, device=device)
    bottom[:, :2] = cb
    bc = bot_m.condition(bot_m.past_window(bottom, 2), torch.full((1,), 2, device=device), top=top)
    sl = torch.zeros(1, 2 * side, 2 * side, dtype=torch.long, device=device)
    out = 0.0
    for fn, n in ((lambda: top_m.logits_from_cond(codes, cond), top_m.config.pred_steps * side * side),
                  (lambda: bot_m.logits_from_cond(sl, bc), slices * 4 * side * side)):
        fn()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out += (time.perf_counter() - t0) * n
    return out * 1.1


def bench_check(priors: tuple[TopPrior, BottomPrior], device: torch.device, args, side: int, slices: int,
                available_s: float) -> dict[str, Any]:
    top_m, bot_m = priors
    tp = top_m.config.pred_steps
    with exact_float32(), cpu_threads(device, 1):
        ladder = [(side, slices), (side, 2), (max(2, side // 2), 2), (2, 2)]
        chosen, est = None, None
        for s, n in dict.fromkeys(ladder):          # in order, without repeats
            est = estimate_naive(top_m, bot_m, s, n, device, args.seed)
            if est <= available_s:
                chosen = (s, n)
                break
            log(f"  grid top {tp}x{s}x{s} + {n} bottom slices of {2 * s}x{2 * s}: ~{est:.0f} s estimated, "
                f"{available_s:.0f} s left: smaller")
        res: dict[str, Any] = {"dtype": "float32", "tf32": False, "temperature": 1.0, "top_k": None, "seed": args.seed}
        if chosen is None:
            res.update(skipped=f"even the smallest grid is estimated at {est:.0f} s > {available_s:.0f} s left")
            log(f"  SKIPPED: {res['skipped']}")
            return res
        s, n = chosen
        reduced = (s, n) != (side, slices)
        res.update(top_grid=[tp, s, s], bottom_slices=n, bottom_slice_hw=[2 * s, 2 * s],
                   reduced_grid=True, shrunk_for_time=reduced, estimate_s=est)
        log(f"  the preset's prior widths on a reduced grid (naive sampling is a full forward per code): top "
            f"{tp}x{s}x{s} ({tp * s * s} codes), bottom {n} slices of {2 * s}x{2 * s} ({n * 4 * s * s} codes)"
            + ("; shrunk to fit the time left" if reduced else "") + f"; float32, TF32 off, seed {args.seed}")
        ct, cb = check_inputs(top_m, bot_m, s, args.seed, device)
        gen = lambda: torch.Generator(device).manual_seed(args.seed)  # noqa: E731
        timings = {}
        naive_top, timings["naive_top_s"] = timed(lambda: top_m.sample(ct, cb, 1.0, None, gen()), device)
        cached_top, timings["cached_top_s"] = timed(lambda: sample_top_cached(top_m, ct, cb, 1.0, None, gen()), device)
        # the bottom prior given the top grid the top prior drew, as a prediction chains them
        top = torch.cat([ct, naive_top], 1)[:, :n // 2 + 1]
        naive_bot, timings["naive_bottom_s"] = timed(lambda: bot_m.sample(top, cb, 1.0, None, gen()), device)
        cached_bot, timings["cached_bottom_s"] = timed(
            lambda: sample_bottom_cached(bot_m, top, cb, 1.0, None, gen()), device)
    top_ok, bot_ok = torch.equal(naive_top, cached_top), torch.equal(naive_bot, cached_bot)
    res.update(timings, top_equal=top_ok, bottom_equal=bot_ok, passed=top_ok and bot_ok,
               top_differing=int((naive_top != cached_top).sum()), top_first_diff=_first_diff(naive_top, cached_top),
               bottom_differing=int((naive_bot != cached_bot).sum()),
               bottom_first_diff=_first_diff(naive_bot, cached_bot))
    for name, ok, key in (("top", top_ok, "top"), ("bottom", bot_ok, "bottom")):
        nt, ct_ = timings[f"naive_{key}_s"], timings[f"cached_{key}_s"]
        codes = tp * s * s if key == "top" else n * 4 * s * s
        log(f"  {name:>6}: {'identical' if ok else 'DIFFERENT'} ({codes} codes; naive {nt:.2f} s, cached {ct_:.2f} s"
            + ("" if ok else f"; {res[key + '_differing']} codes differ, first at {res[key + '_first_diff']}") + ")")
    log(f"  cached == naive: {'PASS' if res['passed'] else 'FAIL'}")
    if not res["passed"]:
        log("  (float32 rounding moves a draw across a boundary about once per 1e6 codes: a FAIL here "
            "on a single differing code late in the walk may be that; one at the first codes is a bug)")
    return res


