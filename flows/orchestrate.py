"""The orchestrating flow: each stage on its own pool, as Prefect deployments compose.

`vqvp-orchestrate` runs on the CPU pool and calls each stage's deployment (infra/prefect.yaml:
`vqvp-pipeline/<stage>`) with `run_deployment`, as a subflow, one after another in dvc.yaml's
order: ingest and the human-evaluation package run on the CPU pool, training, latents, sampling
and evaluation on the GPU pool, each where its deployment says. The stage deployments are the
pipeline flow restricted to one stage, so DVC still decides what is stale, in the shared
workspace (or, with `remote`, through the DVC remote).
"""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.deployments import run_deployment

from vqvp_core.config import Params, apply_overrides, load_params, preset_dict, validate
from vqvp_core.dag import placement, stages as dag_stages

PIPELINE_FLOW = "vqvp-pipeline"  # the flow name of flows/pipeline.py:pipeline
SCHEDULING_S = 600  # beyond its stage timeout: how long a stage's run may wait for a worker


def deployment_name(stage: str) -> str:
    """The stage's deployment in infra/prefect.yaml (names use dashes)."""
    return f"{PIPELINE_FLOW}/{stage.replace('_', '-')}"


class StageRunFailed(RuntimeError):
    pass


@task
def check_params(repo: str, preset: str | None, overrides: list[str]) -> Params:
    """Bad params fail here, before any stage's deployment is started."""
    if preset:
        return validate(apply_overrides(preset_dict(preset), overrides))
    return load_params(f"{repo}/params.yaml", overrides)


@flow(name="vqvp-orchestrate", log_prints=True)
def orchestrate(preset: str | None = None, overrides: list[str] | None = None, stages: list[str] | None = None,
                repo: str = ".", remote: bool = False, job_variables: dict[str, Any] | None = None,
                timeout_s: float | None = None) -> list[str]:
    """Run each stage's deployment in order, each on its pool; returns the stages run. A stage
    whose flow run does not complete stops the rest. `job_variables` go to every stage run
    (an image tag, mounts); `timeout_s`: how long to wait for one stage's run, from its scheduling
    (default: its stage timeout, params `flow`, plus SCHEDULING_S for a worker to pick it up)."""
    logger = get_run_logger()
    overrides = list(overrides or [])
    params = check_params(repo, preset, overrides)
    known = dag_stages(repo)
    todo = list(stages or known)
    unknown = [s for s in todo if s not in known]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; stages are {list(known)}")
    for stage in todo:
        name = deployment_name(stage)
        logger.info("%s: deployment %s (%s pool)", stage, name, placement(stage, repo))
        run = run_deployment(name, parameters={"preset": preset, "overrides": overrides, "stages": [stage],
                                               "remote": remote}, job_variables=job_variables or {},
                             timeout=timeout_s if timeout_s is not None else params.flow.timeout(stage) + SCHEDULING_S,
                             as_subflow=True)
        state = run.state
        if state is None or not state.is_final():
            raise StageRunFailed(f"{stage}: flow run {run.name} ({run.id}) of {name} did not finish in time "
                                 f"(state {state.type.value if state else 'none'}): is a worker serving its pool?")
        if not state.is_completed():
            raise StageRunFailed(f"{stage}: flow run {run.name} ({run.id}) of {name} ended "
                                 f"{state.type.value if state else 'without a state'}")
    return todo
