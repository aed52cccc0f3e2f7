"""What every training stage (VQ-VAE, top prior, bottom prior) shares around the core Trainer:
resumable checkpoint folders keyed by a fingerprint, MLflow callbacks, the final model file
and its registration in the MLflow model registry.

Checkpoints live in `checkpoints/<stage>/` (git-ignored, not a DVC out, so `dvc repro` never
deletes them). A run killed mid-way and started again with the same params, data and code
resumes from its last checkpoint; when any of those changed, the old checkpoints are set aside
and training starts fresh.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import yaml

from stages.common import BadInputError, StageContext, rank
from vqvp_core.atomic import write_text

log = logging.getLogger("vqvp.stage")
CHECKPOINTS = Path("checkpoints")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def code_files(stage: str, dvc_file: str | Path = "dvc.yaml") -> list[Path]:
    """The code deps of `stage` in dvc.yaml (files, and .py files under dep folders)."""
    try:
        deps = yaml.safe_load(Path(dvc_file).read_text())["stages"][stage].get("deps", [])
    except (OSError, KeyError, TypeError):
        return []
    files: list[Path] = []
    for dep in deps:
        path = Path(dep)
        if path.suffix == ".py" and path.is_file():
            files.append(path)
        elif path.is_dir() and path.parts[0] not in ("data", "models"):
            files.extend(sorted(path.rglob("*.py")))
    return sorted(files)


def tracked_params(stage: str, params: dict[str, Any], fallback: set[str],
                   dvc_file: str | Path = "dvc.yaml") -> dict[str, Any]:
    """The values of the params keys dvc.yaml lists for `stage` (the keys that change its outputs:
    bookkeeping such as aliases, logging, devices and checkpoint cadence is not among them, see
    scripts/dvc_graph.py), as {dotted key: value}; without a dvc.yaml, the `fallback` sections."""
    try:
        keys = yaml.safe_load(Path(dvc_file).read_text())["stages"][stage].get("params") or []
    except (OSError, KeyError, TypeError):
        keys = sorted(fallback)
    out = {}
    for key in keys:
        value: Any = params
        for part in str(key).split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[str(key)] = value
    return out


def data_digest(path: Path, lock_file: str | Path = "dvc.lock") -> str:
    """The md5 DVC recorded for an out folder in dvc.lock (what `dvc repro` just produced);
    without one, a sha256 over the folder's files."""
    try:
        lock = yaml.safe_load(Path(lock_file).read_text()) or {}
        for stage in lock.get("stages", {}).values():
            for out in stage.get("outs", []):
                if Path(out["path"]) == path and out.get("md5"):
                    return out["md5"]
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        pass
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256("".join(f"{p}:{_sha256_file(p)}" for p in files).encode()).hexdigest()[:32]


def log_dataset(ctx: StageContext, path: Path, context: str = "training") -> None:
    """Record an input folder as the run's dataset input, its DVC md5 as the digest."""
    if not path.exists():
        raise BadInputError(f"{path} not found: run the stage that writes it first (see dvc.yaml)")
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local-artifact sources
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(str(path.resolve()))
    # the name is the DVC path (data/clips): lineage finds the run whose DVC out it is
    ctx.mlflow.log_input(MetaDataset(source, name=path.as_posix(), digest=data_digest(path)), context=context)


def _file_stats(path: Path) -> str:
    """(relative path, size, mtime) of every file under ``path``: changes whenever a stage rewrites
    it, even where dvc.lock still holds the md5 of an older version (a stage run directly with
    `vqvp stage`, outside `dvc repro`). Cheap: no file is read."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stats = ((f.relative_to(path) if f != path else f.name, f.stat()) for f in files)
    return ";".join(f"{name}:{st.st_size}:{st.st_mtime_ns}" for name, st in stats)


def fingerprint(stage: str, params: dict[str, Any], inputs: list[Path]) -> str:
    """A digest of what determines a training run: its params, its input data, its code."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for path in inputs:
        h.update(f"{path}:{data_digest(path)}:{_file_stats(path)}".encode())
    for path in code_files(stage):
        h.update(f"{path}:{_sha256_file(path)}".encode())
    return h.hexdigest()[:20]


def checkpoint_root(digest: str) -> Path:
    """checkpoints/ of the workspace; in a DVC experiment's temporary copy, the project's
    checkpoints/exps/<fingerprint>/: it outlives the copy (a killed `dvc exp run --temp` resumes
    when run again) and experiments with other params, run side by side, never share one."""
    from stages.common import home_workspace

    home = home_workspace()
    return CHECKPOINTS if home == Path.cwd().resolve() else home / CHECKPOINTS / "exps" / digest


def prepare_checkpoints(stage: str, digest: str) -> Path:
    """checkpoints/<stage>/, emptied (old contents moved aside) unless it belongs to `digest`."""
    folder = checkpoint_root(digest) / stage
    marker = folder / "FINGERPRINT"
    if folder.exists() and (not marker.exists() or marker.read_text().strip() != digest):
        aside = folder.parent / f".{stage}.previous"
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)
        log.warning("%s: params, data or code changed since the checkpoints in %s were written; "
                    "starting fresh (the old ones are in %s until the next change)", stage, folder, aside)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(marker, digest + "\n")
    return folder


