"""The orchestrating flow on two pools: infra/prefect.yaml deployed to a real Prefect server,
a CPU and a GPU pool each served by its own worker, and `vqvp-orchestrate/orchestrated` calling
the stage deployments as subflows. Process workers (no container engine needed): the docker
pools' container set-up is tested in test_containers.py."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import BIN, FAST, required
from tests.infra.test_containers import INFRA, _run_deployment, _sh, _stop, prefect_server  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _flow_runs(env: dict) -> list[dict]:
    script = """
import json
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    runs = client.read_flow_runs()
    deps = {d.id: d.name for d in client.read_deployments()}
    print(json.dumps([{"name": r.name, "deployment": deps.get(r.deployment_id), "pool": r.work_pool_name,
                       "parent": str(r.parent_task_run_id) if r.parent_task_run_id else None,
                       "stages": r.parameters.get("stages"), "state": r.state.type.value} for r in runs]))
"""
    return json.loads(_sh([sys.executable, "-c", script], env=env, timeout=120).stdout)


@pytest.fixture
def without_required_containers():
    """Where containers are required (CI), the docker-worker test of test_containers.py checks the
    same placement with real containers, and the process-worker one would repeat it: skipped there
    (before the Prefect server starts)."""
    if required("containers"):
        pytest.skip("VQVP_REQUIRE=containers: test_containers.py::test_deployments_run_on_docker_work_pools "
                    "runs the orchestrating deployment on docker workers instead")


@pytest.mark.timeout(1200)
def test_each_stage_runs_on_its_pool_through_the_orchestrating_flow(without_required_containers, prefect_server,
                                                                    repo, tmp_path):
    env = {**prefect_server, "VQVP_WORKDIR": str(repo)}  # prefect.yaml's pull step: the workspace
    prefect = str(BIN / "prefect")
    for pool in ("vqvp-cpu", "vqvp-gpu"):
        _sh([prefect, "work-pool", "create", pool, "--type", "process"], env=env, timeout=120)
    shutil.copytree(INFRA, repo / "infra", ignore=shutil.ignore_patterns("*.crt", "__pycache__"))
    _sh([prefect, "--no-prompt", "deploy", "--prefect-file", "infra/prefect.yaml", "--all"], cwd=repo, env=env,
        timeout=300)

    log = tmp_path / "workers.log"
    with log.open("w") as out:
        workers = [subprocess.Popen([prefect, "worker", "start", "--pool", pool, "--type", "process"], env=env,
                                    stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
                   for pool in ("vqvp-cpu", "vqvp-gpu")]
    try:
        state = _run_deployment(env, "vqvp-orchestrate/orchestrated",
                                parameters={"overrides": FAST, "stages": ["ingest", "train_vqvae"]},
                                job_variables={}, timeout=900, log=log)
    finally:
        for w in workers:
            _stop(w)
    assert state == "COMPLETED", f"orchestrated run ended {state}:\n{log.read_text()[-6000:]}"

    runs = _flow_runs(env)
    (parent,) = [r for r in runs if r["deployment"] == "orchestrated"]
    assert parent["pool"] == "vqvp-cpu"
    stage_runs = {r["deployment"]: r for r in runs if r["deployment"] in ("ingest", "train-vqvae")}
    assert stage_runs["ingest"]["pool"] == "vqvp-cpu" and stage_runs["train-vqvae"]["pool"] == "vqvp-gpu"
    assert all(r["parent"] and r["state"] == "COMPLETED" for r in stage_runs.values())  # subflows of the parent
    assert stage_runs["train-vqvae"]["stages"] == ["train_vqvae"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert {"ingest", "train_vqvae"} <= set(lock) and "sample" not in lock
    assert json.loads((repo / "metrics/vqvae.json").read_text())["step"] == 2  # the run's overrides were used


@pytest.fixture(scope="module")
def harness():
    """One temporary Prefect API for the in-process tests below (each start costs ~20 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_bad_params_stop_the_orchestrating_flow_before_any_stage(harness, repo):
    from flows.orchestrate import orchestrate
    from vqvp_core.config import ConfigError

    with pytest.raises(ConfigError, match="ingest.size = 13"):
        orchestrate(overrides=["ingest.size=13"], repo=str(repo))
    assert not (repo / "dvc.lock").exists()


def test_a_stage_run_no_worker_picks_up_fails_in_time_saying_why(harness, repo):
    """No worker serves the stage's pool: the orchestrating flow stops after `timeout_s`, naming
    the run and asking for a worker, instead of waiting forever."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from flows.orchestrate import StageRunFailed, orchestrate
    from flows.pipeline import pipeline

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="vqvp-cpu", type="process"))
    pipeline.from_source(source=str(repo), entrypoint="flows/pipeline.py:pipeline").deploy(
        name="ingest", work_pool_name="vqvp-cpu", print_next_steps=False)
    with pytest.raises(StageRunFailed, match="ingest: flow run .* did not finish in time .*is a worker serving"):
        orchestrate(stages=["ingest"], repo=str(repo), overrides=FAST, timeout_s=3)
    assert not (repo / "dvc.lock").exists()
