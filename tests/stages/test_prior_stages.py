"""train_top_prior and train_bottom_prior on tiny latents: outs, metrics, baselines, MLflow lineage."""
import json
import os

import pytest
import torch
from mlflow.tracking import MlflowClient

from stages import train_bottom_prior, train_top_prior
from tests.stages.conftest import args, train_args
from vqvp_core.models.bottom_prior import BottomPrior, BottomPriorConfig
from vqvp_core.models.top_prior import TopPrior, TopPriorConfig


@pytest.mark.parametrize("stage, section, build", [
    (train_top_prior, "top_prior", lambda c: TopPrior(TopPriorConfig.from_dict(c))),
    (train_bottom_prior, "bottom_prior", lambda c: BottomPrior(BottomPriorConfig.from_dict(c))),
])
def test_prior_stage(latents_workdir, stage, section, build):
    assert stage.main(train_args(steps=3, section=section)) == 0
    ckpt = torch.load(latents_workdir / f"models/{section}/model.pt", weights_only=True)
    build(ckpt["config"]).load_state_dict(ckpt["state_dict"])  # the file rebuilds the model on its own
    metrics = json.loads((latents_workdir / f"metrics/{section}.json").read_text())
    assert metrics["baseline/uniform_bits"] == 5.0  # log2(32 codes)
    assert 0 < metrics["baseline/unigram_bits"] <= 5.0 + 1e-6
    assert metrics["eval/bits_per_code"] > 0 and metrics["eval/train_bits_per_code"] > 0
    assert metrics["step"] == 3

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias(f"vqvp-{section.replace('_', '-')}", "candidate")
    run = client.get_run(version.run_id)
    assert run.data.tags["vqvp.stage"] == f"train_{section}"
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "data/latents" and dataset.dataset.digest
    assert "baseline/unigram_bits" in run.data.metrics and "train/bits_per_code" in run.data.metrics


def test_prior_stage_without_latents_is_a_clear_error(workdir, capsys):
    assert train_top_prior.main(args()) == 3
    assert "extract_latents" in capsys.readouterr().err


def test_prior_stage_starts_fresh_when_its_latents_change_under_a_stale_dvc_lock(latents_workdir, caplog):
    """`vqvp stage` run outside `dvc repro` leaves dvc.lock's md5 of data/latents stale: a rewritten
    latents folder must still start a fresh run, not resume the finished one of the old data."""
    import numpy as np
    import yaml

    lock = {"stages": {"extract_latents": {"outs": [{"path": "data/latents", "md5": "0" * 32 + ".dir"}]}}}
    (latents_workdir / "dvc.lock").write_text(yaml.safe_dump(lock))
    argv = train_args(steps=2, section="top_prior")
    assert train_top_prior.main(argv) == 0
    assert train_top_prior.main(argv) == 0  # same data: the finished run's checkpoints are kept
    assert "starting fresh" not in caplog.text
    top = latents_workdir / "data/latents/top.npy"
    codes = np.load(top)
    np.save(top, (codes + 1) % 32)  # as a re-run of extract_latents with another VQ-VAE would
    assert train_top_prior.main(argv) == 0
    assert "starting fresh" in caplog.text
