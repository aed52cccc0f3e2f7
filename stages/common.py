"""The stage convention, shared by every stage module.

A stage is `main(argv=None) -> int`: parse `-S section.key=value` overrides, load and validate
`params.yaml` (bad values fail here, before any work), open an MLflow run tagged with the git
commit, the stage and its params, run the body, log its metrics. `dvc.yaml` runs exactly
`vqvp stage NAME`, which calls that `main`.

Exit codes: 0 ok; 2 bad params; 3 bad input data (both permanent: the flow does not retry
them); 1 anything else (possibly transient: the flow retries).
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from vqvp_core.config import PARAMS_FILE, ConfigError, Params, flatten, load_params

log = logging.getLogger("vqvp.stage")

EXIT_OK, EXIT_ERROR, EXIT_BAD_PARAMS, EXIT_BAD_INPUT = 0, 1, 2, 3
EXPERIMENT = "vqvp"
# Set by the Prefect flow so that stage runs nest under the flow's parent run.
ENV_PARENT_RUN = "VQVP_PARENT_RUN_ID"
ENV_FLOW_RUN = "VQVP_FLOW_RUN_ID"
# Processes per machine for the training stages: an integer, or `gpu` (one per visible GPU).
# Above 1, `vqvp stage train_*` relaunches itself under torchrun, so `dvc repro`, `vqvp run`
# and a GPU work pool's job (which sets this variable) train on every GPU of the machine.
ENV_NPROC = "VQVP_NPROC_PER_NODE"
# Set by the Prefect flow to its own pid: a stage whose flow process is gone (killed, even with
# SIGKILL) stops itself, so it never keeps a GPU slot or a workspace lock for a run nobody waits on.
ENV_FLOW_PID = "VQVP_FLOW_PID"
WATCH_FLOW_EVERY_S = 2.0


class BadInputError(RuntimeError):
    """The stage's input data cannot give any output (e.g. no clip survived ingest)."""


def git_commit(cwd: str | Path = ".") -> str:
    """HEAD of the checkout; in a container without .git, the commit the image was built from."""
    if os.environ.get("VQVP_GIT_COMMIT"):
        return os.environ["VQVP_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


EXPERIMENT_WORKSPACES = (".dvc", "tmp", "exps")  # where DVC runs `dvc exp run --temp` / --queue experiments


def home_workspace(cwd: Path | None = None) -> Path:
    """The project's workspace: the working directory, or, inside the temporary copy DVC runs an
    experiment in (`dvc exp run --temp` or `--queue`: <project>/.dvc/tmp/exps/...), the project
    it was copied from, so that the MLflow store and the checkpoints outlive the copy."""
    cwd = (cwd or Path.cwd()).resolve()
    parts, n = cwd.parts, len(EXPERIMENT_WORKSPACES)
    for i in range(len(parts) - n, 0, -1):
        if parts[i:i + n] == EXPERIMENT_WORKSPACES:
            return Path(*parts[:i])
    return cwd


def local_store() -> str:
    """The default MLflow store: a SQLite file in the project's workspace (no server)."""
    return f"sqlite:///{home_workspace() / 'mlflow.db'}"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the local store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or local_store()


def open_experiment(mlflow) -> None:
    """Point `mlflow` at the store and the vqvp experiment; a new experiment in the default local
    store keeps its artifacts in the project's mlruns/ (MLflow's default is the working
    directory's, which for a DVC experiment is a temporary copy)."""
    uri = tracking_uri()
    local = uri == local_store()  # (not a server, nor a store someone chose)
    mlflow.set_tracking_uri(uri)  # (MLflow also exports it as MLFLOW_TRACKING_URI)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    if local and mlflow.get_experiment_by_name(name) is None:
        try:
            mlflow.create_experiment(name, artifact_location=(home_workspace() / "mlruns").as_uri())
        except Exception as exc:  # created meanwhile by a stage running beside this one
            if mlflow.get_experiment_by_name(name) is None:
                raise RuntimeError(f"cannot create the MLflow experiment {name!r} in {uri}: {exc}") from exc
    mlflow.set_experiment(name)


@dataclass
class StageContext:
    name: str
    params: Params
    mlflow: Any  # the mlflow module, with this stage's run active

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        self.mlflow.log_metrics(clean, step=step)

    @contextmanager
    def artifact_dir(self, artifact_path: str | None = None) -> Iterator[Path]:
        """A temporary folder whose files are logged as artifacts when the block ends."""
        with tempfile.TemporaryDirectory(prefix=f"vqvp-{self.name}-") as tmp:
            yield Path(tmp)
            self.mlflow.log_artifacts(tmp, artifact_path=artifact_path)


def parser(name: str, description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"vqvp stage {name}", description=description)
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a params value for this invocation only (repeatable); params.yaml is "
                         "not changed (vqvp run -S writes it)")
    ap.add_argument("--params", default=PARAMS_FILE, help="params file (default: %(default)s)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def rank() -> int:
    """This process's rank under torchrun (0 without it). Only rank 0 logs and writes outs."""
    return int(os.environ.get("RANK", "0"))


class _OtherRank:
    """Stands in for `mlflow` on ranks > 0 under torchrun: rank 0 alone records the run."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


@contextmanager
def mlflow_run(name: str, params: Params, section: str) -> Iterator[Any]:
    if rank() != 0:
        yield _OtherRank()
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no phoning home from pipeline stages
    import mlflow

    open_experiment(mlflow)
    commit = git_commit()
    tags = {"vqvp.stage": name, "vqvp.preset": params.preset, "mlflow.source.git.commit": commit,
            "vqvp.git_commit": commit}
    if os.environ.get(ENV_FLOW_RUN):
        tags["vqvp.prefect_flow_run_id"] = os.environ[ENV_FLOW_RUN]
    parent = os.environ.get(ENV_PARENT_RUN)
    # training stages log MLflow's system metrics (CPU, memory; GPU where present): system/*
    system = name.startswith("train_")
    with mlflow.start_run(run_name=name, tags=tags, parent_run_id=parent or None, nested=bool(parent),
                          log_system_metrics=system):
        values = {"preset": params.preset}
        if getattr(params, section, None) is not None:
            values.update(flatten(getattr(params, section).model_dump(mode="json"), f"{section}."))
        mlflow.log_params({k: str(v)[:6000] for k, v in values.items()})
        yield mlflow


def nproc_per_node(env: dict[str, str] | None = None) -> int:
    """The process count asked for by VQVP_NPROC_PER_NODE (1 when unset)."""
    value = (os.environ if env is None else env).get(ENV_NPROC, "").strip().lower()
    if not value:
        return 1
    if value == "gpu":
        import torch

        return max(torch.cuda.device_count(), 1)
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{ENV_NPROC} = {value!r}: expected a whole number >= 1 or 'gpu'")
    return int(value)


def relaunch_under_torchrun(name: str, argv: list[str] | None, nproc: int) -> int:
    """Run this stage again as `nproc` DDP processes (torchrun --standalone); its exit code.

    A worker's failure makes torchrun exit 1 (so the flow retries it); bad params never get here."""
    rest = list(sys.argv[1:] if argv is None else argv)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "flows.cli", "stage", name, *rest]
    print(f"vqvp stage {name}: {nproc} processes under torchrun ({ENV_NPROC})", file=sys.stderr, flush=True)
    return subprocess.run(cmd).returncode


