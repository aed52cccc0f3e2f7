"""The Prefect flow on a real (temporary) Prefect API, running real DVC stages."""
import json
import os

import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import StageFailed, pipeline, rerun
from stages import gpu_slot
from vqvp_core.dag import stages

STAGES = stages()
from tests.conftest import FAST

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def stage_runs() -> dict[str, int]:
    """How many MLflow runs each stage has: what really ran, not what a flow says it ran."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("vqvp")
    counts: dict[str, int] = {}
    for run in client.search_runs([exp.experiment_id]) if exp else []:
        stage = run.data.tags.get("vqvp.stage")
        counts[stage] = counts.get(stage, 0) + 1
    return counts


@pytest.mark.slow
def test_flow_runs_stages_through_dvc(prefect_api, repo):
    ran = pipeline(preset="tiny", overrides=FAST, repo=str(repo))
    assert ran == list(STAGES)  # what DVC's output says it ran
    first = stage_runs()
    assert all(first[s] == 1 for s in STAGES), first
    # the same run again: DVC finds every stage up to date and runs none (a second `make demo`)
    assert pipeline(preset="tiny", overrides=FAST, repo=str(repo)) == []
    assert {s: n for s, n in stage_runs().items() if s in STAGES} == {s: 1 for s in STAGES}
    assert json.loads((repo / "metrics/ingest.json").read_text())["clips"] == 12
    for name in ("vqvae", "top_prior", "bottom_prior"):
        assert json.loads((repo / f"metrics/{name}.json").read_text())["step"] == 2
    assert (repo / "data/latents/top.npy").exists()
    assert "ingest.synthetic.n_videos" not in (repo / "params.yaml").read_text()  # written as YAML sections
    assert "n_videos: 6" in (repo / "params.yaml").read_text()
    assert (repo / "dvc.lock").exists()
    assert gpu_slot.slots() == 1  # the default
    check_lineage()
    check_link_artifacts()
    # rerun forces the stage again; its outputs are byte-identical, so nothing after it is stale
    lock = (repo / "dvc.lock").read_text()
    assert rerun(stage="ingest", repo=str(repo)) == ["ingest"]
    assert (repo / "dvc.lock").read_text() == lock
    assert stage_runs()["ingest"] == 2 and stage_runs()["train_vqvae"] == 1
    # --downstream: it and every stage that reads its outputs run again, and no other (the bottom
    # prior comes after the top prior in dvc.yaml but does not read it)
    again = ["train_top_prior", "sample", "evaluate", "package_human_eval"]
    assert rerun(stage="train_top_prior", downstream=True, repo=str(repo), gpu_slots=2) == again
    after = stage_runs()
    assert {s: after[s] for s in STAGES} == {s: 1 + (s in again) + (s == "ingest") for s in STAGES}, after
    assert gpu_slot.slots() == 2
    rerun(stage="package_human_eval", repo=str(repo))
    assert gpu_slot.slots() == 2  # a count in force is left as it is


def test_an_old_prefect_gpu_limit_is_reported_not_used(prefect_api, caplog):
    """vqvp before issue 13 made a Prefect tag limit on `gpu`; a crash could leave it held. The flow
    no longer creates one, and says how to remove one it finds."""
    from prefect import flow, get_client

    from flows.pipeline import ensure_gpu_limit

    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag="gpu", concurrency_limit=1)

    @flow
    def check() -> int:
        return ensure_gpu_limit(None)

    try:
        assert check() == 1
    finally:
        with get_client(sync_client=True) as client:
            client.delete_concurrency_limit_by_tag("gpu")
    assert "prefect concurrency-limit delete gpu" in caplog.text


def check_link_artifacts():
    """The first flow run linked each stage to its MLflow run with a Prefect link artifact."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.report import link_key

    with get_client(sync_client=True) as client:
        for stage in STAGES:
            (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[link_key(stage)])))
            assert artifact.type == "markdown" and "/#/experiments/" in artifact.data and stage in artifact.data


