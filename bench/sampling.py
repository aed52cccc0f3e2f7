"""Naive vs cached sampling of the priors (vqvp_core.sampling.cached).

    python bench/sampling.py [--device auto|cpu|cuda] [--batch 1] [--grids 8,16,32]
                             [--naive-budget 6] [--seed 0]

Prints, in one run, measured in that run:

1. Top prior at its ``tiny`` config (random weights: speed does not depend on them) on top grids
   of 3 x S x S for each S in --grids: codes/s of the naive sampler (the whole network once per
   code, ``TopPrior.sample``'s loop) and of the cached sampler, and the speedup. A naive pass
   costs the same at every position, so where the full naive run would take longer than
   --naive-budget seconds its rate is measured on the first codes only (the same loop, stopped
   early) and the line says so. On CPU the naive rate is the better of one intra-op thread and
   the default thread count (tiny ops often run faster on one thread on a busy machine); the
   cached sampler uses its default (one thread on CPU). On the first grid, where the naive run was
   a full one, the cached codes are checked to equal the naive ones.
2. One full ``tiny`` prediction with the cached samplers: the top prior at TopPriorConfig.tiny()
   (3 x 8 x 8 = 192 codes) and the bottom prior at BottomPriorConfig.tiny() (6 slices of 16 x 16
   = 1,536 codes), with the time of each and the total.

The machine may be shared: the load average is printed before and after.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vqvp_core.models.bottom_prior import BottomPrior, BottomPriorConfig  # noqa: E402
from vqvp_core.models.pixelcnn import sample_from_logits  # noqa: E402
from vqvp_core.models.top_prior import TopPrior, TopPriorConfig  # noqa: E402
from vqvp_core.sampling import sample_bottom_cached, sample_top_cached  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


@torch.no_grad()
def naive_top(model: TopPrior, cond_top, cond_bottom, max_codes: int | None, generator) -> int:
    """``TopPrior.sample``'s loop (condition once, the whole network once per code), stopped after
    ``max_codes`` codes (None: all). Returns the number of codes drawn."""
    b, _, ht, wt = cond_top.shape
    cond = model.condition(cond_top, cond_bottom)
    codes = torch.zeros(b, model.config.pred_steps, ht, wt, dtype=torch.long, device=cond_top.device)
    n = 0
    for t in range(model.config.pred_steps):
        for y in range(ht):
            for x in range(wt):
                if max_codes is not None and n >= max_codes:
                    return n
                logits = model.logits_from_cond(codes, cond)[:, :, t, y, x]
                codes[:, t, y, x] = sample_from_logits(logits, 1.0, None, generator)
                n += 1
    return n


def time_naive(model, ct, cb, device, budget: float, seed: int) -> tuple[float, int, int]:
    """Naive codes/s (per batch row: positions/s) for the grid of ``ct``; (rate, codes timed,
    codes in the grid). One pass first to estimate the cost, then as many codes as fit the
    budget (all of them if they do)."""
    total = model.config.pred_steps * ct.shape[2] * ct.shape[3]
    g = torch.Generator(device).manual_seed(seed)
    _sync(device)
    t0 = time.perf_counter()
    naive_top(model, ct, cb, 2, g)
    _sync(device)
    per = (time.perf_counter() - t0) / 2
    n = total if per * total <= 1.5 * budget else max(4, int(budget / per))
    _sync(device)
    t0 = time.perf_counter()
    done = naive_top(model, ct, cb, n, torch.Generator(device).manual_seed(seed))
    _sync(device)
    return done / (time.perf_counter() - t0), done, total


def time_cached_top(model, ct, cb, device, seed: int) -> tuple[float, torch.Tensor]:
    total = model.config.pred_steps * ct.shape[2] * ct.shape[3]
    _sync(device)
    t0 = time.perf_counter()
    codes = sample_top_cached(model, ct, cb, 1.0, None, torch.Generator(device).manual_seed(seed))
    _sync(device)
    return total / (time.perf_counter() - t0), codes


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--grids", default="8,16,32", help="top grid sides S (grids 3 x S x S)")
    ap.add_argument("--naive-budget", type=float, default=6.0,
                    help="seconds per naive measurement; beyond it the rate comes from a subset")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    default_threads = torch.get_num_threads()
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {os.cpu_count()} cores, torch default {default_threads} intra-op threads"
    print(f"torch {torch.__version__} | device {device} ({dev_name}) | batch {args.batch}")
    print(f"load average before: {_load()}")
    b = args.batch

    # ---- 1. top prior, naive vs cached over grid sizes
    cfg = TopPriorConfig.tiny()
    torch.manual_seed(args.seed)
    model = TopPrior(cfg).to(device).eval()
    print(f"\n== top prior, TopPriorConfig.tiny() (channels {cfg.channels}, {cfg.n_layers} blocks, "
          f"{cfg.n_layers // cfg.attn_every} attention layers), temperature 1.0; codes/s count "
          f"positions (x batch {b} for codes)")
    thread_options = [1, default_threads] if device.type == "cpu" and default_threads > 1 else [None]
    sides = [int(s) for s in args.grids.split(",") if s]
    for i, s in enumerate(sides):
        gen = torch.Generator().manual_seed(args.seed + s)
        ct = torch.randint(0, cfg.n_codes, (b, 1, s, s), generator=gen).to(device)
        cb = torch.randint(0, cfg.n_codes_bottom, (b, 2, 2 * s, 2 * s), generator=gen).to(device)
        # warm-up (allocator, kernels)
        naive_top(model, ct, cb, 1, torch.Generator(device).manual_seed(0))
        sample_top_cached(model, ct[:, :, :2, :2], cb[:, :, :4, :4])
        runs, notes = [], []
        for th in thread_options:
            if th is not None:
                torch.set_num_threads(th)
            rate, done, total = time_naive(model, ct, cb, device, args.naive_budget, args.seed)
            if th is not None:
                notes.append(f"{rate:.1f}/s @{th} thr")
            runs.append((rate, done))
        torch.set_num_threads(default_threads)
        best, done = max(runs)
        how = "full run" if done == total else f"rate of the first {done} of {total} codes"
        c_rate, codes = time_cached_top(model, ct, cb, device, args.seed)
        print(f"top grid 3x{s}x{s} ({total} codes): naive {best:8.1f} codes/s ({how}"
              f"{'; ' + ', '.join(notes) if notes else ''}) | cached {c_rate:8.1f} codes/s | "
              f"speedup {c_rate / best:6.1f}x")
        if i == 0 and done == total:      # check only where the naive run was affordable
            if device.type == "cpu":
                torch.set_num_threads(1)
            ref = model.sample(ct, cb, 1.0, None, torch.Generator(device).manual_seed(args.seed))
            torch.set_num_threads(default_threads)
            same = torch.equal(ref, codes)
            print(f"  cached codes identical to TopPrior.sample's (same seed): {same}"
                  + ("" if same or device.type == "cpu" else
                     " (GPU: cuDNN TF32 makes the naive logits inexact; see exact_float32())"))

    # ---- 2. one tiny prediction, cached samplers
    tcfg, bcfg = TopPriorConfig.tiny(), BottomPriorConfig.tiny()
    torch.manual_seed(args.seed)
    top_m = TopPrior(tcfg).to(device).eval()
    bot_m = BottomPrior(bcfg).to(device).eval()
    ht = wt = 8
    gen = torch.Generator().manual_seed(args.seed)
    ct = torch.randint(0, tcfg.n_codes, (b, 1, ht, wt), generator=gen).to(device)
    cb = torch.randint(0, tcfg.n_codes_bottom, (b, 2, 2 * ht, 2 * wt), generator=gen).to(device)
    g = torch.Generator(device).manual_seed(args.seed)
    sample_top_cached(top_m, ct[:, :, :2, :2], cb[:, :, :4, :4])           # warm-up
    _sync(device)
    t0 = time.perf_counter()
    top_pred = sample_top_cached(top_m, ct, cb, 1.0, None, g)
    _sync(device)
    t_top = time.perf_counter() - t0
    top = torch.cat([ct, top_pred], 1)                                    # (B, 4, 8, 8)
    t0 = time.perf_counter()
    bottom = sample_bottom_cached(bot_m, top, cb, 1.0, None, g)
    _sync(device)
    t_bot = time.perf_counter() - t0
    n_top, n_bot = top_pred[0].numel(), bottom[0, bcfg.n_given:].numel()
    print(f"\n== one tiny prediction (batch {b}), cached samplers at TopPriorConfig.tiny() / "
          f"BottomPriorConfig.tiny()")
    print(f"top    3x8x8      = {n_top:5d} codes: {t_top:6.2f} s ({n_top / t_top:7.1f} codes/s)")
    print(f"bottom 6 x 16x16  = {n_bot:5d} codes: {t_bot:6.2f} s ({n_bot / t_bot:7.1f} codes/s)")
    print(f"total               {n_top + n_bot:5d} codes: {t_top + t_bot:6.2f} s")
    print(f"\nload average after: {_load()}")


if __name__ == "__main__":
    main()