def run_stage(name: str, argv: list[str] | None, description: str,
              body: Callable[[StageContext, argparse.Namespace], None],
              configure: Callable[[argparse.ArgumentParser], None] | None = None,
              section: str | None = None, distributed: bool = False) -> int:
    """Run a stage body; `section` is its params.yaml section (default: the stage's name).

    `distributed` stages (training) relaunch themselves under torchrun when VQVP_NPROC_PER_NODE
    asks for more than one process, after their params have been validated."""
    ap = parser(name, description)
    if configure:
        configure(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = load_params(args.params, args.overrides)
        nproc = nproc_per_node() if distributed and "LOCAL_RANK" not in os.environ else 1
    except ConfigError as exc:
        print(f"vqvp stage {name}: {exc}", file=sys.stderr)
        return EXIT_BAD_PARAMS
    _watch_flow(name)
    from stages.gpu_slot import acquire as gpu_slot
    from vqvp_core.dag import placement

    on_gpu = placement(name) == "gpu" and "LOCAL_RANK" not in os.environ
    placed = gpu_slot(name, say=_say) if on_gpu else nullcontext()
    with placed:
        if nproc > 1:
            return relaunch_under_torchrun(name, argv, nproc)
        return _run_body(name, params, section, body, args)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_body(name: str, params: Params, section: str | None, body, args) -> int:
    try:
        with mlflow_run(name, params, section or name) as mlflow:
            body(StageContext(name, params, mlflow), args)
    except ConfigError as exc:
        print(f"vqvp stage {name}: {exc}", file=sys.stderr)
        return EXIT_BAD_PARAMS
    except (BadInputError, FileNotFoundError) as exc:  # bad or missing input data (an upstream out)
        print(f"vqvp stage {name}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _process_start(pid: int) -> str | None:
    """The start time of a process (Linux /proc), to tell it from a later one with its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _watch_flow(name: str) -> None:
    """Under the flow (ENV_FLOW_PID): a daemon thread that stops this stage when the flow is gone."""
    value = os.environ.get(ENV_FLOW_PID, "")
    if not value.isdigit() or rank() != 0:
        return
    import signal
    import threading

    pid = int(value)
    started = _process_start(pid)

    def alive() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return started is None or _process_start(pid) == started

    def watch() -> None:
        while alive():
            time.sleep(WATCH_FLOW_EVERY_S)
        _say(f"vqvp stage {name}: the vqvp run that started it (pid {pid}) is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="vqvp-watch-flow", daemon=True).start()
