"""`TrainConfig`: the knobs of the one training loop shared by the VQ-VAE and both priors.

A `vqvp_core.configbase.CoreConfig` (pydantic); the stages get it as their params section's
`train`. Every value is checked on construction and a bad one raises `TrainConfigError` naming
the field, the value and what was expected.

`batch_size` is the GLOBAL batch: samples per optimizer step, summed over all DDP ranks and all
gradient-accumulation micro-steps. Each rank loads micro-batches of
`batch_size // (world_size * grad_accum)` samples, so a params file means the same optimization
on one CPU, one GPU or eight GPUs.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from vqvp_core.configbase import Bool, ConfigValueError, CoreConfig, Float, NonNegativeInt, PositiveInt


class TrainConfigError(ConfigValueError):
    """A TrainConfig value is out of range or of the wrong type."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, a checkpoint that does not match the run, ...)."""


# Fields that change the optimization itself: a checkpoint written under other values cannot be
# resumed exactly, so resuming it is refused. The others (logging, checkpoint cadence, device,
# precision, workers, grad_accum) only change how the same optimization is executed.
RESUME_KEYS = (
    "steps", "batch_size", "lr", "weight_decay", "betas", "warmup_steps", "schedule",
    "min_lr_ratio", "grad_clip", "seed",
)


class TrainConfig(CoreConfig):
    error = TrainConfigError

    steps: PositiveInt = 10_000
    batch_size: PositiveInt = 16  # global: over ranks and accumulation micro-steps (see module doc)
    lr: Annotated[Float, Field(gt=0)] = 3e-4
    weight_decay: Annotated[Float, Field(ge=0)] = 0.0  # applied to matrices/kernels only, never to biases and norms
    betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    warmup_steps: NonNegativeInt = 0
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    # the decay ends at lr * min_lr_ratio, not 0: the last steps still learn
    min_lr_ratio: Annotated[Float, Field(ge=0, le=1)] = 0.1
    # max global grad norm; None disables (VQ-VAE/PixelCNN spike early)
    grad_clip: Annotated[Float, Field(gt=0)] | None = 1.0
    grad_accum: PositiveInt = 1
    # auto: bf16 autocast where the device runs bf16 natively (CUDA; a CPU with AMX / AVX512-BF16),
    # fp32 elsewhere; bf16 on a device without native bf16 is refused (vqvp_core/train/precision.py)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available (under DDP: cuda:LOCAL_RANK)
    ckpt_every: PositiveInt = 1000
    val_every: PositiveInt = 1000
    log_every: PositiveInt = 50
    seed: NonNegativeInt = 0
    num_workers: NonNegativeInt = 0  # 0 loads in the main process: simplest and exactly resumable
    keep_last: PositiveInt = 3  # checkpoints kept in ckpt_dir; the older ones are deleted
    max_val_batches: PositiveInt | None = None  # global val batches per validation; None: the whole set
    # AdamW as one fused kernel over all parameters (3x faster than the per-tensor loop on a
    # 127M-parameter prior on CPU); the same update up to float rounding
    fused_optimizer: Bool = True

    @model_validator(mode="after")
    def _whole_micro_batches(self) -> "TrainConfig":
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size = {self.batch_size}: expected a multiple of grad_accum "
                             f"({self.grad_accum}): the global batch is split into grad_accum equal micro-batches")
        return self



__all__ = ["TrainConfig", "TrainConfigError", "TrainingError", "RESUME_KEYS"]
