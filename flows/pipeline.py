"""The end-to-end Prefect flow: each stage a task that runs `dvc repro -s STAGE`.

DVC owns the data graph and decides what is stale; Prefect owns execution (order, retries,
logs, artifacts). DVC calls in one workspace are serialized by a file lock. The flow works
with Prefect's ephemeral API by default and against a server when PREFECT_API_URL is set.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from filelock import FileLock
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows import report
from stages import gpu_slot
from stages.common import ENV_FLOW_PID, ENV_FLOW_RUN, ENV_PARENT_RUN, EXIT_BAD_INPUT, EXIT_BAD_PARAMS
from commands.lineage import parent_run, tag_stage_run
from vqvp_core.atomic import write_text
from vqvp_core.config import PARAMS_FILE, Params, apply_overrides, dump_params, load_params, preset_dict, validate
from vqvp_core.dag import downstream_of, placement, stages as dag_stages

PERMANENT_EXIT_CODES = (EXIT_BAD_PARAMS, EXIT_BAD_INPUT)  # bad params or data: a retry cannot help
# GPU stages (dvc.yaml's meta.placement: gpu) carry this tag; each holds a machine-local GPU slot while it runs
# (stages/gpu_slot.py), so runs sharing a machine never put more GPU stages on it than it has slots.
GPU_TAG = "gpu"
STOP_GRACE_S = 10.0  # after Ctrl-C / SIGTERM: how long a stage gets to stop before SIGKILL


class StageFailed(RuntimeError):
    def __init__(self, stage: str, exit_code: int | None, tail: str):
        self.stage, self.exit_code = stage, exit_code
        super().__init__(f"stage {stage!r} failed (exit code {exit_code}):\n{tail}")


def _dvc() -> str:
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def _env(parent_run_id: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if parent_run_id:
        env[ENV_PARENT_RUN] = parent_run_id
    # dvc.yaml's commands (`vqvp stage ...`) must find this environment's `vqvp`.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    env[ENV_FLOW_PID] = str(os.getpid())  # a stage stops itself when this process is gone
    if flow_run.id:
        env[ENV_FLOW_RUN] = str(flow_run.id)
    return env


def _transient(task, task_run, state) -> bool:
    """Retry a failed stage unless it failed for a permanent reason: bad params or data, or its
    timeout (params flow.timeout_s: a retry would only hit the same limit)."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, TimeoutError):
        return False
    return not (isinstance(exc, StageFailed) and exc.exit_code in PERMANENT_EXIT_CODES)


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=_transient, tags=["vqvp-stage"])
def repro(stage: str, repo: str = ".", force: bool = False, downstream: bool = False,
          parent_run_id: str | None = None, remote: bool = False) -> list[str]:
    """Run one stage through DVC (`dvc repro -s STAGE`), streaming its output to the flow log;
    then tag its MLflow run with the md5s DVC recorded in dvc.lock. Returns the stages DVC really
    ran (from its output; empty when it found them up to date and skipped them).

    `remote`: for stages that run on separate machines (one checkout each), pull the stage's
    missing inputs from the DVC remote first (`dvc repro --pull`) and push its outputs after
    (`dvc push STAGE`), so that the next stage, wherever it runs, finds them."""
    cmd = [_dvc(), "repro"] + (["--force"] if force else []) + (["--pull"] if remote else [])
    cmd += ["--downstream", stage] if downstream else ["--single-item", stage]
    ran = downstream_of(stage, repo) if downstream else [stage]
    lock = Path(repo) / ".dvc" / "tmp" / "vqvp-flow.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    with FileLock(str(lock)):
        code = _stream(cmd, repo, _env(parent_run_id), stage, lines)
        if code == 0 and remote:
            code = _stream([_dvc(), "push", *ran], repo, _env(parent_run_id), stage, lines)
    if code != 0:
        found = re.findall(r"exited with (\d+)", "\n".join(lines))
        raise StageFailed(stage, int(found[-1]) if found else code, "\n".join(lines[-30:]))
    executed = ran_by_dvc(lines)
    if flow_run.id:
        for name in executed:
            with _in_repo(repo):
                tag_stage_run(name, str(flow_run.id), flow_run.ui_url, repo)
    if not executed:
        get_run_logger().info("%s: up to date, DVC skipped it", stage)
    return executed


