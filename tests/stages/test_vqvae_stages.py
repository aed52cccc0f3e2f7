"""train_vqvae and extract_latents as dvc.yaml runs them: outs, MLflow, resume after a kill, DDP."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from stages import extract_latents, train_vqvae
from tests.conftest import BIN
from tests.stages.conftest import args, train_args

def test_train_then_extract(workdir, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # a few-second run still samples
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    assert train_vqvae.main(train_args()) == 0
    ckpt = torch.load(workdir / "models/vqvae/model.pt", weights_only=True)
    assert ckpt["config"]["channels"] == 16 and ckpt["step"] == 4 and "state_dict" in ckpt
    metrics = pd.read_json(workdir / "metrics/vqvae.json", typ="series")
    assert {"eval/psnr", "eval/top_codes_in_use", "eval/bottom_codes_in_use", "val/psnr"} <= set(metrics.index)
    from vqvp_core.train.precision import cpu_capability

    # the precision used (train_args asks for fp32) and the CPU it was decided on
    assert metrics["precision"] == "fp32" and metrics["cpu_capability"] == cpu_capability()

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias("vqvp-vqvae", "candidate")
    run = client.get_run(version.run_id)
    assert run.data.tags["vqvp.stage"] == "train_vqvae" and run.data.params["vqvae.model.channels"] == "16"
    assert run.data.tags["vqvp.precision"] == "fp32" and run.data.tags["vqvp.cpu_capability"] == cpu_capability()
    assert "train/loss" in run.data.metrics and "eval/psnr" in run.data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"reconstructions"}
    # the registered version is a pyfunc of the project's model file (stages/mlflow_models.py)
    import mlflow

    from vqvp_core.models.vqvae import VQVAE
    model = mlflow.pyfunc.load_model("models:/vqvp-vqvae@candidate").unwrap_python_model().model
    assert isinstance(model, VQVAE) and model.config.channels == 16
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 4

    assert extract_latents.main(args()) == 0
    top, bottom = np.load(workdir / "data/latents/top.npy"), np.load(workdir / "data/latents/bottom.npy")
    cond_top, cond_bottom = np.load(workdir / "data/latents/cond_top.npy"), np.load(workdir / "data/latents/cond_bottom.npy")
    assert top.shape == (12, 4, 4, 4) and bottom.shape == (12, 8, 8, 8)  # 16x32x32 clips
    assert cond_top.shape == (12, 1, 4, 4) and cond_bottom.shape == (12, 2, 8, 8)
    assert top.dtype == np.int16 and 0 <= top.min() and bottom.max() < 32
    manifest = pd.read_parquet(workdir / "data/latents/manifest.parquet")
    clips = pd.read_parquet(workdir / "data/clips/manifest.parquet")
    assert manifest.clip_id.tolist() == clips.clip_id.tolist() and manifest.row.tolist() == list(range(12))
    first = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (workdir / "data/latents").iterdir()}
    assert extract_latents.main(args()) == 0
    again = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (workdir / "data/latents").iterdir()}
    assert first == again  # deterministic: DVC sees no change


def test_merged_codebooks_reach_the_model_file_and_the_latents(workdir, capsys):
    """vqvae.merge_bottom_codes / merge_top_codes: the saved model's codebooks hold that many
    distinct vectors, and the extracted latents use at most that many codes per level."""
    assert train_vqvae.main(train_args(steps=2) + ["-S", "vqvae.merge_bottom_codes=3", "-S",
                                                   "vqvae.merge_top_codes=2"]) == 0
    assert "bottom codebook merged into 3 codes" in capsys.readouterr().out
    state = torch.load(workdir / "models/vqvae/model.pt", weights_only=True)["state_dict"]
    assert torch.unique(state["quantize_b.codebook"], dim=0).shape[0] == 3
    assert torch.unique(state["quantize_t.codebook"], dim=0).shape[0] == 2
    metrics = json.loads((workdir / "metrics/vqvae.json").read_text())
    assert metrics["merged_bottom_codes"] == 3 and metrics["merged_top_codes"] == 2
    assert extract_latents.main(args()) == 0
    assert len(np.unique(np.load(workdir / "data/latents/bottom.npy"))) <= 3
    assert len(np.unique(np.load(workdir / "data/latents/top.npy"))) <= 2


def test_merging_more_codes_than_the_codebook_has_is_bad_params(workdir, capsys):
    assert train_vqvae.main(args("vqvae.merge_bottom_codes=33")) == 2  # SMALL_MODEL: 32 codes
    assert "vqvae.merge_bottom_codes = 33 is more than" in capsys.readouterr().err


def test_extract_without_model_is_a_clear_error(workdir, capsys):
    assert extract_latents.main(args()) == 3
    assert "models/vqvae not found: run the stage that writes it first" in capsys.readouterr().err


def _stage_cmd(name: str, argv: list[str]) -> list[str]:
    return [str(BIN / "vqvp"), "stage", name, *argv]


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_model(workdir, tmp_path_factory):
    """SIGKILL mid-run, restart: the final weights equal those of an uninterrupted run, bit for bit."""
    argv = train_args(steps=24, ckpt_every=4)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_stage_cmd("train_vqvae", argv), cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = workdir / "checkpoints/train_vqvae"
    deadline = time.time() + 240
    while not (ckpts / "step_00000008.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (workdir / "models/vqvae/model.pt").exists()
    last = max(int(p.stem.split("_")[1]) for p in ckpts.glob("step_*.pt"))
    assert subprocess.run(_stage_cmd("train_vqvae", argv), cwd=workdir, env=env, capture_output=True).returncode == 0
    resumed = torch.load(workdir / "models/vqvae/model.pt", weights_only=True)
    # resumed, not started over: the second run logged only steps after the last checkpoint
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("vqvp")
    second = client.search_runs([exp.experiment_id], "tags.`vqvp.stage` = 'train_vqvae'",
                                order_by=["attributes.start_time DESC"])[0]
    steps = [m.step for m in client.get_metric_history(second.info.run_id, "train/loss")]
    assert steps and min(steps) > last >= 8, (steps, last)

    fresh_dir = tmp_path_factory.mktemp("fresh")
    for name in ("dvc.yaml", "data"):
        os.symlink(workdir / name, fresh_dir / name)
    assert subprocess.run(_stage_cmd("train_vqvae", argv), cwd=fresh_dir, env=env, capture_output=True).returncode == 0
    uninterrupted = torch.load(fresh_dir / "models/vqvae/model.pt", weights_only=True)
    assert resumed["step"] == uninterrupted["step"] == 24
    for key, value in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key


def test_changed_params_start_fresh(workdir, caplog):
    assert train_vqvae.main(train_args(steps=2)) == 0
    assert train_vqvae.main(train_args(steps=2, lr=1e-3)) == 0  # would be a resume mismatch otherwise
    assert (workdir / "checkpoints/.train_vqvae.previous").exists()
    assert "starting fresh" in caplog.text


def test_bookkeeping_params_keep_the_checkpoints(workdir, caplog):
    """Names, aliases, logging and checkpoint cadence are not in the fingerprint (dvc.yaml's params)."""
    assert train_vqvae.main(train_args(steps=2)) == 0
    marker = (workdir / "checkpoints/train_vqvae/FINGERPRINT").read_text()
    assert train_vqvae.main(train_args(steps=2) + ["-S", "vqvae.alias=other", "-S", "vqvae.register_as=x",
                                                   "-S", "vqvae.log_videos=0", "-S", "vqvae.train.log_every=3"]) == 0
    assert "starting fresh" not in caplog.text
    assert (workdir / "checkpoints/train_vqvae/FINGERPRINT").read_text() == marker


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("launch", ["torchrun", "env"])
def test_ddp_two_processes_with_torchrun(workdir, launch):
    """Under torchrun by hand, or by `vqvp stage` itself when VQVP_NPROC_PER_NODE=2 (as dvc.yaml
    and the flow run it)."""
    stage = [str(BIN / "vqvp"), "stage", "train_vqvae", *train_args(steps=2)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if launch == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *stage]
    else:
        cmd, env["VQVP_NPROC_PER_NODE"] = stage, "2"
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if launch == "env":
        assert "2 processes under torchrun" in proc.stderr
    assert json.loads((workdir / "metrics/vqvae.json").read_text())["world_size"] == 2
    assert torch.load(workdir / "models/vqvae/model.pt", weights_only=True)["step"] == 2
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("vqvp").experiment_id],
                              "tags.`vqvp.stage` = 'train_vqvae'")
    assert len(runs) == 1  # rank 0 alone records the run


