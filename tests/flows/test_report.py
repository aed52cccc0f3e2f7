"""What a flow run reports: metrics rows, the stage table with MLflow links, the gallery."""
from __future__ import annotations

import json

from flows import report


def test_metric_rows_take_the_numbers_of_each_stages_metrics(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/ingest.json").write_text(json.dumps({"clips": 12, "source": "synthetic", "rate": 0.5}))
    assert report.metric_rows(tmp_path, ["ingest", "sample"]) == [
        {"stage": "ingest", "metric": "clips", "value": 12}, {"stage": "ingest", "metric": "rate", "value": 0.5}]


def test_stage_runs_link_the_runs_of_this_flow_run(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("vqvp")
    for stage, flow in (("ingest", "F1"), ("train_vqvae", "F1"), ("ingest", "F0")):
        with mlflow.start_run(tags={"vqvp.stage": stage, "vqvp.prefect_flow_run_id": flow}) as run:
            if flow == "F1" and stage == "ingest":
                wanted = run.info.run_id
    urls = report.stage_run_urls(uri, "F1")
    exp = mlflow.get_experiment_by_name("vqvp").experiment_id
    assert set(urls) == {"ingest", "train_vqvae"}
    assert urls["ingest"] == (wanted, f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{wanted}")  # `mlflow ui`'s
    assert report.stage_run_urls(uri, None) == {}
    monkeypatch.setenv("VQVP_MLFLOW_UI_URL", "https://mlflow.example.org/")
    assert report.stage_run_urls(uri, "F1")["ingest"][1].startswith(f"https://mlflow.example.org/#/experiments/{exp}/")
    md = report.summary(["ingest", "train_vqvae", "sample"], report.markdown_links(urls))
    assert f"| ingest | [{wanted}](http://127.0.0.1:5000/#/experiments/{exp}/runs/{wanted}) |" in md
    assert "| sample | (up to date: no new run) |" in md
    assert report.link_key("train_vqvae") == "mlflow-train-vqvae"


def test_gallery_lists_the_sampled_videos(tmp_path):
    assert report.gallery(tmp_path) is None
    (tmp_path / "data/samples/videos").mkdir(parents=True)
    (tmp_path / "data/samples/videos/c1.mp4").write_bytes(b"")
    (tmp_path / "data/samples/stats.json").write_text(json.dumps(
        {"clips": 3, "temperature": 0.4, "seed": 0, "psnr_predicted_frames": 12.345, "psnr_copy_last_frame": 13.0}))
    md = report.gallery(tmp_path)
    assert "3 test clips, temperature 0.4" in md and "12.35 dB" in md and "c1.mp4" in md