def ran_by_dvc(lines: list[str]) -> list[str]:
    """The stages `dvc repro` output says it ran ("Running stage 'NAME':"), in order."""
    return list(dict.fromkeys(re.findall(r"Running stage '([^']+)'", "\n".join(lines))))


def _stream(cmd: list[str], repo: str, env: dict[str, str], stage: str, lines: list[str]) -> int:
    """Run cmd in repo, each output line to the flow log (and to `lines`); its exit code."""
    logger = get_run_logger()
    logger.info("running %s", " ".join(cmd))
    # its own process group: on Ctrl-C / SIGTERM the whole group (dvc and the stage) is stopped
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    assert proc.stdout is not None
    try:
        for line in progress_lines(proc.stdout):
            lines.append(line)
            logger.info("%s | %s", stage, line)
        return proc.wait()
    except BaseException:
        stop_group(proc)
        raise


def progress_lines(stream, every_s: float = 5.0):
    """The text lines of a byte stream; a progress bar that redraws with '\r' yields its latest
    state when its line ends and, while it runs, at most once every `every_s` seconds."""
    buf, last = b"", 0.0
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not chunk:
            break
        buf += chunk
        *done, buf = buf.split(b"\n")
        for raw in done:
            line = raw.decode("utf-8", "replace").rstrip().rsplit("\r", 1)[-1].strip()
            if line:
                yield line
        if b"\r" in buf and time.monotonic() - last >= every_s:
            parts = [p for p in buf.split(b"\r") if p.strip()]
            if parts:
                last = time.monotonic()
                yield parts[-1].decode("utf-8", "replace").strip()
            buf = buf[buf.rfind(b"\r"):]
    tail = buf.decode("utf-8", "replace").rsplit("\r", 1)[-1].strip()
    if tail:
        yield tail


def stop_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group of `proc`; SIGKILL what is left after `grace_s`."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def _in_repo(repo: str):
    """MLflow's default store (sqlite:///mlflow.db) is relative to the repository."""
    old = os.getcwd()
    os.chdir(repo)
    try:
        yield
    finally:
        os.chdir(old)


@task
def ensure_gpu_limit(slots: int | None = None) -> int:
    """The machine's GPU slots (stages/gpu_slot.py): set to `slots` when given, else left as they
    are (1 by default). Says who holds them now, and warns of a Prefect tag concurrency limit
    on `gpu` (vqvp before issue 13 used one; a crash could leave its slot held for ever).
    Returns the slot count in force."""
    logger = get_run_logger()
    n = gpu_slot.set_slots(slots) if slots is not None else gpu_slot.slots()
    logger.info("GPU stages limited to %d at a time on this machine (slot locks in %s)", n, gpu_slot.lock_dir())
    for h in gpu_slot.holders():
        logger.info("GPU %s", gpu_slot.describe(h))
    _warn_prefect_gpu_limit(logger)
    return n


def _warn_prefect_gpu_limit(logger) -> None:
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            limit = client.read_concurrency_limit_by_tag(GPU_TAG)
    except ObjectNotFound:
        return
    except Exception as exc:  # the warning must never stop a run
        logger.debug("could not read the Prefect concurrency limit on %r: %s", GPU_TAG, exc)
        return
    logger.warning("a Prefect tag concurrency limit on %r exists (%d slots, %d active): vqvp no longer uses it, "
                   "but Prefect still applies it to the GPU stages' tasks; if those stay pending, remove it with "
                   "`prefect concurrency-limit delete %s`", GPU_TAG, limit.concurrency_limit,
                   len(limit.active_slots or []), GPU_TAG)


@task
def write_params(repo: str, preset: str | None, overrides: list[str]) -> Params:
    """Validate the run's params before any stage starts, then write them to params.yaml."""
    path = Path(repo) / PARAMS_FILE
    if preset:
        params = validate(apply_overrides(preset_dict(preset), overrides))
    else:
        params = load_params(path, overrides)
    if preset or overrides:
        write_text(path, dump_params(params))
    return params


