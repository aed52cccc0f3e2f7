"""The checks for a lent GPU, in one run that ends within 8 minutes (issue 12, section 6).

    bash bench/gpu.sh [--device auto|cuda|cuda:N|cpu] [--preset auto|paper|tiny] [--steps 5]
                      [--warmup 2] [--max-batch N | --max-batch vqvae=16,top=512,bottom=32]
                      [--budget-s 420] [--json PATH] [--parts train,predict,check]
                      [--models vqvae,top,bottom] [--seed 0]

Three parts, in this order, each under a time guard:

1. train: a few training steps of the VQ-VAE and of both priors at the preset's model configs
   (paper: VQVAEConfig.paper() on 16x256x256 clips, TopPriorConfig.paper() on top grids 4x32x32,
   BottomPriorConfig.paper() on bottom grids 8x64x64; random clips and codes, as bench/priors.py),
   each step the trainer's: its AdamW (vqvp_core.train.loop.build_optimizer with the preset's
   TrainConfig), bf16 autocast (on CUDA), gradient clipping at the TrainConfig's grad_clip (1.0).
   On CUDA the batch is as large as fits: doubled from 1 until a step runs out of memory (or the
   cap, --max-batch, default the preset's per-GPU batch: 16 / 512 / 32, or the part's time, is
   reached); the last batch that fit is kept. Then one step under FlopCounterMode (forward +
   backward + optimizer step; element-wise work counts zero), --warmup steps, --steps timed steps
   (median). Printed per model: batch, step time, samples/s (and codes/s for the priors), model
   FLOPs per step, MFU = achieved FLOP/s / the bf16 dense peak, measured (a bf16 8192^3
   torch.matmul, best of 5) and, for known devices, the datasheet's (H100 SXM / H200 989, H100
   PCIe 756, A100 312 TFLOP/s), and the peak memory (torch.cuda.max_memory_allocated, reset per
   model after the batch search).
2. predict: one cached prediction through vqvp_core.sampling.predict.Predictor with freshly
   initialised models of the preset (paper: 256x256, 3,072 top + 24,576 bottom codes), batch 1,
   cached=True, after a warm-up prediction of a 32x32 clip (CPU: 16x16) and one pass of the
   full-size convolutions; seconds and codes/s (top and bottom
   sampling timed apart too). Skipped if the warm-up's rate says it would not fit the time left.
3. check: the cached samplers (sample_top_cached / sample_bottom_cached) against the naive ones
   (TopPrior.sample / BottomPrior.sample): the same codes for the same seed, on the device, in
   float32 with TF32 off (exact_float32), with the preset's prior widths on a reduced grid (naive
   sampling costs a full forward per code): top 3x8x8 and 6 bottom slices of 16x16 on CUDA (top
   3x4x4 and 2 slices of 8x8 on CPU); shrunk further if the time left is short (the output says
   so). PASS / FAIL; exit status 1 on FAIL.

Time: the run's clock starts before torch is imported. Each training model gets an equal share of
the time left after holding back 30% of --budget-s for predict and 10% for check (when they run);
a part that cannot start in its share is skipped with a message, and the later parts still run.
A watchdog ends the run at --budget-s + --grace-s (default 420 + 45 s = 7 min 45 s), writing the
JSON with what was done (exit status 3).

CPU smoke run (tests/bench/test_gpu_bench.py): `--device cpu --preset tiny --steps 1`: tiny
configs (VQ-VAE 16x64x64, top grid 4x8x8, bottom 8x16x16), fp32 on a CPU without native bf16
(--precision auto is the trainer's rule, vqvp_core/train/precision.py: bf16 autocast where the
device runs it natively; an explicit bf16 elsewhere is refused, exit status 2), a fixed batch
min(2, cap) (no doubling), defaults 1 timed step and no warm-up steps (the counted step warms
up), the matmul peak of 1024^3 in the training precision.

Output: human-readable lines; --json PATH writes every figure. Exit status: 0; 1 if the check
failed or a part raised (its traceback is printed, the other parts still run); 3 on the watchdog.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gpu_common import T0  # noqa: E402,F401  first: its clock counts the imports below (torch too)
from gpu_common import (MODELS, Clock, Preset, _sync, autocast, datasheet_bf16_peak,  # noqa: E402,F401
                        elapsed, fmt_bytes, fmt_flops, free_memory, is_oom, load_preset, log, parse_caps, pct,
                        resolve_amp)
from gpu_sampling import bench_check, bench_predict, n_predicted  # noqa: E402,F401  (parts 2 and 3)

import time  # noqa: E402

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from priors import batches as prior_batches  # noqa: E402  (bench/priors.py)
from priors import loss_fn as prior_loss  # noqa: E402
from vqvae import matmul_peak  # noqa: E402  (bench/vqvae.py)
from vqvp_core.models.bottom_prior import BottomPrior, BottomPriorConfig  # noqa: E402,F401  (tests read the configs here)
from vqvp_core.models.top_prior import TopPrior, TopPriorConfig  # noqa: E402,F401
from vqvp_core.models.vqvae import VQVAE, VQVAEConfig  # noqa: E402,F401
from vqvp_core.train.config import TrainConfig  # noqa: E402
from vqvp_core.train.loop import build_optimizer  # noqa: E402
from vqvp_core.train.precision import PrecisionError, cpu_capability  # noqa: E402

PARTS = ("train", "predict", "check")
# Time held back for the later parts while the models train, as fractions of --budget-s.
RESERVE = {"predict": 0.30, "check": 0.10}
CPU_BATCH = 2  # CPU: a fixed batch, min(CPU_BATCH, cap)


# ----------------------------------------------------------------------------- 1. training


@dataclass
class TrainSpec:
    key: str
    label: str
    build: Callable[[], torch.nn.Module]
    data: Callable[[int], Any]                            # batch -> inputs on the device
    loss: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, int]]  # -> (loss, codes predicted)
    shapes: str


def train_specs(p: Preset, device: torch.device, seed: int) -> dict[str, TrainSpec]:
    vc, side = p.vqvae, p.top_side

    def vq_data(b):
        g = torch.Generator(device).manual_seed(seed)
        return torch.rand(b, vc.in_channels, vc.frames, vc.size, vc.size, device=device, generator=g) * 2 - 1

    def vq_loss(model, x):
        return model(x).loss, 0

    def prior_data(kind, cfg):
        return lambda b: prior_batches(kind, cfg, b, (side, side), device)

    (tt, ht, wt), (tb, hb, wb) = vc.latent_shapes()
    return {
        "vqvae": TrainSpec("vqvae", "VQ-VAE", lambda: VQVAE(vc), vq_data, vq_loss,
                           f"clips {vc.frames}x{vc.size}x{vc.size}"),
        "top": TrainSpec("top", "top prior", lambda: TopPrior(p.top), prior_data("top", p.top),
                         lambda m, d: prior_loss("top", m, d),
                         f"top grid {tt}x{ht}x{wt} ({p.top.pred_steps} steps predicted)"),
        "bottom": TrainSpec("bottom", "bottom prior", lambda: BottomPrior(p.bottom),
                            prior_data("bottom", p.bottom), lambda m, d: prior_loss("bottom", m, d),
                            f"bottom grid {tb}x{hb}x{wb} ({tb - p.bottom.n_given} slices predicted)"),
    }


def find_batch(try_batch: Callable[[int], float | tuple[float, float]], cap: int, deadline: float,
               final_steps: int,
               on_oom: Callable[[], None], say: Callable[[str], None] = log,
               now: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """The largest batch that fits, by doubling from 1 up to ``cap``.

    ``try_batch(b)`` runs steps at batch b and returns the seconds of one steady step, or (the
    first step's, a steady step's), or raises an out-of-memory error (``is_oom``), after which
    ``on_oom()`` frees what it can. Doubling also stops when the next trial plus ``final_steps``
    steps at that batch would end after ``deadline``: estimated as the first step's overhead at a
    new shape (allocation, cuDNN autotuning; assumed the same at every batch) plus steady steps
    proportional to the batch.
    -> {"batch": last that fit or None, "step_s": its step time, "limited_by": "cap" | "memory" |
    "time", "trials": [{"batch", "fit", "step_s"}]}."""
    trials: list[dict[str, Any]] = []
    best, best_t, limited_by, b = None, None, "cap", 1
    while True:
        oom = False
        try:
            t = try_batch(b)
            t_first, t = t if isinstance(t, tuple) else (t, t)
        except Exception as e:  # noqa: BLE001 - only memory errors are expected here
            if not is_oom(e):
                raise
            oom = True
        if oom:  # handled out of the except block: the traceback no longer pins the tensors
            on_oom()
            trials.append({"batch": b, "fit": False, "step_s": None})
            say(f"    batch {b:>4}: out of memory")
            limited_by = "memory"
            break
        trials.append({"batch": b, "fit": True, "step_s": t})
        best, best_t = b, t
        say(f"    batch {b:>4}: fits, {t:.3f} s/step")
        if b >= cap:
            break
        nb = min(2 * b, cap)
        # the trial at nb (2 steps, the first with the new-shape overhead), then the measurement
        est = max(0.0, t_first - t) + t * nb / b * (2 + final_steps)
        if now() + est > deadline:
            say(f"    not trying batch {nb}: ~{est:.0f} s estimated, {max(0.0, deadline - now()):.0f} s "
                f"left in this model's share")
            limited_by = "time"
            break
        b = nb
    return {"batch": best, "step_s": best_t, "limited_by": limited_by, "trials": trials}


def bench_train(spec: TrainSpec, tcfg: TrainConfig, cap: int, device: torch.device, amp: str,
                args, deadline: float, peaks: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    with device:
        model = spec.build()
    model = model.to(device).train()
    opt = build_optimizer(model, tcfg)
    params = [q for q in model.parameters() if q.requires_grad]
    clip = tcfg.grad_clip
    state: dict[str, Any] = {}

    def step(data) -> int:
        opt.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss, codes = spec.loss(model, data)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        return codes

    def timed(data) -> float:
        _sync(device)
        t0 = time.perf_counter()
        step(data)
        _sync(device)
        return time.perf_counter() - t0

    res: dict[str, Any] = {"model": spec.key, "params": sum(q.numel() for q in params), "shapes": spec.shapes,
                           "precision": amp, "batch_cap": cap, "grad_clip": clip, "lr": tcfg.lr,
                           "fused_optimizer": tcfg.fused_optimizer}
    log(f"{spec.label}: {res['params'] / 1e6:.1f} M params, {spec.shapes}, {amp}, "
        f"AdamW{' (fused)' if tcfg.fused_optimizer else ''} lr {tcfg.lr:g}, grad clip {clip}", stamp=True)
    final_steps = 1 + args.warmup + args.steps
    if device.type == "cuda":
        def try_batch(b: int) -> tuple[float, float]:
            data = spec.data(b)
            first = timed(data)      # the first step at a new shape: allocation, cuDNN autotuning
            t = timed(data)
            state["data"] = data     # only once both steps ran: the data of the last batch that fit
            return first, t

        def on_oom() -> None:
            opt.zero_grad(set_to_none=True)
            free_memory(device)

        log(f"    finding the batch: doubling from 1 up to {cap}")
        found = find_batch(try_batch, cap, deadline, final_steps, on_oom)
        res.update(batch_search=found["trials"], batch_limited_by=found["limited_by"])
        if found["batch"] is None:
            raise RuntimeError(f"{spec.label}: batch 1 does not fit in memory")
        batch, data = found["batch"], state.pop("data")
    else:
        batch = min(CPU_BATCH, cap)
        data = spec.data(batch)
        res.update(batch_search=[], batch_limited_by="fixed (CPU)")

    while True:  # the measurement; should it run out of memory after the search, halve the batch
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            with FlopCounterMode(display=False) as counter:
                codes = step(data)
            flops = counter.get_total_flops()
            t_count = time.perf_counter() - t0
            for _ in range(args.warmup):
                step(data)
            times: list[float] = []
            for i in range(args.steps):
                times.append(timed(data))
                if time.monotonic() > deadline + 5 and i + 1 < args.steps:
                    log(f"    stopping after {i + 1} of {args.steps} timed steps: this model's time is up")
                    break
            break
        except Exception as e:  # noqa: BLE001
            if device.type != "cuda" or not is_oom(e) or batch == 1:
                raise
        data = None
        opt.zero_grad(set_to_none=True)
        free_memory(device)
        batch //= 2
        log(f"    out of memory while measuring: batch {batch}")
        res["batch_limited_by"] = "memory"
        data = spec.data(batch)

    med = statistics.median(times)
    achieved = flops / med
    res.update(
        batch=batch, steps_timed=len(times), warmup_steps=args.warmup, step_times_s=times, counted_step_s=t_count,
        step_s=med, step_s_best=min(times), samples_per_s=batch / med,
        codes_per_step=codes or None, codes_per_s=(codes / med) if codes else None,
        flops_per_step=flops, achieved_flops=achieved,
        mfu_measured=achieved / peaks["measured"] if peaks.get("measured") else None,
        mfu_datasheet=achieved / peaks["datasheet"] if peaks.get("datasheet") else None,
        peak_mem_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    )
    lim = res["batch_limited_by"]
    rate = f"{res['samples_per_s']:.2f} samples/s" + (f", {res['codes_per_s']:,.0f} codes/s" if codes else "")
    log(f"    batch {batch} ({'the cap' if lim == 'cap' else lim}; cap {cap}) | step {med:.3f} s "
        f"(median of {len(times)}, best {min(times):.3f}) | {rate}")
    log(f"    {fmt_flops(flops)}/step | {fmt_flops(achieved, True)} | MFU {pct(res['mfu_measured'])} of the "
        f"measured peak" + (f", {pct(res['mfu_datasheet'])} of the datasheet's" if res["mfu_datasheet"] else "")
        + f" | peak memory {fmt_bytes(res['peak_mem_bytes'])} | counted step {t_count:.2f} s")
    del model, opt, data, state
    return res


# ----------------------------------------------------------------------------- main


def write_json(path: str | None, result: dict) -> None:
    if not path:
        return
    for _ in range(3):  # the watchdog may write while the main thread adds a figure
        try:
            text = json.dumps(result, indent=2, default=str)
            break
        except RuntimeError:
            time.sleep(0.05)
    else:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def start_watchdog(limit_s: float, result: dict, state: dict, path: str | None) -> None:
    def fire():
        log(f"\nWATCHDOG: {limit_s:.0f} s since the start, in part {state.get('part')!r}: aborting the run "
            f"(what was done is in the output above{' and in ' + path if path else ''})")
        result["aborted"] = f"watchdog at {limit_s:.0f} s in part {state.get('part')!r}"
        result["wall_s"] = elapsed()
        try:
            write_json(path, result)
        finally:
            os._exit(3)

    t = threading.Timer(max(0.0, T0 + limit_s - time.monotonic()), fire)
    t.daemon = True
    t.start()


def header(device: torch.device, preset: Preset, amp: str, args) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "preset": preset.name,
                            "precision": amp, "budget_s": args.budget_s, "cpu_capability":
                            cpu_capability(), "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        info.update(device_name=torch.cuda.get_device_name(device), capability=list(torch.cuda.get_device_capability(device)),
                    memory_bytes=prop.total_memory, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    sm_count=prop.multi_processor_count)
        log(f"device {device}: {info['device_name']} (sm_{''.join(map(str, info['capability']))}, "
            f"{prop.multi_processor_count} SMs, {fmt_bytes(prop.total_memory)}) | torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}, cuDNN {info['cudnn']}")
    else:
        info.update(device_name=f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads, "
                    f"{info['cpu_capability']})")
        log(f"device cpu: {info['device_name']} | torch {torch.__version__}")
    log(f"preset {preset.name} | {amp} | budget {args.budget_s:.0f} s (watchdog at {args.budget_s + args.grace_s:.0f} s) "
        f"| TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, cudnn.benchmark {torch.backends.cudnn.benchmark}")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    ap.add_argument("--preset", default="auto", choices=["auto", "paper", "tiny"],
                    help="model configs and shapes (auto: paper on CUDA, tiny on CPU)")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                    help="training autocast (auto, the trainer's rule: bf16 where the device runs it "
                    "natively, else fp32)")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps (default 5 on CUDA, 1 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps before them (default 2 on CUDA, 0 on CPU)")
    ap.add_argument("--max-batch", default=None,
                    help="batch cap: N for every model, or e.g. vqvae=16,top=512,bottom=32 (default: the "
                    "preset's per-GPU batches; CPU: at most 2)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="time for the whole run, seconds")
    ap.add_argument("--grace-s", type=float, default=45.0, help="the watchdog aborts at budget + grace")
    ap.add_argument("--parts", default=",".join(PARTS), help="some of train,predict,check")
    ap.add_argument("--models", default=",".join(MODELS), help="models to train: some of vqvae,top,bottom")
    ap.add_argument("--check-side", type=int, default=None,
                    help="check: top grid 3xSxS, bottom slices 2Sx2S (default 8 on CUDA, 4 on CPU)")
    ap.add_argument("--check-slices", type=int, default=None, choices=[2, 4, 6],
                    help="check: bottom slices generated (default 6 on CUDA, 2 on CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, metavar="PATH", help="write every figure to PATH")
    args = ap.parse_args(argv)

    parts = [x for x in args.parts.split(",") if x]
    models = [x for x in args.models.split(",") if x]
    for name, got, allowed in (("--parts", parts, PARTS), ("--models", models, MODELS)):
        bad = sorted(set(got) - set(allowed))
        if bad:
            ap.error(f"{name}: unknown {bad}; expected some of {list(allowed)}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available (torch " + torch.__version__ + ")")
    cuda = device.type == "cuda"
    if cuda and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if cuda:
        torch.cuda.set_device(device)
    args.steps = args.steps if args.steps is not None else (5 if cuda else 1)
    args.warmup = args.warmup if args.warmup is not None else (2 if cuda else 0)
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")

    preset = load_preset(args.preset if args.preset != "auto" else ("paper" if cuda else "tiny"))
    try:
        amp = resolve_amp(args.precision, device)
    except PrecisionError as e:
        ap.exit(2, f"{ap.prog}: {e}\n")
    caps = parse_caps(args.max_batch, preset.caps)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    clock = Clock(args.budget_s)
    result: dict[str, Any] = {"argv": sys.argv[1:] if argv is None else list(argv), "parts": parts, "models": models,
                              "steps": args.steps, "warmup": args.warmup, "caps": caps, "train": {},
                              "skipped": [], "errors": []}
    state = {"part": "setup"}
    start_watchdog(args.budget_s + args.grace_s, result, state, args.json)
    result.update(header(device, preset, amp, args))
    failed = False

    def skip(what: str, why: str) -> None:
        result["skipped"].append({"what": what, "why": why})
        log(f"  SKIPPED {what}: {why}")

    def run_part(what: str, fn: Callable[[], Any]) -> Any:
        nonlocal failed
        state["part"] = what
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - report, go on with the other parts
            failed = True
            result["errors"].append({"what": what, "error": f"{type(e).__name__}: {e}"})
            log(f"  ERROR in {what}: {type(e).__name__}: {e}")
            traceback.print_exc()
            sys.stderr.flush()
            return None
        finally:
            free_memory(device)

    # ---- peak
    state["part"] = "peak"
    n_mm = 8192 if cuda else 1024
    mm_prec = "bf16" if amp == "bf16" else "fp32"
    measured = matmul_peak(device, mm_prec, n=n_mm, trials=5 if cuda else 3)
    sheet, sheet_name = datasheet_bf16_peak(result["device_name"]) if cuda else (None, None)
    if mm_prec != "bf16":
        sheet, sheet_name = None, None
    peaks = {"measured": measured, "measured_how": f"{mm_prec} torch.matmul {n_mm}^3, best of {5 if cuda else 3}",
             "datasheet": sheet, "datasheet_device": sheet_name}
    result["peak"] = peaks
    log(f"[{elapsed():5.1f} s] peak: measured {fmt_flops(measured, True)} ({peaks['measured_how']}); datasheet "
        + (f"{fmt_flops(sheet, True)} ({sheet_name}, bf16 dense)" if sheet else
           ("not in the table for this device" if cuda and mm_prec == "bf16" else "n/a")))
    later = [q for q in ("predict", "check") if q in parts]

    # ---- 1. train
    if "train" in parts:
        log(f"\n[{elapsed():5.1f} s] == 1. training steps ({args.warmup} warm-up + {args.steps} timed after one FLOP-counted step; "
            f"{'batch by doubling until out of memory' if cuda else f'fixed batch min({CPU_BATCH}, cap)'})")
        specs = train_specs(preset, device, args.seed)
        min_share = 10.0 if cuda else 1.0
        for i, m in enumerate(models):
            reserve = sum(RESERVE[q] for q in later) * args.budget_s
            share = (clock.left() - reserve) / (len(models) - i)
            if share < min_share:
                skip(f"training {specs[m].label}", f"{max(0.0, share):.0f} s share of the time left "
                     f"({clock.left():.0f} s, {reserve:.0f} s held for {'+'.join(later) or 'nothing'})")
                continue
            deadline = time.monotonic() + share
            r = run_part(f"train {m}", lambda: bench_train(specs[m], preset.train[m], caps[m], device, amp,
                                                           args, deadline, peaks))
            if r is not None:
                result["train"][m] = r

    # ---- 2 + 3 share freshly initialised priors of the preset's configs
    priors = None
    if later:
        def build_priors():
            torch.manual_seed(args.seed)
            with device:
                tm, bm = TopPrior(preset.top), BottomPrior(preset.bottom)
            return tm.to(device).eval(), bm.to(device).eval()
        priors = run_part("build priors", build_priors)

    if "predict" in parts and priors is not None:
        log(f"\n[{elapsed():5.1f} s] == 2. one cached prediction through Predictor (fresh {preset.name} models)")
        reserve = RESERVE["check"] * args.budget_s if "check" in parts else 0.0
        avail = clock.left() - reserve
        if avail < (20.0 if cuda else 2.0):
            skip("the prediction", f"{max(0.0, clock.left()):.0f} s left, {reserve:.0f} s held for check")
        else:
            r = run_part("predict", lambda: bench_predict(preset, priors, device, args, avail - 5.0))
            if r is not None:
                result["predict"] = r
                if "skipped" in r:
                    result["skipped"].append({"what": "the prediction", "why": r["skipped"]})

    if "check" in parts and priors is not None:
        log(f"\n[{elapsed():5.1f} s] == 3. cached == naive sampling, same seed, same codes")
        side = args.check_side or (8 if cuda else 4)
        slices = args.check_slices or (6 if cuda else 2)
        avail = clock.left() - 5.0
        if avail < (5.0 if cuda else 1.0):
            skip("the cached == naive check", f"{max(0.0, clock.left()):.0f} s left")
        else:
            r = run_part("check", lambda: bench_check(priors, device, args, side, slices, avail))
            if r is not None:
                result["check"] = r
                if "skipped" in r:
                    result["skipped"].append({"what": "the cached == naive check", "why": r["skipped"]})
                elif not r["passed"]:
                    failed = True

    # ---- summary
    state["part"] = "summary"
    result["wall_s"] = elapsed()
    log(f"\n== summary ({result['device_name']}, preset {preset.name}, {amp}; {result['wall_s']:.0f} s of "
        f"{args.budget_s:.0f})")
    for m, r in result["train"].items():
        log(f"  {m:>6}: batch {r['batch']:>4} | {r['step_s']:.3f} s/step | {r['samples_per_s']:8.2f} samples/s | "
            f"{fmt_flops(r['flops_per_step'])}/step | MFU {pct(r['mfu_measured'])} measured"
            + (f", {pct(r['mfu_datasheet'])} datasheet" if r["mfu_datasheet"] else "")
            + f" | peak mem {fmt_bytes(r['peak_mem_bytes'])}")
    pr = result.get("predict")
    if pr and "seconds" in pr:
        log(f"  predict: {pr['size']}x{pr['size']} in {pr['seconds']:.2f} s, {pr['codes_per_s']:,.0f} codes/s")
    ch = result.get("check")
    if ch and "passed" in ch:
        log(f"  cached == naive: {'PASS' if ch['passed'] else 'FAIL'}")
    for s in result["skipped"]:
        log(f"  skipped {s['what']}: {s['why']}")
    for e in result["errors"]:
        log(f"  error in {e['what']}: {e['error']}")
    result["ok"] = not failed
    write_json(args.json, result)
    if args.json:
        log(f"  figures written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