class MlflowLogger:
    """Trainer callbacks: train/* and val/* metrics to the stage's MLflow run."""

    def __init__(self, ctx: StageContext):
        self.ctx, self.t0 = ctx, time.perf_counter()

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self.ctx.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step=step)

    def on_val(self, step: int, metrics: dict[str, float]) -> None:
        self.ctx.log_metrics({f"val/{k}": v for k, v in metrics.items()}, step=step)


def check_precision(stage: str, tcfg) -> str:
    """The precision this stage's training will run in ('bf16' or 'fp32', see
    vqvp_core/train/precision.py). bf16 asked for on a device without native bf16 is refused as
    bad params (ConfigError: exit code 2, which the flow does not retry), naming the key."""
    import os

    from vqvp_core.config import ConfigError
    from vqvp_core.train.loop import resolve_device
    from vqvp_core.train.precision import PrecisionError, resolve_precision

    key = f"{stage.removeprefix('train_')}.train.precision"
    device = resolve_device(tcfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    try:
        return resolve_precision(tcfg.precision, device, key=key)
    except PrecisionError as exc:
        raise ConfigError(str(exc)) from exc


@dataclass
class Recipe:
    """What a training stage trains (set up by the stage, run by :func:`train`)."""
    stage: str                          # train_vqvae, train_top_prior, train_bottom_prior
    build_model: Callable[[], Any]      # a registered vqvp model: it has config and loss(batch)
    train_config: Any                   # the section's vqvp_core.train.config.TrainConfig
    train_set: Any                      # a Dataset of batch items the model's loss takes
    val_set: Any
    inputs: list[Path]                  # input folders: logged as MLflow datasets, in the fingerprint
    params_fallback: set[str]           # the params sections that matter, where there is no dvc.yaml


@dataclass
class Trained:
    model: Any        # the trained model itself (not its Objective or DDP wrapper)
    trainer: Any      # the vqvp_core.train.loop.Trainer that trained it
    final: dict       # its last metrics (step, train/*, val/*, ...)
    fingerprint: str  # what the checkpoints in checkpoints/<stage>/ belong to


def held_out(make_split: Callable[[str], Any], order=("val", "test", "train")) -> tuple[str, Any]:
    """The first non-empty split in ``order``, as (name, data): the one held-out-split rule of
    every training stage (a tiny dataset may have no val or test clips)."""
    for split in order:
        data = make_split(split)
        if len(data):
            return split, data
    raise BadInputError(f"no {'/'.join(order)} data to hold out: run ingest (and extract_latents) first")


def train(ctx: StageContext, recipe: Recipe) -> Trained:
    """Seed, build the model, train its own objective (``model.loss``) with the shared Trainer in
    checkpoints/<stage>/ (resuming when the fingerprint matches)."""
    import torch

    from vqvp_core.train.loop import Trainer
    from vqvp_core.train.objective import Objective, step_fn

    stage = recipe.stage
    tcfg = recipe.train_config
    check_precision(stage, tcfg)  # before any data, checkpoint or model is touched
    for path in recipe.inputs:
        log_dataset(ctx, path)
    params = tracked_params(stage, ctx.params.model_dump(mode="json"), recipe.params_fallback)
    digest = fingerprint(stage, params, recipe.inputs)
    ckpts = prepare_checkpoints(stage, digest) if rank() == 0 else checkpoint_root(digest) / stage
    torch.manual_seed(tcfg.seed)  # the model's initial weights
    model = recipe.build_model()
    logger = MlflowLogger(ctx)
    trainer = Trainer(Objective(model), recipe.train_set, recipe.val_set, tcfg, ckpts, step_fn,
                      model_config=model.config.to_dict(), on_log=logger.on_log, on_val=logger.on_val,
                      extra={"fingerprint": digest})
    final = trainer.fit()
    return Trained(model, trainer, final, digest)


def finish(ctx: StageContext, trained: Trained, out: Path, metrics_file: Path,
           metrics: dict[str, Any], register_as: str, alias: str) -> str | None:
    """Rank 0: the model file (vqvp_core/models/registry.py), the metrics file, MLflow metrics and
    the registered model version. Returns the models:/ URI."""
    from vqvp_core.models.registry import kind_of, save_model
    from vqvp_core.train.precision import cpu_capability

    trainer, model = trained.trainer, trained.model
    # the precision the run used (auto resolved) and the CPU it was decided on
    metrics = {**metrics, "precision": trainer.precision, "cpu_capability": cpu_capability()}
    ctx.mlflow.set_tag("vqvp.precision", metrics["precision"])
    ctx.mlflow.set_tag("vqvp.cpu_capability", metrics["cpu_capability"])
    save_model(out / "model.pt", model, data_source=ctx.params.ingest.source, train_config=trainer.cfg.to_dict(),
               step=int(trained.final["step"]), metrics=metrics, fingerprint=trained.fingerprint)
    write_metrics(metrics_file, metrics)
    ctx.log_metrics({k: v for k, v in metrics.items() if k.startswith(("eval/", "baseline/"))})
    from stages.mlflow_models import log_component

    return log_component(ctx.mlflow, kind_of(model), out / "model.pt", register_as, alias, ctx.params.ingest.size)


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
