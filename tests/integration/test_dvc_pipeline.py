"""The pipeline through real `dvc` commands in a real git repository."""
import json
import re

import pytest

from flows.pipeline import downstream_of
from vqvp_core.dag import stages

STAGES = stages()
from tests.conftest import BIN, FAST, run

pytestmark = pytest.mark.integration


def dvc(repo, *args, check=True):
    return run([str(BIN / "dvc"), *args], repo, check=check)


def set_params(repo, *overrides, preset="tiny"):
    flags = [arg for o in overrides for arg in ("-S", o)]
    text = run([str(BIN / "vqvp"), "params", "--preset", preset, *flags], repo).stdout
    (repo / "params.yaml").write_text(text)


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


@pytest.mark.slow
def test_repro_then_change_one_param(repo):
    set_params(repo, *FAST)
    assert ran(dvc(repo, "repro").stdout) == list(STAGES)
    assert ran(dvc(repo, "repro").stdout) == []  # same inputs, params and code: nothing to do
    assert dvc(repo, "status").stdout.strip().endswith("Data and pipelines are up to date.")
    metrics = json.dumps(json.loads(dvc(repo, "metrics", "show", "--json").stdout))
    for name in ("ingest", "vqvae", "top_prior", "bottom_prior"):
        assert f"metrics/{name}.json" in metrics

    # one param of one stage: that stage is stale; it and the stages after it run, no other
    set_params(repo, *FAST, "top_prior.train.lr=0.002")
    status = dvc(repo, "status").stdout
    assert "train_top_prior" in status and "train_vqvae" not in status and "train_bottom_prior" not in status
    assert ran(dvc(repo, "repro").stdout) == downstream_of("train_top_prior", str(repo))
    assert "train_bottom_prior" not in downstream_of("train_top_prior", str(repo))

    # forcing ingest again gives byte-identical clips, so nothing downstream is stale
    lock = (repo / "dvc.lock").read_text()
    assert ran(dvc(repo, "repro", "--force", "--single-item", "ingest").stdout) == ["ingest"]
    assert (repo / "dvc.lock").read_text() == lock
    assert dvc(repo, "status").stdout.strip().endswith("Data and pipelines are up to date.")


def test_dag_shows_the_pipeline(repo):
    dag = dvc(repo, "dag").stdout
    for stage in STAGES:
        assert stage in dag


def test_bad_params_fail_the_repro(repo):
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("size: 64", "size: 30"))
    proc = dvc(repo, "repro", "--single-item", "ingest", check=False)
    assert proc.returncode != 0
    assert "ingest.size = 30" in proc.stdout + proc.stderr