@task
def publish_artifacts(repo: str, ran: list[str]) -> None:
    """A metrics table, the stages with their MLflow runs, and the sample gallery in the Prefect UI
    (what they say: flows/report.py)."""
    from stages.common import tracking_uri

    rows = report.metric_rows(repo, ran)
    if rows:
        create_table_artifact(key="vqvp-metrics", table=rows, description="metrics/*.json after this run")
    with _in_repo(repo):
        urls = report.stage_run_urls(tracking_uri(), flow_run.id)
    for stage, (run_id, url) in urls.items():  # one link per stage run, in the flow run's Artifacts tab
        create_link_artifact(key=report.link_key(stage), link=url, link_text=f"{stage}: MLflow run {run_id}",
                             description=f"the MLflow run of stage {stage}")
    create_markdown_artifact(key="vqvp-summary", markdown=report.summary(ran, report.markdown_links(urls)),
                             description="stages and their MLflow runs")
    gallery = report.gallery(repo)
    if gallery:
        create_markdown_artifact(key="vqvp-samples", markdown=gallery, description="predicted samples")


@flow(name="vqvp-pipeline", log_prints=True)
def pipeline(preset: str | None = "tiny", overrides: list[str] | None = None, repo: str = ".",
             stages: list[str] | None = None, gpu_slots: int | None = None,
             remote: bool = False) -> list[str]:
    """The end-to-end pipeline: params first (validated), then every stage in order; `remote`:
    each stage pulls its inputs from the DVC remote and pushes its outputs (see `repro`).
    Returns the stages DVC ran (those it found up to date are skipped, and not listed)."""
    overrides, repo = list(overrides or []), str(Path(repo).resolve())
    params = write_params(repo, preset, overrides)
    ensure_gpu_limit(gpu_slots)
    known = dag_stages(repo)
    todo = list(stages or known)
    unknown = [s for s in todo if s not in known]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; stages are {list(known)}")
    todo = [s for s in known if s in todo]  # pipeline order, whatever order they were given in
    with _in_repo(repo), parent_run(f"pipeline {flow_run.name or ''}".strip(), _flow_tags(),
                                    {"preset": params.preset, "overrides": " ".join(overrides), "stages": ",".join(todo)}) as run_id:
        executed = [name for stage in todo for name in stage_task(stage, params.flow.timeout(stage), repo)(
            stage, repo, parent_run_id=run_id, remote=remote)]
    publish_artifacts(repo, todo)
    return executed


def stage_task(stage: str, timeout_s: float | None = None, repo: str | None = None):
    """The repro task, tagged with the stage's name and `gpu` or `cpu`, stopped after `timeout_s`
    (params `flow.stage_timeout_s` / `flow.timeout_s.STAGE`)."""
    return repro.with_options(name=f"repro-{stage}", timeout_seconds=timeout_s,
                              tags={"vqvp-stage", stage, GPU_TAG if placement(stage, repo) == "gpu" else "cpu"})


def _flow_tags() -> dict[str, str]:
    tags = {"vqvp.prefect_flow_run_id": str(flow_run.id or "")}
    if flow_run.ui_url:
        tags["vqvp.prefect_flow_run_url"] = flow_run.ui_url
    return tags


@flow(name="vqvp-rerun", log_prints=True)
def rerun(stage: str, downstream: bool = False, repo: str = ".", gpu_slots: int | None = None,
          remote: bool = False) -> list[str]:
    """Force one stage (or it and everything after it) to run again through DVC; returns the stages
    DVC ran."""
    if stage not in dag_stages(repo):
        raise ValueError(f"unknown stage {stage!r}; stages are {list(dag_stages(repo))}")
    ensure_gpu_limit(gpu_slots)
    repo = str(Path(repo).resolve())
    ran = downstream_of(stage, repo) if downstream else [stage]
    with _in_repo(repo), parent_run(f"rerun {stage}", _flow_tags(), {"stage": stage, "downstream": downstream}) as run_id:
        flow_params = load_params(Path(repo) / PARAMS_FILE).flow
        timeout = sum(flow_params.timeout(s) for s in ran)  # --downstream: one `dvc repro` runs them all
        executed = stage_task(stage, timeout, repo)(stage, repo, force=True, downstream=downstream, parent_run_id=run_id,
                                              remote=remote)
    publish_artifacts(repo, ran)
    return executed
