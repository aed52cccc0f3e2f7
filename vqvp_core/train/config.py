"""`TrainConfig`: the knobs of the one training loop shared by the VQ-VAE and both priors.

Plain dataclass (the core stays free of the pipeline's pydantic schema); the stages build it from
their params section with `TrainConfig.from_dict`. Every value is checked on construction and a
bad one raises `TrainConfigError` naming the field, the value and what was expected.

`batch_size` is the GLOBAL batch: samples per optimizer step, summed over all DDP ranks and all
gradient-accumulation micro-steps. Each rank loads micro-batches of
`batch_size // (world_size * grad_accum)` samples, so a params file means the same optimization
on one CPU, one GPU or eight GPUs.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


class TrainConfigError(ValueError):
    """A TrainConfig value is out of range or of the wrong type."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, a checkpoint that does not match the run, ...)."""


SCHEDULES = ("cosine", "constant", "linear")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")

# Fields that change the optimization itself: a checkpoint written under other values cannot be
# resumed exactly, so resuming it is refused. The others (logging, checkpoint cadence, device,
# precision, workers, grad_accum) only change how the same optimization is executed.
RESUME_KEYS = (
    "steps", "batch_size", "lr", "weight_decay", "betas", "warmup_steps", "schedule",
    "min_lr_ratio", "grad_clip", "seed",
)


@dataclass
class TrainConfig:
    steps: int = 10_000
    batch_size: int = 16  # global: over ranks and accumulation micro-steps (see module doc)
    lr: float = 3e-4
    weight_decay: float = 0.0  # applied to matrices/kernels only, never to biases and norms
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1  # the decay ends at lr * min_lr_ratio, not 0: the last steps still learn
    grad_clip: float | None = 1.0  # max global grad norm; None disables (VQ-VAE/PixelCNN spike early)
    grad_accum: int = 1
    # auto: bf16 autocast where the device runs bf16 natively (CUDA; a CPU with AMX / AVX512-BF16),
    # fp32 elsewhere; bf16 on a device without native bf16 is refused (vqvp_core/train/precision.py)
    precision: str = "auto"
    device: str = "auto"  # auto: CUDA when available (under DDP: cuda:LOCAL_RANK)
    ckpt_every: int = 1000
    val_every: int = 1000
    log_every: int = 50
    seed: int = 0
    num_workers: int = 0  # 0 loads in the main process: simplest and exactly resumable
    keep_last: int = 3  # checkpoints kept in ckpt_dir; the older ones are deleted
    max_val_batches: int | None = None  # global val batches per validation; None: the whole set
    # AdamW as one fused kernel over all parameters (3x faster than the per-tensor loop on a
    # 127M-parameter prior on CPU); the same update up to float rounding
    fused_optimizer: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)
        _check_int(self, "steps", 1)
        _check_int(self, "batch_size", 1)
        _check_float(self, "lr", 0.0, strict=True)
        _check_float(self, "weight_decay", 0.0)
        if (not isinstance(self.betas, tuple) or len(self.betas) != 2
                or not all(_is_real(b) and 0.0 <= b < 1.0 for b in self.betas)):
            _fail("betas", self.betas, "two numbers in [0, 1)")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        _check_int(self, "warmup_steps", 0)
        _check_choice(self, "schedule", SCHEDULES)
        _check_float(self, "min_lr_ratio", 0.0)
        if self.min_lr_ratio > 1.0:
            _fail("min_lr_ratio", self.min_lr_ratio, "a number in [0, 1]")
        if self.grad_clip is not None:
            _check_float(self, "grad_clip", 0.0, strict=True, extra=" or None to disable")
        _check_int(self, "grad_accum", 1)
        _check_choice(self, "precision", PRECISIONS)
        _check_choice(self, "device", DEVICES)
        for name in ("ckpt_every", "val_every", "log_every", "keep_last"):
            _check_int(self, name, 1)
        _check_int(self, "seed", 0)
        _check_int(self, "num_workers", 0)
        if not isinstance(self.fused_optimizer, bool):
            _fail("fused_optimizer", self.fused_optimizer, "true or false")
        if self.max_val_batches is not None:
            _check_int(self, "max_val_batches", 1, extra=" or None for the whole set")
        if self.batch_size % self.grad_accum:
            _fail("batch_size", self.batch_size,
                  f"a multiple of grad_accum ({self.grad_accum}): the global batch is split into "
                  "grad_accum equal micro-batches")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TrainConfigError(
                f"unknown TrainConfig key(s) {unknown}; expected some of {sorted(names)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fail(name: str, value: Any, expected: str) -> None:
    raise TrainConfigError(f"TrainConfig.{name} = {value!r} is invalid: expected {expected}")


def _check_int(cfg: TrainConfig, name: str, lo: int, extra: str = "") -> None:
    v = getattr(cfg, name)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        _fail(name, v, f"an integer >= {lo}{extra}")


def _check_float(cfg: TrainConfig, name: str, lo: float, strict: bool = False, extra: str = "") -> None:
    v = getattr(cfg, name)
    if not _is_real(v) or v < lo or (strict and v == lo):
        _fail(name, v, f"a finite number {'>' if strict else '>='} {lo:g}{extra}")
    setattr(cfg, name, float(v))


def _check_choice(cfg: TrainConfig, name: str, choices: tuple[str, ...]) -> None:
    v = getattr(cfg, name)
    if v not in choices:
        _fail(name, v, f"one of {list(choices)}")


__all__ = ["TrainConfig", "TrainConfigError", "TrainingError", "RESUME_KEYS", "SCHEDULES",
           "PRECISIONS", "DEVICES"]
