"""The one training loop shared by the VQ-VAE and both priors (pure torch).

    trainer = Trainer(model, train_set, val_set, cfg, "ckpts/", step_fn, model_config=model.config)
    metrics = trainer.fit()

`step_fn(model, batch) -> (loss, {name: float|tensor})` runs inside autocast; the loop does the
backward, accumulation, clipping, optimizer and schedule. Under DDP `model` is the
DistributedDataParallel wrapper: call it (`model(x)`) so gradients sync; reach attributes through
`unwrap(model)`. `val_fn(model, batch) -> {name: value}` gets the unwrapped model in eval mode under
no_grad (default: step_fn's loss and metrics). Callbacks `on_log(step, metrics)` and
`on_val(step, metrics)` run on rank 0 only. `fit()` resumes from the newest checkpoint in ckpt_dir
exactly (model, optimizer, schedule, sampler position, every RNG, step) and returns the final
metrics {"step", "train/<name>", "val/<name>"}.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vqvp_core.train import checkpoint as ck
from vqvp_core.train import distributed as dd
from vqvp_core.train.config import TrainConfig, TrainConfigError, TrainingError
from vqvp_core.train.flops import count_flops
from vqvp_core.train.sampler import ResumableSampler, mix_seed

StepFn = Callable[[nn.Module, Any], "tuple[torch.Tensor, dict[str, Any]]"]
ValFn = Callable[[nn.Module, Any], "dict[str, Any]"]
LogFn = Callable[[int, "dict[str, float]"], None]


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the message names the step."""


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DDP) else model


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of cfg.lr for the optimizer step that follows `step` completed steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    if cfg.schedule == "linear":
        return 1.0 - (1.0 - cfg.min_lr_ratio) * progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainConfigError("TrainConfig.device = 'cuda' but CUDA is not available")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters")
    decay = [p for p in params if p.ndim >= 2]  # no weight decay on biases, norms, scalars
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # fused (TrainConfig.fused_optimizer): CPU and CUDA float parameters only, else the per-tensor loop
    fused = cfg.fused_optimizer and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, fused=fused)


