"""`vqvp stage ingest` as dvc.yaml runs it: outs, exit codes, and its MLflow run."""
import json
import os

import pandas as pd
from mlflow.tracking import MlflowClient

from stages import ingest
from tests.conftest import TINY_INGEST_ARGS


def test_stage_writes_outs_and_logs_mlflow_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ingest.main(TINY_INGEST_ARGS + ["--no-progress"]) == 0
    assert (tmp_path / "data/clips/manifest.parquet").exists()
    metrics = json.loads((tmp_path / "metrics/ingest.json").read_text())
    assert metrics["clips"] == 12

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("vqvp")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["vqvp.stage"] == "ingest" and run.data.tags["vqvp.preset"] == "tiny"
    assert "vqvp.git_commit" in run.data.tags
    assert run.data.params["ingest.size"] == "32" and run.data.params["ingest.synthetic.n_videos"] == "6"
    assert run.data.metrics["clips"] == 12
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"rejected.csv", "stats.json", "preview"} <= artifacts


def test_bad_params_fail_before_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert ingest.main(["-S", "ingest.size=30", "-S", "ingest.fps=0"]) == 2
    err = capsys.readouterr().err
    assert "ingest.size = 30" in err and "ingest.fps = 0" in err
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlflow.db").exists()


def test_bad_input_exits_3_and_keeps_previous_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert ingest.main(TINY_INGEST_ARGS + ["--no-progress"]) == 0
    before = pd.read_parquet(tmp_path / "data/clips/manifest.parquet")
    (tmp_path / "empty").mkdir()
    assert ingest.main(["-S", f"ingest.source={tmp_path / 'empty'}", "--no-progress"]) == 3
    assert "no video files" in capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "data/clips/manifest.parquet"), before)


def test_cli_dispatches_to_stage(tmp_path, monkeypatch):
    from flows.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["stage", "ingest", *TINY_INGEST_ARGS, "--no-progress"]) == 0
    assert main(["stage", "nosuchstage"]) == 2
