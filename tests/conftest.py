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


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test writes to the developer's MLflow store, Prefect home or DVC site cache."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
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
