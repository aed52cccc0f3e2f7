"""Training throughput of the top and bottom priors against this machine's matmul peak.

    python bench/priors.py [--preset tiny|paper] [--batch N] [--grid N] [--steps 6]
                           [--device auto|cpu|cuda] [--precision auto|fp32|bf16] [--only top|bottom] [--json]

For each prior, in one run: parameters, FLOPs of one training step (forward + backward, counted
by torch.utils.flop_counter.FlopCounterMode), codes/s (predicted codes per second of training),
the achieved FLOP/s, and two ratios:

* of the matmul peak: a large square torch.matmul in the same precision (bench/vqvae.py's
  `matmul_peak`, best of the runs before and after the steps);
* of the step's own GEMM ceiling: every convolution and linear layer of the step is a GEMM of
  some (M, K, N) (M output positions, K = input channels x kernel taps, N output channels); the
  ceiling is the FLOP/s of bare torch.mm calls of exactly those shapes, forward and both
  backward products. It tells what this BLAS can reach on the model's shapes: 64-channel layers
  on a 3x8x8 grid are small GEMMs that no conv implementation runs at the square-matmul peak.

The step is the trainer's: its AdamW (vqvp_core.train.loop.build_optimizer, fused), gradient
clipping at 1.0, the preset's model (channels-last conv weights) and the stage's batch size on
random codes at the preset's grid (tiny: top 3x8x8 predicted, bottom 6 slices of 16x16).
`--batch` / `--grid` shrink the paper preset (batch 512 / 32x32) to what a CPU can time.
`--precision auto` (the default) is the trainer's rule: bf16 where the device runs it natively,
fp32 elsewhere; an explicit bf16 on a device without native bf16 is refused (exit code 2).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vqvae import _autocast, _cpu_snapshot, _others_share, _sync, bench_precision, matmul_peak  # noqa: E402  (bench/vqvae.py)
from vqvp_core.config import preset_dict  # noqa: E402
from vqvp_core.models.bottom_prior import BottomPrior, BottomPriorConfig  # noqa: E402
from vqvp_core.models.pixelcnn import bits_per_code  # noqa: E402
from vqvp_core.models.top_prior import TopPrior, TopPriorConfig  # noqa: E402
from vqvp_core.train.config import TrainConfig  # noqa: E402
from vqvp_core.train.loop import build_optimizer  # noqa: E402

aten = torch.ops.aten


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


class GemmShapes(TorchDispatchMode):
    """Records the GEMMs a forward pass amounts to: ``shapes[(M, K, N)]`` = how many."""

    def __init__(self):
        super().__init__()
        self.shapes: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is aten.convolution.default:
            x, w, transposed, groups = args[0], args[1], args[6], args[8]
            if transposed:  # (Cin, Cout/g, k...): every input position scatters Cout/g x taps values
                m, k, n = x.shape[0] * math.prod(x.shape[2:]), w.shape[0] // groups, w.shape[1] * math.prod(w.shape[2:])
            else:  # (Cout, Cin/g, k...): every output position gathers Cin/g x taps values
                m, k, n = out.shape[0] * math.prod(out.shape[2:]), w.shape[1] * math.prod(w.shape[2:]), w.shape[0] // groups
            self.shapes[(m, k, n)] += groups
        elif func in (aten.mm.default, aten.addmm.default, aten.bmm.default):
            a, b = args[1:3] if func is aten.addmm.default else args[:2]
            self.shapes[(a.shape[-2], a.shape[-1], b.shape[-1])] += a.shape[0] if a.dim() == 3 else 1
        return out


def gemm_ceiling(shapes: Counter, device, precision: str, min_s: float = 0.02) -> float:
    """FLOP/s of bare torch.mm over the recorded shapes, each weighted by its count: forward
    (M,K)@(K,N), grad of the input (M,N)@(N,K), grad of the weight (K,M)@(M,N)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    flops = seconds = 0.0
    for (m, k, n), count in shapes.items():
        a, b, g = (torch.randn(*s, device=device, dtype=dtype) for s in ((m, k), (k, n), (m, n)))

        def three():
            torch.mm(a, b), torch.mm(g, b.t()), torch.mm(a.t(), g)

        three()
        _sync(device)
        best, spent = float("inf"), 0.0
        while spent < min_s or best == float("inf"):
            t0 = time.perf_counter()
            three()
            _sync(device)
            dt = time.perf_counter() - t0
            best, spent = min(best, dt), spent + dt
        flops += 3 * 2 * m * k * n * count
        seconds += best * count
    return flops / seconds


