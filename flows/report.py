"""What a flow run reports in the Prefect UI: the metrics table, the stages with links to their
MLflow runs, the sample gallery. Plain functions that read files and MLflow; the flow
(flows/pipeline.py) turns their output into Prefect artifacts."""
from __future__ import annotations

import json
import os
from pathlib import Path


def metric_rows(repo: str | Path, stages: list[str]) -> list[dict]:
    """One row per numeric value of each stage's metrics/STAGE.json: {stage, metric, value}."""
    rows = []
    for name in stages:
        path = Path(repo) / "metrics" / f"{name}.json"
        if path.exists():
            for key, value in sorted(json.loads(path.read_text()).items()):
                if isinstance(value, (int, float)):
                    rows.append({"stage": name, "metric": key, "value": value})
    return rows


# Where the MLflow UI of a local store is served by `mlflow ui` (its default address); a
# tracking server's URL is its own UI. VQVP_MLFLOW_UI_URL overrides both.
LOCAL_UI = "http://127.0.0.1:5000"


def ui_base(tracking_uri: str) -> str:
    base = os.environ.get("VQVP_MLFLOW_UI_URL") or (tracking_uri if tracking_uri.startswith("http") else LOCAL_UI)
    return base.rstrip("/")


def stage_run_urls(tracking_uri: str, flow_run_id: str | None) -> dict[str, tuple[str, str]]:
    """{stage: (MLflow run id, its URL in the MLflow UI)} for the stage runs of this flow run."""
    from mlflow import MlflowClient

    if not flow_run_id:
        return {}
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(os.environ.get("MLFLOW_EXPERIMENT_NAME", "vqvp"))
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], f"tags.`vqvp.prefect_flow_run_id` = '{flow_run_id}'")
    base = ui_base(tracking_uri)
    return {run.data.tags.get("vqvp.stage"): (run.info.run_id, f"{base}/#/experiments/{exp.experiment_id}/runs/"
                                                 f"{run.info.run_id}") for run in runs}


def markdown_links(urls: dict[str, tuple[str, str]]) -> dict[str, str]:
    """stage_run_urls' runs as Markdown links, for `summary`."""
    return {stage: f"[{rid}]({url})" for stage, (rid, url) in urls.items()}


def link_key(stage: str) -> str:
    """The Prefect artifact key of a stage's MLflow link (keys: lowercase letters, digits, dashes)."""
    return f"mlflow-{stage.replace('_', '-')}"


def summary(stages: list[str], runs: dict[str, str]) -> str:
    """The run's stages and their MLflow runs, as Markdown."""
    md = ["# vqvp run", "", "| stage | MLflow run |", "|---|---|"]
    md += [f"| {s} | {runs.get(s, '(up to date: no new run)')} |" for s in stages]
    md += ["", "Links to a local store open once `mlflow ui --backend-store-uri sqlite:///mlflow.db` serves it "
           f"({LOCAL_UI}; a tracking server's links are its own). Then `vqvp lineage RUN_ID`."]
    return "\n".join(md)


def gallery(repo: str | Path) -> str | None:
    """A Markdown list of the sampled videos with their PSNR; None before `sample` has run."""
    repo = Path(repo)
    stats_path, videos = repo / "data/samples/stats.json", repo / "data/samples/videos"
    if not stats_path.exists():
        return None
    stats = json.loads(stats_path.read_text())
    lines = ["# Samples", "", f"{stats['clips']} test clips, temperature {stats['temperature']}, seed {stats['seed']}: "
             f"PSNR of frames 5-16 {stats['psnr_predicted_frames']:.2f} dB (copy-last-frame "
             f"{stats['psnr_copy_last_frame']:.2f} dB).", "", f"Contact sheet: `{repo / 'data/samples/contact_sheet.png'}`", ""]
    lines += [f"- `{p}` (given | predicted | ground truth)" for p in sorted(videos.glob("*.mp4"))]
    return "\n".join(lines)