@pytest.mark.parametrize("value, expected", [("", 1), ("1", 1), ("3", 3), (" GPU ", None)])
def test_nproc_per_node_from_env(value, expected):
    from stages.common import ENV_NPROC, nproc_per_node

    assert nproc_per_node({ENV_NPROC: value}) == (expected or max(torch.cuda.device_count(), 1))


def test_bad_nproc_fails_as_bad_params_before_work(workdir, monkeypatch, capsys):
    monkeypatch.setenv("VQVP_NPROC_PER_NODE", "two")
    assert train_vqvae.main(train_args()) == 2
    assert "VQVP_NPROC_PER_NODE = 'two'" in capsys.readouterr().err
    assert not (workdir / "models/vqvae").exists()


def test_bf16_on_a_cpu_without_native_bf16_fails_as_bad_params_before_work(workdir, monkeypatch, capsys):
    from vqvp_core.train import precision

    monkeypatch.setattr(precision, "torch_cpu_capability", lambda: "AVX2")  # any machine: an AVX2 CPU
    monkeypatch.setattr(precision, "cpu_features", lambda: {"avx2": True, "amx_bf16": False, "avx512_bf16": False})
    assert train_vqvae.main(train_args(precision="bf16", device="cpu")) == 2  # bad params: never retried
    err = capsys.readouterr().err
    assert ("vqvae.train.precision = 'bf16' but this CPU (capability AVX2, no AMX or AVX512-BF16) "
            "has no native bf16") in err and "use precision: auto or fp32" in err
    assert not (workdir / "models/vqvae").exists() and not (workdir / "checkpoints/train_vqvae").exists()
