"""`dvc exp run` as DVC users run it: -S overrides, a --temp experiment and a queued one, their
MLflow runs and checkpoints in the project (not in DVC's temporary copies), `dvc exp show`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import BIN, FAST, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _runs(store: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    exp = client.get_experiment_by_name("vqvp")
    return [] if exp is None else client.search_runs([exp.experiment_id], "tags.`vqvp.stage` = 'train_vqvae'")


def test_temp_and_queued_experiments_keep_their_runs_and_checkpoints(repo, monkeypatch):
    from vqvp_core.config import apply_overrides, dump_params, preset_dict, validate

    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the default store: mlflow.db of the project
    (repo / "params.yaml").write_text(dump_params(validate(apply_overrides(preset_dict("tiny"), FAST))))
    (repo / ".gitignore").write_text("/mlflow.db\n/mlruns\n/checkpoints\n__pycache__/\n")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "tiny params"], repo)
    params = (repo / "params.yaml").read_text()
    dvc = str(BIN / "dvc")

    run([dvc, "exp", "run", "--temp", "-n", "lr2", "train_vqvae", "-S", "vqvae.train.lr=0.002"], repo)
    run([dvc, "exp", "run", "--queue", "-n", "lr3", "train_vqvae", "-S", "vqvae.train.lr=0.003"], repo)
    run([dvc, "exp", "run", "--run-all"], repo)

    assert (repo / "params.yaml").read_text() == params  # the workspace is untouched
    runs = _runs(repo / "mlflow.db")  # both experiments logged to the project's store
    assert sorted(r.data.params["vqvae.train.lr"] for r in runs) == ["0.002", "0.003"]
    for r in runs:  # their artifacts live in the project's mlruns/, not in a deleted temporary copy
        assert Path(r.info.artifact_uri.removeprefix("file://")).is_relative_to(repo / "mlruns")
        assert (Path(r.info.artifact_uri.removeprefix("file://")) / "reconstructions").is_dir()
    # one checkpoint folder per experiment (by fingerprint), in the project
    folders = sorted(p.parent.name for p in (repo / "checkpoints/exps").glob("*/train_vqvae"))
    assert len(folders) == 2 and all(list((repo / "checkpoints/exps" / f / "train_vqvae").glob("*.pt")) for f in folders)

    shown = json.loads(run([dvc, "exp", "show", "--json"], repo).stdout)
    exps = {e["name"]: e for baseline in shown for e in (baseline.get("experiments") or [])}
    assert {"lr2", "lr3"} <= set(exps)
    for name, lr in (("lr2", 0.002), ("lr3", 0.003)):
        data = exps[name]["revs"][0]["data"]
        assert data["params"]["params.yaml"]["data"]["vqvae"]["train"]["lr"] == lr
        assert data["metrics"]["metrics/vqvae.json"]["data"]["step"] == 2
