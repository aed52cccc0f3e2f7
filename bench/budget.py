"""The training budget of a preset, in FLOPs: each training stage's FLOPs per step times its steps.

    python bench/budget.py [--preset tiny] [-S section.key=value ...] [--time-steps N] [--json PATH]

Each stage's model is built from the preset's params exactly as its stage builds it and runs one
optimizer step through the shared Trainer (vqvp_core.train.loop: forward, backward, clipping,
AdamW, in the precision the trainer resolves) on random data of the stage's shapes, under
FlopCounterMode (vqvp_core.train.flops: matmul and conv work, forward and backward; element-wise
ops, the optimizer's update included, count zero). The stages record the same count of their
real run in metrics/*.json (`train_flops_per_step`, `train_flops`).

With --time-steps N it also times N more steps per stage and prints the seconds the preset's
steps would take here, and the FLOP/s against this machine's fp32 matmul peak.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vqvp_core.config import apply_overrides, preset_dict, validate  # noqa: E402
from vqvp_core.train.config import TrainConfig  # noqa: E402
from vqvp_core.train.flops import format_flops  # noqa: E402
from vqvp_core.train.loop import Trainer  # noqa: E402


def _latent_items(n: int, cfg, vq) -> list[dict]:
    (tt, ht, wt), (tb, hb, wb) = vq.latent_shapes()
    g = torch.Generator().manual_seed(0)
    k = vq.n_codes
    return [{"top": torch.randint(k, (tt, ht, wt), generator=g), "bottom": torch.randint(k, (tb, hb, wb), generator=g),
             "cond_top": torch.randint(k, (1, ht, wt), generator=g),
             "cond_bottom": torch.randint(k, (2, hb, wb), generator=g)} for _ in range(n)]


def stages(params):
    """(stage, build_model, step_fn, dataset, train dict) for each training stage, as the stages build them."""
    from vqvp_core.models.bottom_prior import BottomPrior
    from vqvp_core.models.top_prior import TopPrior
    from vqvp_core.models.vqvae import VQVAE
    from vqvp_core.train.objective import Objective, step_fn

    vq = params.vqvae.model
    n = max(params.vqvae.train.batch_size, params.top_prior.train.batch_size, params.bottom_prior.train.batch_size)
    clips = [torch.randint(0, 256, (vq.frames, vq.size, vq.size, 3), dtype=torch.uint8) for _ in range(n)]
    latents = _latent_items(n, None, vq)
    top, bottom = params.top_prior.model, params.bottom_prior.model
    return [
        ("train_vqvae", lambda: Objective(VQVAE(vq)), step_fn, clips, params.vqvae.train),
        ("train_top_prior", lambda: Objective(TopPrior(top)), step_fn, latents, params.top_prior.train),
        ("train_bottom_prior", lambda: Objective(BottomPrior(bottom)), step_fn, latents, params.bottom_prior.train),
    ]


def measure(build, step_fn, data, train: TrainConfig, time_steps: int) -> dict:
    """FLOPs of one step (and with time_steps, the median seconds of that many more)."""
    cfg = train.replace(steps=1 + time_steps, log_every=1, ckpt_every=10**9, val_every=10**9)
    torch.manual_seed(cfg.seed)
    seconds: list[float] = []
    last = [time.perf_counter()]

    def on_log(step: int, _metrics: dict) -> None:
        now = time.perf_counter()
        if step > 1:
            seconds.append(now - last[0])
        last[0] = now

    with tempfile.TemporaryDirectory() as ckpt:
        trainer = Trainer(build(), data, None, cfg, ckpt, step_fn, model_config={}, on_log=on_log)
        trainer.fit()
    return {"flops_per_step": trainer.flops_per_step, "precision": getattr(trainer, "precision", str(trainer.amp_dtype)),
            "seconds_per_step": statistics.median(seconds) if seconds else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="section.key=value")
    ap.add_argument("--time-steps", type=int, default=0, help="also time this many steps per stage")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    params = validate(apply_overrides(preset_dict(a.preset), a.set))
    rows = []
    for name, build, step_fn, data, train in stages(params):
        r = measure(build, step_fn, data, train, a.time_steps)
        r.update(stage=name, steps=train.steps, batch_size=train.batch_size,
                 flops=r["flops_per_step"] * train.steps)
        rows.append(r)
    total = sum(r["flops"] for r in rows)
    peak = None
    if a.time_steps:
        from vqvae import matmul_peak  # bench/vqvae.py

        peak = matmul_peak(torch.device("cpu"), "fp32")
    print(f"training budget of preset {a.preset!r} ({torch.backends.cpu.get_cpu_capability()} CPU, "
          f"{torch.get_num_threads()} threads" + (f", fp32 matmul peak {peak / 1e9:.0f} GFLOP/s)" if peak else ")"))
    for r in rows:
        line = (f"  {r['stage']:<19} {format_flops(r['flops_per_step']):>12}/step x {r['steps']:>5} steps "
                f"(batch {r['batch_size']:>3}) = {format_flops(r['flops']):>12}  {r['flops'] / total:6.1%}")
        if r["seconds_per_step"]:
            rate = r["flops_per_step"] / r["seconds_per_step"]
            r["est_seconds"] = r["seconds_per_step"] * r["steps"]
            line += f"  {r['seconds_per_step']:.3f} s/step, ~{r['est_seconds']:.0f} s, {rate / peak:.0%} of peak"
        print(line)
    print(f"  total               {total / 1e12:.2f} TFLOP" +
          (f"  ~{sum(r['est_seconds'] for r in rows):.0f} s here" if a.time_steps else ""))
    if a.json:
        a.json.write_text(json.dumps({"preset": a.preset, "total_flops": total, "stages": rows,
                                      "matmul_peak": peak}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