class Trainer:
    def __init__(self, model: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig,
                 ckpt_dir: str | Path, step_fn: StepFn, val_fn: ValFn | None = None, *,
                 model_config: dict[str, Any], on_log: LogFn | None = None, on_val: LogFn | None = None,
                 collate_fn: Callable | None = None, ddp_broadcast_buffers: bool = False,
                 extra: dict[str, Any] | None = None) -> None:
        if not isinstance(cfg, TrainConfig):
            raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
        if not isinstance(model_config, dict):
            raise TypeError(f"model_config must be the dict that builds the model, got {type(model_config).__name__}")
        self.cfg, self.ckpt_dir, self.model_config = cfg, Path(ckpt_dir), model_config
        self.train_set, self.val_set, self.collate_fn = train_set, val_set, collate_fn
        self.step_fn, self.val_fn = step_fn, val_fn or self._default_val_fn
        self.on_log, self.on_val, self.extra = on_log, on_val, extra or {}
        self.ddp_broadcast_buffers = ddp_broadcast_buffers
        self.dist, self._owns_pg = dd.init_distributed(resolve_device(cfg.device).type)
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        from vqvp_core.train.precision import amp_dtype, resolve_precision

        # 'bf16' or 'fp32': auto follows the hardware; bf16 without native support is refused
        self.precision = resolve_precision(cfg.precision, self.device)
        self.amp_dtype = amp_dtype(self.precision)
        W = self.dist.world_size
        if cfg.batch_size % (W * cfg.grad_accum):
            raise TrainConfigError(f"TrainConfig.batch_size = {cfg.batch_size} must be a multiple of "
                                   f"world_size * grad_accum = {W} * {cfg.grad_accum}")
        self.micro = cfg.batch_size // (W * cfg.grad_accum)  # per rank, per micro-step
        self.model = model.to(self.device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(cfg, s))
        self.sampler = ResumableSampler(len(train_set), cfg.batch_size, cfg.seed, self.dist.rank, W)
        self.step = 0
        self.metrics: dict[str, dict[str, float]] = {"train": {}, "val": {}}
        # FLOPs of one optimizer step over all ranks (forward + backward + optimizer, as run)
        self.flops_per_step: int | None = None
        self._wrapped: nn.Module = self.model

    # ------------------------------------------------------------------------------ public
    def fit(self) -> dict[str, float]:
        try:
            self._start()
            self._wrapped = self._wrap()
            if self.step < self.cfg.steps:
                self._run()
            return self.final_metrics()
        finally:
            if self._owns_pg:
                dd.cleanup()

    def final_metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"step": self.step, "world_size": self.dist.world_size}
        if self.flops_per_step is not None:
            out.update(train_flops_per_step=self.flops_per_step, train_flops=self.flops_per_step * self.step)
        for split in ("train", "val"):
            out.update({f"{split}/{k}": v for k, v in self.metrics[split].items()})
        return out

    # ---------------------------------------------------------------------- start / resume
    def _start(self) -> None:
        path = ck.find_latest(self.ckpt_dir)
        if path is None:
            ck.seed_everything(mix_seed(self.cfg.seed, self.dist.rank))
            return
        state = ck.load_checkpoint(path)
        ck.check_resume_compatible(state, self.model_config, self.cfg.to_dict(), path)
        try:
            self.sampler.load_state_dict(state["sampler"])
        except ValueError as e:
            raise ck.ResumeMismatchError(f"cannot resume {path}: {e}; to start fresh, use another "
                                         f"ckpt_dir or delete {self.ckpt_dir}") from e
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.metrics = state.get("metrics") or self.metrics
        self.flops_per_step = state.get("flops_per_step")
        rngs = state.get("rng_ranks") or [state["rng"]]
        if len(rngs) == self.dist.world_size:
            ck.restore_rng(rngs[self.dist.rank], self.device)
        else:
            warnings.warn(f"{path} was written by {len(rngs)} rank(s), this run has "
                          f"{self.dist.world_size}: RNG streams are re-seeded, the resume is not bitwise exact")
            ck.seed_everything(mix_seed(self.cfg.seed, self.dist.rank, self.step))

    def _wrap(self) -> nn.Module:
        if not self.dist.distributed:
            return self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(self.model, device_ids=ids, broadcast_buffers=self.ddp_broadcast_buffers)

    # ----------------------------------------------------------------------------- training
    def _loader(self, batch_sampler: Any = None, sampler: Any = None, seed: int = 0) -> DataLoader:
        ds = self.train_set if sampler is not None else self.val_set
        kw = dict(batch_size=self.micro, drop_last=True, sampler=sampler) if sampler is not None else {}
        # An explicit generator: creating the iterator must not draw from the global RNG.
        return DataLoader(ds, batch_sampler=batch_sampler, collate_fn=self.collate_fn,
                          num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(seed), **kw)

    def _micro_batches(self) -> Iterator[Any]:
        s = self.sampler
        while True:
            seed = mix_seed(self.cfg.seed, s.epoch, s.position, self.dist.rank)
            for batch in self._loader(sampler=s, seed=seed):
                s.advance(self.micro * self.dist.world_size)
                yield batch
            s.next_epoch()

    def _run(self) -> None:
        batches = self._micro_batches()
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not dd.is_main())
        window_t, window_steps, rate = 0.0, 0, float("nan")
        try:
            while self.step < self.cfg.steps:
                t0 = time.perf_counter()
                lr = self.scheduler.get_last_lr()[0]
                if self.flops_per_step is None:  # the first step this process runs, counted
                    with count_flops() as counted:
                        loss, metrics = self._train_step(batches)
                    self.flops_per_step = counted.total * self.dist.world_size
                else:
                    loss, metrics = self._train_step(batches)
                self.step += 1
                window_t += time.perf_counter() - t0
                window_steps += 1
                if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                    rate = window_steps * self.cfg.batch_size / max(window_t, 1e-9)
                    self._log(loss, metrics, lr, rate)
                    window_t, window_steps = 0.0, 0
                bar.update(1)
                bar.set_postfix({"loss": f"{loss:.4g}", "lr": f"{lr:.3g}", "samples/s": f"{rate:.1f}"},
                                refresh=False)
                if self.val_set is not None and (self.step % self.cfg.val_every == 0 or self.step == self.cfg.steps):
                    self._validate()
                if self.step % self.cfg.ckpt_every == 0 or self.step == self.cfg.steps:
                    self._save()
        finally:
            bar.close()

    def _train_step(self, batches: Iterator[Any]) -> tuple[float, dict[str, torch.Tensor]]:
        accum, model = self.cfg.grad_accum, self._wrapped
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        sums: dict[str, torch.Tensor] = {}
        for i in range(accum):
            batch = to_device(next(batches), self.device)
            sync = i == accum - 1 or not isinstance(model, DDP)
            with contextlib.nullcontext() if sync else model.no_sync():
                with self._autocast():
                    loss, metrics = self.step_fn(model, batch)
                (loss / accum).backward()
            loss_sum += loss.detach().float()
            for k, v in metrics.items():
                v = torch.as_tensor(v).detach().float().mean().to(self.device)
                sums[k] = sums[k] + v if k in sums else v
        if self.dist.distributed:  # every rank sees the same global loss and stops together
            torch.distributed.all_reduce(loss_sum)
            loss_sum /= self.dist.world_size
        loss_value = loss_sum.item() / accum
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"loss is {loss_value} at step {self.step + 1} (of {self.cfg.steps}); the last "
                f"checkpoint in {self.ckpt_dir} is from before it; lower lr or enable grad_clip")
        out = {k: v / accum for k, v in sums.items()}
        if self.cfg.grad_clip is not None:
            out["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss_value, out

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _log(self, loss: float, metrics: dict[str, torch.Tensor], lr: float, rate: float) -> None:
        logged = dd.all_reduce_mean({**metrics, "samples_per_s": rate})
        logged.update(loss=loss, lr=lr, epoch=self.sampler.progress())
        self.metrics["train"] = logged
        if self.on_log is not None and dd.is_main():
            self.on_log(self.step, dict(logged))

    # --------------------------------------------------------------------------- validation
    def _default_val_fn(self, model: nn.Module, batch: Any) -> dict[str, Any]:
        loss, metrics = self.step_fn(model, batch)
        return {"loss": loss, **metrics}

    def _val_batches(self) -> list[list[int]]:
        """This rank's share of the val subset, in micro-batches (sequential, no shuffling)."""
        n = len(self.val_set)
        if self.cfg.max_val_batches is not None:
            n = min(n, self.cfg.max_val_batches * self.micro * self.dist.world_size)
        idx = list(range(self.dist.rank, n, self.dist.world_size))
        return [idx[i:i + self.micro] for i in range(0, len(idx), self.micro)]

    @torch.no_grad()
    def _validate(self) -> None:
        model, batches = self.model, self._val_batches()
        sums: dict[str, float] = {}
        count = 0
        with ck.preserved_rng(self.device):
            model.eval()
            try:
                for idx, batch in zip(batches, self._loader(batch_sampler=batches)):
                    with self._autocast():
                        metrics = self.val_fn(model, to_device(batch, self.device))
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + dd.to_float(v) * len(idx)
                    count += len(idx)
            finally:
                model.train()
        local = {k: v / count for k, v in sums.items()} if count else {}
        self.metrics["val"] = dd.all_reduce_mean(local, weight=count)
        if self.on_val is not None and dd.is_main():
            self.on_val(self.step, dict(self.metrics["val"]))

    # --------------------------------------------------------------------------- checkpoint
    def _save(self) -> None:
        rngs = dd.all_gather_object(ck.capture_rng(self.device))
        if dd.is_main():
            state = {
                "config": self.model_config, "train_config": self.cfg.to_dict(),
                "state_dict": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "step": self.step,
                "sampler": self.sampler.state_dict(), "rng": rngs[0], "rng_ranks": rngs,
                "metrics": self.metrics, "flops_per_step": self.flops_per_step, "extra": self.extra,
            }
            ck.save_checkpoint(self.ckpt_dir, self.step, state, self.cfg.keep_last)
        dd.barrier()
