"""Training throughput of the VQ-VAE against this machine's matmul peak.

    python bench/vqvae.py [--preset tiny|paper] [--batch 8] [--steps 10] [--device auto|cpu|cuda]
                          [--precision auto|fp32|bf16] [--memory-format channels_last|contiguous]

Prints, in one run: parameters, FLOPs per training step (forward + backward, counted by
torch.utils.flop_counter.FlopCounterMode), clips/s, the achieved FLOP/s, the peak FLOP/s of a
large torch.matmul in the same precision with all threads, and their ratio. Steps are AdamW
training steps on random clips of the preset's size (tiny: 16x64x64).

The machine may be shared: the load average is printed before and after, the peak is the best
of several trials, and the step time is the median (the best is printed too).

--precision auto (the default) is the trainer's rule (vqvp_core/train/precision.py): bf16 where
the device runs it natively (CUDA; a CPU with AMX / AVX512-BF16), fp32 elsewhere. An explicit
bf16 on a device without native bf16 is refused (exit code 2): emulated bf16 would time nothing
the trainer would ever run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vqvp_core.models.vqvae import VQVAE, VQVAEConfig  # noqa: E402
from vqvp_core.train.precision import PrecisionError, cpu_capability, resolve_precision  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_precision(requested: str, device: torch.device) -> str:
    """'bf16' or 'fp32' for --precision, as the trainer resolves it; a refused bf16 prints why
    and exits 2."""
    try:
        return resolve_precision(requested, device, key="--precision")
    except PrecisionError as exc:
        print(f"{Path(sys.argv[0]).name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def matmul_peak(device: torch.device, precision: str, n: int = 4096, trials: int = 5) -> float:
    """Best FLOP/s of an n x n x n torch.matmul (fp32 or bf16), over `trials` timed runs."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    reps = 3 if device.type == "cpu" else 20
    for _ in range(2):
        torch.matmul(a, b, out=c)
    _sync(device)
    best = float("inf")
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=c)
        _sync(device)
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n ** 3 / best


def _cpu_snapshot() -> tuple[float, float, float] | None:
    """(machine busy CPU-seconds, this process's CPU-seconds, wall time), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            vals = [float(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    busy = (sum(vals[:8]) - vals[3] - vals[4]) / hz  # all but idle and iowait
    t = os.times()
    return busy, t.user + t.system, time.perf_counter()


def _others_share(a, b) -> float | None:
    """Fraction of the machine's CPUs used by other processes between two snapshots."""
    if a is None or b is None:
        return None
    wall = b[2] - a[2]
    return max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / (wall * (os.cpu_count() or 1)))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["tiny", "paper"], default="tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 where the device runs it natively, else fp32 (the trainer's rule)")
    p.add_argument("--memory-format", choices=["channels_last", "contiguous"], default=None,
                   help="conv weights in torch.channels_last_3d or not (default: the config's "
                   "channels_last, on in both presets)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--frames", type=int, default=None, help="clip length (default: the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a VQVAEConfig field, e.g. --set channels=96")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    a = p.parse_args(argv)

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(a.device)
    a.precision = bench_precision(a.precision, device)
    overrides = {}
    for kv in a.set:
        k, _, v = kv.partition("=")
        overrides[k] = type(getattr(VQVAEConfig(), k))(v) if v not in ("True", "False") else v == "True"
    if a.memory_format is not None:
        overrides["channels_last"] = a.memory_format == "channels_last"
    cfg = VQVAEConfig.preset(a.preset, **overrides)
    a.memory_format = "channels_last" if cfg.channels_last else "contiguous"
    frames = a.frames or cfg.frames
    torch.manual_seed(0)
    model = VQVAE(cfg).to(device).train()
    x = torch.rand(a.batch, cfg.in_channels, frames, cfg.size, cfg.size, device=device) * 2 - 1
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    n_params = sum(q.numel() for q in model.parameters())

    load_before = os.getloadavg()
    peak_before = matmul_peak(device, a.precision)

    def step() -> float:
        with _autocast(device, a.precision):
            out = model(x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        return out.loss

    step()  # the first step initialises the codebooks from data: not counted, not timed
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        with _autocast(device, a.precision):
            out = model(x)
        out.loss.backward()
    opt.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()

    for _ in range(a.warmup):
        step()
    _sync(device)
    times = []
    snap0 = _cpu_snapshot()
    for _ in range(a.steps):
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    others = _others_share(snap0, _cpu_snapshot())
    med, best_t = statistics.median(times), min(times)

    peak_after = matmul_peak(device, a.precision)
    peak = max(peak_before, peak_after)  # the machine's capability; a busy moment only lowers it
    load_after = os.getloadavg()
    res = {
        "preset": a.preset, "device": str(device), "precision": a.precision, "cpu_capability": cpu_capability(),
        "memory_format": a.memory_format, "threads": torch.get_num_threads(),
        "batch": a.batch, "clip": [frames, cfg.size, cfg.size], "params": n_params,
        "flops_per_step": flops, "step_s_median": med, "step_s_best": best_t,
        "clips_per_s": a.batch / med, "achieved_flops": flops / med,
        "achieved_flops_best": flops / best_t, "peak_flops": peak,
        "peak_flops_before": peak_before, "peak_flops_after": peak_after,
        "ratio": flops / med / peak, "ratio_best": flops / best_t / peak,
        "loadavg_before": load_before[0], "loadavg_after": load_after[0],
        "others_cpu_share": others,
        "config": cfg.to_dict(),
    }
    print(f"VQ-VAE {a.preset}: {n_params / 1e6:.2f} M params, batch {a.batch} of "
          f"{frames}x{cfg.size}x{cfg.size}, {device}, {a.precision}, {a.memory_format}, "
          f"{torch.get_num_threads()} threads")
    print(f"  FLOPs per training step (fwd+bwd): {flops / 1e9:.1f} GFLOP "
          f"({flops / a.batch / 1e9:.2f} per clip)")
    print(f"  step time: median {med * 1e3:.0f} ms, best {best_t * 1e3:.0f} ms over {a.steps} steps")
    print(f"  clips/s:   {a.batch / med:.2f} (best {a.batch / best_t:.2f})")
    print(f"  achieved:  {flops / med / 1e9:.1f} GFLOP/s (best {flops / best_t / 1e9:.1f})")
    print(f"  peak:      {peak / 1e9:.1f} GFLOP/s ({a.precision} matmul 4096^3, best of 5 before "
          f"({peak_before / 1e9:.0f}) and 5 after ({peak_after / 1e9:.0f}) the steps)")
    print(f"  ratio:     {100 * res['ratio']:.1f}% of peak (best step {100 * res['ratio_best']:.1f}%)")
    share = "n/a" if others is None else f"{100 * others:.0f}%"
    print(f"  load: other processes used {share} of the {os.cpu_count()} CPUs during the timed "
          f"steps; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    if device.type == "cpu" and others is not None and others > 0.1:
        print("  warning: the CPU was shared during the timed steps; step times, clips/s and the "
              "ratio are pessimistic (rerun on an idle machine)")
    if a.json:
        print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
