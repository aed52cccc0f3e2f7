"""The Prefect flow on a real (temporary) Prefect API, running real DVC stages."""
import json

import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import StageFailed, pipeline, rerun
from tests.conftest import TINY_INGEST

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_flow_runs_stages_through_dvc(prefect_api, repo):
    ran = pipeline(preset="tiny", overrides=TINY_INGEST, repo=str(repo))
    assert ran == ["ingest"]
    assert json.loads((repo / "metrics/ingest.json").read_text())["clips"] == 12
    assert "ingest.synthetic.n_videos" not in (repo / "params.yaml").read_text()  # written as YAML sections
    assert "n_videos: 6" in (repo / "params.yaml").read_text()
    assert (repo / "dvc.lock").exists()
    # rerun forces the stage again; outputs are byte-identical, so dvc.lock does not change
    lock = (repo / "dvc.lock").read_text()
    assert rerun(stage="ingest", repo=str(repo)) == ["ingest"]
    assert (repo / "dvc.lock").read_text() == lock


def test_flow_bad_params_fail_before_any_stage(prefect_api, repo):
    with pytest.raises(Exception, match="ingest.size = 30"):
        pipeline(preset="tiny", overrides=["ingest.size=30"], repo=str(repo))
    assert not (repo / "data/clips").exists()


def test_flow_does_not_retry_bad_input(prefect_api, repo, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StageFailed) as info:
        pipeline(preset="tiny", overrides=[f"ingest.source={tmp_path / 'empty'}"], repo=str(repo))
    assert info.value.exit_code == 3
