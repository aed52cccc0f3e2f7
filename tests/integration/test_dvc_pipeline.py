"""The pipeline through real `dvc` commands in a real git repository."""
import json

import pytest

from tests.conftest import BIN, TINY_INGEST, run

pytestmark = pytest.mark.integration


def dvc(repo, *args, check=True):
    return run([str(BIN / "dvc"), *args], repo, check=check)


def set_params(repo, *overrides, preset="tiny"):
    flags = [arg for o in overrides for arg in ("-S", o)]
    text = run([str(BIN / "vqvp"), "params", "--preset", preset, *flags], repo).stdout
    (repo / "params.yaml").write_text(text)


def test_dvc_repro_runs_stage_and_tracks_outs(repo):
    set_params(repo, *TINY_INGEST)
    out = dvc(repo, "repro").stdout
    assert "Running stage 'ingest'" in out
    assert (repo / "data/clips/manifest.parquet").exists()
    lock = (repo / "dvc.lock").read_text()
    assert "data/clips" in lock and "md5" in lock
    # same inputs and params: nothing to do
    assert "didn't change, skipping" in dvc(repo, "repro").stdout or "is up to date" in dvc(repo, "repro").stdout
    assert dvc(repo, "status").stdout.strip().endswith("Data and pipelines are up to date.")
    metrics = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    assert "metrics/ingest.json" in json.dumps(metrics)


def test_forced_rerun_gives_identical_outputs(repo):
    set_params(repo, *TINY_INGEST)
    dvc(repo, "repro")
    before = (repo / "dvc.lock").read_text()
    dvc(repo, "repro", "--force", "ingest")
    assert (repo / "dvc.lock").read_text() == before  # byte-identical outs: same md5s


def test_param_change_reruns_stage(repo):
    set_params(repo, *TINY_INGEST)
    dvc(repo, "repro")
    set_params(repo, *TINY_INGEST, "ingest.stride=8")
    status = dvc(repo, "status").stdout
    assert "ingest" in status and "modified" in status and "params.yaml" in status
    dvc(repo, "repro")
    assert json.loads((repo / "metrics/ingest.json").read_text())["clips"] == 6 * 3


def test_bad_params_fail_the_repro(repo):
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("size: 64", "size: 30"))
    proc = dvc(repo, "repro", check=False)
    assert proc.returncode != 0
    assert "ingest.size = 30" in proc.stdout + proc.stderr
