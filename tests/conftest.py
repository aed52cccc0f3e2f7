"""Shared fixtures: a throw-away vqvp repository (git + DVC) and a private MLflow store."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Small, fast synthetic ingest used by every stage/flow test.
TINY_INGEST = ["ingest.synthetic.n_videos=6", "ingest.synthetic.n_frames=32", "ingest.size=32", "ingest.workers=1"]
TINY_INGEST_ARGS = [arg for o in TINY_INGEST for arg in ("-S", o)]

# Very small models, for stage and flow tests (the tiny preset's models are for the demo).
SMALL_MODEL = [
    "vqvae.model.first_channels=8", "vqvae.model.channels=16",
    "vqvae.model.res_channels=8", "vqvae.model.embed_dim=8", "vqvae.model.n_codes=32",
    "top_prior.model.n_codes=32", "top_prior.model.n_codes_bottom=32", "bottom_prior.model.n_codes=32",
    "bottom_prior.model.n_codes_top=32",
    # priors: 2 gated layers with attention after the second (the minimum with no blind spot)
    *[f"{p}.model.{k}={v}" for p in ("top_prior", "bottom_prior") for k, v in dict(
        embed_dim=8, channels=16, n_layers=2, attn_every=2, attn_heads=2, attn_channels=8, out_hidden=16,
        cond_channels=16, cond_res_blocks=1, cond_res_hidden=8).items()],
    "top_prior.model.cond_embed_dim=8", "top_prior.model.cond_mid_channels=16",
    "bottom_prior.model.top_embed_dim=8", "bottom_prior.model.top_up_hidden=8", "bottom_prior.model.top_up_channels=16",
    "bottom_prior.model.past_channels=8",
]


# A handful of steps for every training stage.
FAST_TRAIN = [f"{s}.train.{k}={v}" for s in ("vqvae", "top_prior", "bottom_prior")
              for k, v in dict(steps=2, batch_size=2, ckpt_every=2, val_every=2, log_every=1, precision="fp32").items()] + [
    "vqvae.eval_clips=4", "vqvae.log_videos=1", "top_prior.eval_clips=4", "bottom_prior.eval_clips=4"]
FAST = TINY_INGEST + SMALL_MODEL + FAST_TRAIN


# `.ci/run` sets VQVP_REQUIRE=containers,browser: there a test that cannot run its real part
# fails instead of skipping, so CI never passes with the feature unchecked. Locally they skip.
REQUIRE_ENV = "VQVP_REQUIRE"


def required(part: str) -> bool:
    return part in {p.strip() for p in os.environ.get(REQUIRE_ENV, "").split(",")}


def skip_unless_required(part: str, reason: str, module_level: bool = False):
    """Skip with `reason`, or fail with it where VQVP_REQUIRE names `part` (containers, browser)."""
    if required(part):
        pytest.fail(f"{REQUIRE_ENV} requires the {part} tests, but: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


def import_or_skip(module: str, part: str, reason: str):
    try:
        return __import__("importlib").import_module(module)
    except ImportError:
        skip_unless_required(part, reason, module_level=True)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test writes to the developer's MLflow store, Prefect home or DVC site cache."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("VQVP_GPU_LOCK_DIR", str(tmp_path / "gpu-slots"))  # not the machine's slots
    monkeypatch.setenv("GIT_AUTHOR_NAME", "vqvp-test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@example.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "vqvp-test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@example.invalid")
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def repo(tmp_path) -> Path:
    """A fresh git + DVC repository holding this project's dvc.yaml, params.yaml and code deps."""
    dest = tmp_path / "repo"
    dest.mkdir()
    for name in ("dvc.yaml", "params.yaml", "vqvp_core", "stages", "flows"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    (dest / "data").mkdir()
    shutil.copy(ROOT / "data" / ".gitignore", dest / "data" / ".gitignore")
    (dest / ".gitignore").write_text("/mlflow.db\n__pycache__/\n")
    run(["git", "init", "-q"], dest)
    run([str(BIN / "dvc"), "init", "-q"], dest)
    run([str(BIN / "dvc"), "config", "core.autostage", "false"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "init"], dest)
    return dest
