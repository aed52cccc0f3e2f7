"""Training throughput of the top and bottom priors against this machine's matmul peak.

    python bench/priors.py [--preset tiny|paper] [--steps 6] [--device auto|cpu|cuda] [--precision fp32|bf16]

For each prior, in one run: parameters, FLOPs of one training step (forward + backward, counted
by torch.utils.flop_counter.FlopCounterMode), codes/s (predicted codes per second of training),
the achieved FLOP/s, the matmul peak measured by bench/vqvae.py's `matmul_peak` in the same
precision, and their ratio. Batches are random codes at the preset's grid sizes (tiny: top
3x8x8 predicted, bottom 6 slices of 16x16), with the stages' batch sizes.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vqvae import _autocast, _sync, matmul_peak  # noqa: E402  (bench/vqvae.py)
from vqvp_core.config import preset_dict  # noqa: E402
from vqvp_core.models.bottom_prior import BottomPrior, BottomPriorConfig  # noqa: E402
from vqvp_core.models.pixelcnn import bits_per_code  # noqa: E402
from vqvp_core.models.top_prior import TopPrior, TopPriorConfig  # noqa: E402


def batches(kind: str, cfg, batch: int, grid: tuple[int, int], device):
    k, (ht, wt) = cfg.n_codes, grid
    g = torch.Generator().manual_seed(0)

    def codes(*shape):
        return torch.randint(0, k, shape, generator=g).to(device)

    if kind == "top":
        return codes(batch, cfg.pred_steps, ht, wt), codes(batch, 1, ht, wt), codes(batch, 2, 2 * ht, 2 * wt)
    return codes(batch, 8, 2 * ht, 2 * wt), codes(batch, 4, ht, wt)


def loss_fn(kind: str, model, data):
    if kind == "top":
        codes, ct, cb = data
        return bits_per_code(model(codes, ct, cb), codes), codes.numel()
    bottom, top = data
    logits = model.forward_all_slices(bottom, top)
    target = bottom[:, model.config.n_given:]
    return bits_per_code(logits, target), target.numel()


def bench_one(kind, model, data, device, precision, steps: int) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with _autocast(device, precision):
            loss, n = loss_fn(kind, model, data)
        loss.backward()
        opt.step()
        return n

    with FlopCounterMode(display=False) as counter:
        n_codes = step()
    flops = counter.get_total_flops()
    step()  # warm-up
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"params": sum(p.numel() for p in model.parameters()), "flops": flops, "codes": n_codes,
            "step_s": t, "codes_per_s": n_codes / t, "flops_per_s": flops / t}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    params = preset_dict(args.preset)
    size = params["ingest"]["size"]
    grid = (size // 8, size // 8)
    peak = matmul_peak(device, args.precision)
    print(f"device {device}, {args.precision}, {torch.get_num_threads()} threads; matmul peak {peak / 1e9:.1f} GFLOP/s")
    for kind, cls, cfg_cls in (("top", TopPrior, TopPriorConfig), ("bottom", BottomPrior, BottomPriorConfig)):
        section = params[f"{kind}_prior"]
        cfg = cfg_cls.from_dict(section["model"])
        batch = section["train"]["batch_size"]
        model = cls(cfg).to(device).train()
        r = bench_one(kind, model, batches(kind, cfg, batch, grid, device), device, args.precision, args.steps)
        print(f"{kind:>6} prior: {r['params'] / 1e6:.2f} M params, batch {batch}, {r['flops'] / 1e9:.1f} GFLOP/step, "
              f"{r['step_s']:.3f} s/step, {r['codes_per_s']:,.0f} codes/s, {r['flops_per_s'] / 1e9:.1f} GFLOP/s = "
              f"{r['flops_per_s'] / peak:.0%} of the matmul peak")


if __name__ == "__main__":
    main()
