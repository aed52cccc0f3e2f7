"""Training checkpoints: atomic writes, latest lookup, pruning, RNG capture, resume checks.

A checkpoint is `ckpt_dir/step_00001000.pt` holding one dict:

    config        the model config dict that builds the model (nothing rebuilds from defaults)
    train_config  TrainConfig.to_dict()
    state_dict    the unwrapped model's state_dict (no DDP `module.` prefix)
    optimizer     optimizer.state_dict()
    scheduler     LR scheduler state_dict()
    step          optimizer steps completed
    sampler       ResumableSampler.state_dict(): {epoch, position, seed, n, ...}
    rng           {torch, numpy, python[, cuda]} of rank 0
    rng_ranks     the same for every rank (list, index = rank)
    metrics       the last logged train metrics and val metrics {"train": {...}, "val": {...}}
    extra         whatever the caller passed (e.g. the stage's data digest)

Everything in it loads with `torch.load(weights_only=True)` (the numpy RNG state is stored as a
tensor), so a downstream user never has to unpickle arbitrary code to read a model.
Writes go to a temp file in the same folder, are fsynced and renamed into place, so a run killed
mid-write leaves the previous checkpoint intact and a stray `.step_*.tmp` that is never loaded.
"""
from __future__ import annotations

import contextlib
import random
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from vqvp_core.atomic import atomic_path
from vqvp_core.train.config import RESUME_KEYS, TrainingError

_CKPT_RE = re.compile(r"^step_(\d+)\.pt$")
_TMP_RE = re.compile(r"^\.step_\d+\.pt\..*\.tmp$")


class ResumeMismatchError(TrainingError):
    """The checkpoint in ckpt_dir was written by a run with another model or train config."""


def checkpoint_path(ckpt_dir: str | Path, step: int) -> Path:
    return Path(ckpt_dir) / f"step_{step:08d}.pt"


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temp file beside `path`, fsync, os.replace: all or nothing."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
    return path


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the complete checkpoints in ckpt_dir, oldest first; temp files ignored."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name)) and p.is_file()]
    return sorted(found)


def find_latest(ckpt_dir: str | Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def prune_checkpoints(ckpt_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints and stale temp files; return what went."""
    removed = [p for _, p in list_checkpoints(ckpt_dir)[:-keep_last]] if keep_last > 0 else []
    d = Path(ckpt_dir)
    if d.is_dir():
        removed += [p for p in d.iterdir() if _TMP_RE.match(p.name)]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def save_checkpoint(ckpt_dir: str | Path, step: int, ckpt: dict[str, Any], keep_last: int) -> Path:
    path = atomic_torch_save(ckpt, checkpoint_path(ckpt_dir, step))
    prune_checkpoints(ckpt_dir, keep_last)
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
    """Load a checkpoint dict. weights_only=False only for files you trust with custom `extra`."""
    try:
        return torch.load(Path(path), map_location=map_location, weights_only=weights_only)
    except Exception as e:  # noqa: BLE001 - re-raised with the path
        raise TrainingError(f"cannot load checkpoint {path}: {e}") from e


# ---------------------------------------------------------------------------------- RNG states

def capture_rng(device: torch.device | None = None) -> dict[str, Any]:
    name, key, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "python": random.getstate(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device | None = None) -> None:
    torch.set_rng_state(state["torch"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@contextlib.contextmanager
def preserved_rng(device: torch.device | None = None) -> Iterator[None]:
    """Run a block (validation) without moving the RNG streams of training."""
    state = capture_rng(device)
    try:
        yield
    finally:
        restore_rng(state, device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


# ------------------------------------------------------------------------------ resume checks

def _plain(v: Any) -> Any:
    """Tuples -> lists, recursively: a config that went through YAML/JSON still compares equal."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def check_resume_compatible(ckpt: dict[str, Any], model_config: dict[str, Any],
                            train_config: dict[str, Any], path: str | Path) -> None:
    """Raise ResumeMismatchError naming the first differing key, if the run cannot resume `ckpt`."""
    fresh = f"to start fresh, use another ckpt_dir or delete {Path(path).parent}"
    diffs = _diff(_plain(ckpt.get("config")), _plain(model_config))
    if diffs:
        key, old, new = diffs[0]
        raise ResumeMismatchError(
            f"checkpoint {path} was written with model config {key!r} = {old!r}, but this run has "
            f"{key!r} = {new!r} ({len(diffs)} key(s) differ); {fresh}")
    old_tc = _plain(ckpt.get("train_config") or {})
    new_tc = _plain(train_config)
    for key in RESUME_KEYS:
        if old_tc.get(key) != new_tc.get(key):
            raise ResumeMismatchError(
                f"checkpoint {path} was written with train config {key!r} = {old_tc.get(key)!r}, "
                f"but this run has {key!r} = {new_tc.get(key)!r}; an exact resume needs the same "
                f"{', '.join(RESUME_KEYS)}; {fresh}")