def check_lineage():
    """From the sample run, through every stage, back to the raw source, with the MLflow client."""
    from mlflow.tracking import MlflowClient

    from commands.lineage import chain

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("vqvp")
    pipelines = client.search_runs([exp.experiment_id], "tags.`vqvp.stage` = 'pipeline'")
    assert len(pipelines) == 2  # the run, and the second that DVC found up to date
    (sample_run,) = client.search_runs([exp.experiment_id], "tags.`vqvp.stage` = 'sample'")
    (pipeline_run,) = [r for r in pipelines if r.info.run_id == sample_run.data.tags["mlflow.parentRunId"]]
    assert sample_run.data.tags["vqvp.out.data/samples"]  # md5 from dvc.lock
    assert sample_run.data.tags["vqvp.prefect_flow_run_id"] == pipeline_run.data.tags["vqvp.prefect_flow_run_id"]
    nodes = chain(sample_run.info.run_id)
    stages = {n["stage"] for n in nodes}
    assert stages == {"sample", "ingest", "train_vqvae", "extract_latents", "train_top_prior", "train_bottom_prior"}
    (ingest,) = [n for n in nodes if n["stage"] == "ingest"]
    assert [i["name"] for i in ingest["inputs"]] == ["raw"] and ingest["inputs"][0]["produced_by"] is None
    model_chain = chain("models:/vqvp-top-prior@candidate")
    assert [n["stage"] for n in model_chain][:2] == ["train_top_prior", "extract_latents"]
    # the command: --json prints the same chain; an unknown reference exits 2, naming it
    import subprocess

    from tests.conftest import BIN

    out = subprocess.run([str(BIN / "vqvp"), "lineage", "models:/vqvp-top-prior@candidate", "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == json.loads(json.dumps(model_chain))
    text = subprocess.run([str(BIN / "vqvp"), "lineage", "models:/vqvp-top-prior@candidate"],
                          capture_output=True, text=True, check=True).stdout
    assert text.startswith("train_top_prior") and not text.lstrip().startswith("[")
    bad = subprocess.run([str(BIN / "vqvp"), "lineage", "no-such-run", "--json"], capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot resolve 'no-such-run'" in bad.stderr and bad.stdout == ""


def test_flow_bad_params_fail_before_any_stage(prefect_api, repo):
    with pytest.raises(Exception, match="ingest.size = 30"):
        pipeline(preset="tiny", overrides=["ingest.size=30"], repo=str(repo))
    assert not (repo / "data/clips").exists()


def test_flow_does_not_retry_bad_input(prefect_api, repo, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StageFailed) as info:
        pipeline(preset="tiny", overrides=[f"ingest.source={tmp_path / 'empty'}"], repo=str(repo))
    assert info.value.exit_code == 3
    assert stage_runs().get("ingest") == 1  # ran once: bad input is not retried


@pytest.mark.slow
def test_flow_retries_a_transient_failure(prefect_api, repo):
    """The stage's command fails once (exit 1), as a lost connection would; the task's retry runs it again."""
    import yaml

    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())
    dvc["stages"]["ingest"]["cmd"] = "test -f .tried || { touch .tried; exit 1; }; vqvp stage ingest"
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    assert pipeline(preset="tiny", overrides=FAST, repo=str(repo), stages=["ingest"]) == ["ingest"]
    assert (repo / ".tried").exists() and stage_runs()["ingest"] == 1  # failed before its run; then once


def test_downstream_follows_the_dvc_graph():
    from vqvp_core.dag import downstream_of

    assert downstream_of("ingest") == list(STAGES)
    assert downstream_of("train_vqvae") == list(STAGES[1:])
    # the bottom prior does not read the top prior's model; sampling and what follows it do
    assert downstream_of("train_top_prior") == ["train_top_prior", "sample", "evaluate", "package_human_eval"]
    assert downstream_of("evaluate") == ["evaluate"]


@pytest.mark.slow
def test_stages_on_two_machines_meet_through_the_dvc_remote(prefect_api, repo, tmp_path, monkeypatch):
    """Machine A ingests and pushes; machine B (a clone with no data, no cache) trains the VQ-VAE
    from what it pulls and pushes the model; a third checkout pulls that model."""
    from tests.conftest import BIN, run
    from tests.s3server import dvc_s3_remote, moto_s3

    dvc = str(BIN / "dvc")
    with moto_s3(monkeypatch) as endpoint:
        dvc_s3_remote(repo, endpoint)
        assert pipeline(preset="tiny", overrides=FAST, repo=str(repo), stages=["ingest"], remote=True) == ["ingest"]
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-q", "-m", "ingest"], repo)

        b = tmp_path / "machine-b"
        run(["git", "clone", "-q", str(repo), str(b)], tmp_path)
        assert not (b / "data/clips").exists()
        assert pipeline(preset=None, repo=str(b), stages=["train_vqvae"], remote=True) == ["train_vqvae"]
        assert (b / "data/clips/manifest.parquet").exists()  # pulled, not made again
        trained = (b / "models/vqvae/model.pt").read_bytes()
        run(["git", "add", "-A"], b)  # dvc.lock and metrics/; data and models are git-ignored outs
        run(["git", "commit", "-q", "-m", "train_vqvae"], b)

        c = tmp_path / "machine-c"
        run(["git", "clone", "-q", str(b), str(c)], tmp_path)
        run([dvc, "pull", "train_vqvae"], c)
        assert (c / "models/vqvae/model.pt").read_bytes() == trained


@pytest.mark.slow
def test_a_stage_past_its_timeout_is_stopped(prefect_api, repo):
    """flow.timeout_s from params: the task fails once (a timeout is not retried), and the stage's
    processes are gone with its GPU slot."""
    import subprocess
    import time

    long = FAST + ["vqvae.train.steps=5000", "vqvae.train.ckpt_every=5000", "vqvae.train.val_every=5000",
                   "flow.timeout_s={train_vqvae: 25}"]
    t0 = time.monotonic()
    with pytest.raises(BaseException, match="(?i)timed out|timeout"):
        pipeline(preset="tiny", overrides=long, repo=str(repo), stages=["ingest", "train_vqvae"])
    assert time.monotonic() - t0 < 150  # one attempt of 25 s, not three with back-off
    assert stage_runs().get("train_vqvae") == 1
    assert gpu_slot.holders() == []

    def left() -> list[str]:
        out = subprocess.run(["pgrep", "-f", "vqvp stage train_vqvae"], capture_output=True, text=True).stdout
        return [pid for pid in out.split() if os.path.realpath(f"/proc/{pid}/cwd") == str(repo)]

    deadline = time.monotonic() + 15
    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left()
