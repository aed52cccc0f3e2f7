"""dvc.yaml is exact: each stage's deps hold every repository file its command imports, and its
params are the keys that change its outputs (bookkeeping is not among them)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("dvc_graph", ROOT / "scripts" / "dvc_graph.py")
graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graph)
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("stage", list(DVC["stages"]))
def test_deps_cover_the_import_closure(stage):
    deps = set(DVC["stages"][stage]["deps"])
    closure = graph.code_deps(stage)
    assert f"stages/{stage}.py" in closure and "stages/common.py" in closure
    missing = sorted(f for f in closure if f not in deps and not any(f.startswith(d.rstrip("/") + "/") for d in deps))
    assert not missing, f"{stage} imports {missing}, not in its dvc.yaml deps (python scripts/dvc_graph.py --write)"


def test_the_closure_follows_real_imports(tmp_path):
    """Imports at module level, inside functions, `from pkg import module`, and packages' __init__."""
    (tmp_path / "stages").mkdir()
    (tmp_path / "vqvp_core" / "sub").mkdir(parents=True)
    for f in ("stages/__init__.py", "vqvp_core/__init__.py", "vqvp_core/sub/__init__.py", "vqvp_core/unused.py"):
        (tmp_path / f).write_text("")
    (tmp_path / "stages" / "x.py").write_text("import os\nfrom vqvp_core.sub import leaf\ndef f():\n    import vqvp_core.lazy\n")
    (tmp_path / "vqvp_core" / "sub" / "leaf.py").write_text("from vqvp_core import util\n")
    (tmp_path / "vqvp_core" / "lazy.py").write_text("")
    (tmp_path / "vqvp_core" / "util.py").write_text("")
    got = graph.closure(["stages/x.py"], tmp_path, entries=())
    assert got == {"stages/x.py", "vqvp_core/__init__.py", "vqvp_core/sub/__init__.py", "vqvp_core/sub/leaf.py",
                   "vqvp_core/lazy.py", "vqvp_core/util.py"}


@pytest.mark.parametrize("stage", list(DVC["stages"]))
def test_params_are_the_keys_that_change_outputs(stage):
    keys = DVC["stages"][stage]["params"]
    assert keys == graph.stage_params(stage, PARAMS)
    assert not [k for k in keys if k.rsplit(".", 1)[-1] in graph.BOOKKEEPING]
    assert "preset" not in keys  # a label: the values it sets are tracked themselves


def test_train_stages_track_what_changes_the_model_only():
    keys = set(DVC["stages"]["train_vqvae"]["params"])
    assert {"vqvae.model", "vqvae.train.lr", "vqvae.train.steps", "vqvae.train.seed"} <= keys
    assert not keys & {"vqvae.alias", "vqvae.register_as", "vqvae.log_videos", "vqvae.train.device",
                       "vqvae.train.log_every", "vqvae.train.ckpt_every", "vqvae.train.num_workers"}


def test_the_checker_agrees_with_dvc_yaml():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "dvc_graph.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dvc_lock_is_not_git_ignored():
    """`dvc repro` refuses to run at all when dvc.lock is git-ignored ("'dvc.lock' is
    git-ignored"): a fresh clone's `make demo` failed at its first stage when it was."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(["git", "check-ignore", "-q", "dvc.lock"], cwd=root)
    assert r.returncode == 1, "dvc.lock is git-ignored (.gitignore): dvc repro will refuse to run"