def bench_one(kind, model, data, device, precision, steps: int) -> dict:
    opt = build_optimizer(model, TrainConfig(lr=1e-4))

    def step():
        opt.zero_grad(set_to_none=True)
        with _autocast(device, precision):
            loss, n = loss_fn(kind, model, data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as the trainer (grad_clip 1.0)
        opt.step()
        return n

    with FlopCounterMode(display=False) as counter:
        n_codes = step()
    flops = counter.get_total_flops()
    recorder = GemmShapes()
    with torch.no_grad(), _autocast(device, precision), recorder:
        loss_fn(kind, model, data)
    step()  # warm-up
    times, snap0 = [], _cpu_snapshot()
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    others = _others_share(snap0, _cpu_snapshot())
    t = statistics.median(times)
    return {"params": sum(p.numel() for p in model.parameters()), "flops": flops, "codes": n_codes,
            "step_s": t, "codes_per_s": n_codes / t, "flops_per_s": flops / t, "others_cpu_share": others,
            "gemm_ceiling": gemm_ceiling(recorder.shapes, device, precision), "gemm_shapes": len(recorder.shapes)}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the preset's stage batch)")
    ap.add_argument("--grid", type=int, default=None, help="top grid height = width (default: the preset's size / 8)")
    ap.add_argument("--steps", type=int, default=6, help="timed training steps (median reported)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="auto: bf16 where the device runs it natively, else fp32 (the trainer's rule)")
    ap.add_argument("--only", choices=["top", "bottom"], default=None, help="bench one prior only")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    args.precision = bench_precision(args.precision, device)
    params = preset_dict(args.preset)
    side = args.grid or params["ingest"]["size"] // 8
    peak_before = matmul_peak(device, args.precision)
    print(f"device {device}, {args.precision}, {torch.get_num_threads()} threads, preset {args.preset}, "
          f"top grid {side}x{side}")
    results = []
    for kind, cls, cfg_cls in (("top", TopPrior, TopPriorConfig), ("bottom", BottomPrior, BottomPriorConfig)):
        if args.only not in (None, kind):
            continue
        section = params[f"{kind}_prior"]
        cfg = cfg_cls.from_dict(section["model"])
        batch = args.batch or section["train"]["batch_size"]
        torch.manual_seed(0)
        model = cls(cfg).to(device).train()
        r = bench_one(kind, model, batches(kind, cfg, batch, (side, side), device), device, args.precision, args.steps)
        results.append({"prior": kind, "batch": batch, **r})
    peak = max(peak_before, matmul_peak(device, args.precision))  # a busy moment only lowers it
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s ({args.precision}, 4096^3, best of the runs before and after)")
    for r in results:
        r.update(peak_flops=peak, ratio=r["flops_per_s"] / peak, ceiling_ratio=r["gemm_ceiling"] / peak)
        print(f"{r['prior']:>6} prior: {r['params'] / 1e6:.2f} M params, batch {r['batch']}, "
              f"{r['flops'] / 1e9:.1f} GFLOP/step, {r['step_s']:.3f} s/step, {r['codes_per_s']:,.0f} codes/s, "
              f"{r['flops_per_s'] / 1e9:.1f} GFLOP/s = {r['ratio']:.0%} of the matmul peak")
        print(f"{'':>14}GEMM ceiling of its {r['gemm_shapes']} layer shapes: {r['gemm_ceiling'] / 1e9:.1f} GFLOP/s = "
              f"{r['ceiling_ratio']:.0%} of the peak; the step runs at {r['flops_per_s'] / r['gemm_ceiling']:.0%} of it")
        if device.type == "cpu" and (r["others_cpu_share"] or 0) > 0.1:
            print(f"{'':>14}warning: other processes used {r['others_cpu_share']:.0%} of the CPUs during the "
                  "timed steps; rerun on an idle machine")
    if args.json:
        print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
