"""The pipeline's graph comes from dvc.yaml alone: order, placement, downstream stages."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from vqvp_core import dag

ROOT = Path(__file__).resolve().parents[2]


def write(repo: Path, stages: dict) -> Path:
    repo.mkdir(exist_ok=True)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return repo


TOY = {
    "get": {"cmd": "x", "meta": {"placement": "cpu"}, "outs": ["data/raw"]},
    "fit": {"cmd": "x", "meta": {"placement": "gpu"}, "deps": ["data/raw", "code.py"], "outs": ["models/m"]},
    "side": {"cmd": "x", "meta": {"placement": "cpu"}, "deps": ["data/raw/part"], "outs": [{"data/side": {"cache": True}}]},
    "use": {"cmd": "x", "meta": {"placement": "gpu"}, "deps": ["models/m"], "outs": ["out"]},
    "alone": {"cmd": "x", "meta": {"placement": "cpu"}, "deps": ["code.py"]},
}


def test_the_repositorys_dvc_yaml_defines_every_stage_and_its_placement():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert dag.stages(ROOT) == tuple(spec)
    assert dag.stages(ROOT)[0] == "ingest" and "package_human_eval" in dag.stages(ROOT)
    assert set(dag.gpu_stages(ROOT)) == {s for s, v in spec.items() if v["meta"]["placement"] == "gpu"}
    assert dag.placement("ingest", ROOT) == "cpu" and dag.placement("train_vqvae", ROOT) == "gpu"
    for name in dag.stages(ROOT):  # every stage listed there is a module with main()
        assert (ROOT / "stages" / f"{name}.py").is_file(), name


def test_downstream_follows_outs_into_deps(tmp_path):
    repo = write(tmp_path / "r", TOY)
    assert dag.downstream_of("get", repo) == ["get", "fit", "side", "use"]  # a dep inside an out counts
    assert dag.downstream_of("fit", repo) == ["fit", "use"]
    assert dag.downstream_of("alone", repo) == ["alone"]
    with pytest.raises(KeyError, match="unknown stage 'nope'"):
        dag.downstream_of("nope", repo)


def test_placement_is_read_from_the_file_and_follows_its_changes(tmp_path):
    repo = write(tmp_path / "r", TOY)
    assert dag.gpu_stages(repo) == ("fit", "use")
    moved = {**TOY, "fit": {**TOY["fit"], "meta": {"placement": "cpu"}}}
    write(repo, moved)
    os.utime(repo / "dvc.yaml", ns=(1, 1))  # a different mtime even on a coarse clock
    assert dag.placement("fit", repo) == "cpu" and dag.gpu_stages(repo) == ("use",)


@pytest.mark.parametrize("meta", [None, {}, {"placement": "tpu"}])
def test_a_stage_without_a_valid_placement_is_an_error_naming_it(tmp_path, meta):
    bad = {**TOY, "fit": {k: v for k, v in TOY["fit"].items() if k != "meta"}}
    if meta is not None:
        bad["fit"]["meta"] = meta
    repo = write(tmp_path / "r", bad)
    with pytest.raises(dag.DagError, match="stage 'fit' needs meta.placement"):
        dag.stages(repo)


def test_a_missing_dvc_yaml_says_where_it_looked(tmp_path):
    with pytest.raises(dag.DagError, match="dvc.yaml not found"):
        dag.stages(tmp_path)


def test_the_flow_tags_follow_the_placement(tmp_path):
    from flows.pipeline import GPU_TAG, stage_task

    repo = write(tmp_path / "r", TOY)
    assert GPU_TAG in stage_task("fit", repo=str(repo)).tags
    assert "cpu" in stage_task("get", repo=str(repo)).tags and GPU_TAG not in stage_task("get", repo=str(repo)).tags


def test_commands_that_need_no_pipeline_work_without_a_dvc_yaml(tmp_path, monkeypatch):
    """Outside a project (a pip install, a mounted workspace): `vqvp -h`, params and the commands
    that are not stages work; the stages find dvc.yaml in $VQVP_WORKDIR (the image's project)."""
    from flows.cli import build_parser
    from vqvp_core.config import load_params

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dag, "_CHECKOUT", tmp_path / "nowhere")
    monkeypatch.delenv("VQVP_WORKDIR", raising=False)
    with pytest.raises(dag.DagError, match="dvc.yaml not found"):
        dag.stages()
    assert build_parser().parse_args(["human-eval", "raters", "x"]).command == "raters"
    assert load_params(None).ingest.size == 64
    monkeypatch.setenv("VQVP_WORKDIR", str(ROOT))
    assert dag.stages()[0] == "ingest" and dag.placement("sample") == "gpu"


def test_a_stage_outside_any_project_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from flows.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dag, "_CHECKOUT", tmp_path / "nowhere")
    monkeypatch.delenv("VQVP_WORKDIR", raising=False)
    assert main(["stage", "ingest"]) == 2
    err = capsys.readouterr().err
    assert "dvc.yaml not found" in err and "VQVP_WORKDIR" in err
