"""Lineage in MLflow: what the flow records, and `vqvp lineage RUN_ID|models:/NAME@ALIAS`.

The flow opens one parent run per flow run; every stage run nests under it. After each stage,
the flow tags the stage's run with what DVC recorded in dvc.lock: `vqvp.dep.<path>` and
`vqvp.out.<path>` = md5, plus the Prefect flow run id and URL. Stages log their input folders
as MLflow dataset inputs whose digest is the same DVC md5. So from any run (or registered
model) the chain back to the raw source is: input digest -> the run whose out has that md5 ->
its inputs -> ... -> ingest, whose input is the raw source.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import yaml

from stages.common import EXPERIMENT, open_experiment, tracking_uri


@contextlib.contextmanager
def parent_run(name: str, tags: dict[str, str], params: dict[str, Any]) -> Iterator[str]:
    """One MLflow run for a whole flow run; stage runs nest under it (VQVP_PARENT_RUN_ID)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    from stages.common import git_commit

    open_experiment(mlflow)
    with mlflow.start_run(run_name=name, tags={**tags, "vqvp.stage": "pipeline", "vqvp.git_commit": git_commit()}) as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        yield run.info.run_id


def lock_entries(stage: str, lock_file: str | Path = "dvc.lock") -> dict[str, dict[str, str]]:
    """{'deps': {path: md5}, 'outs': {path: md5}} of a stage in dvc.lock (empty if absent)."""
    try:
        entry = (yaml.safe_load(Path(lock_file).read_text()) or {}).get("stages", {}).get(stage, {})
    except (OSError, yaml.YAMLError):
        entry = {}
    return {kind: {d["path"]: d.get("md5", "") for d in entry.get(kind, []) if "path" in d}
            for kind in ("deps", "outs")}


def tag_stage_run(stage: str, flow_run_id: str, flow_run_url: str | None, repo: str = ".") -> str | None:
    """Tag this flow run's MLflow run of `stage` with its dvc.lock md5s; returns the run id."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], f"tags.`vqvp.stage` = '{stage}' and "
                              f"tags.`vqvp.prefect_flow_run_id` = '{flow_run_id}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None  # DVC found the stage up to date: no new run
    run_id = runs[0].info.run_id
    entries = lock_entries(stage, Path(repo) / "dvc.lock")
    for kind, items in entries.items():
        for path, md5 in items.items():
            client.set_tag(run_id, f"vqvp.{kind[:-1]}.{path}", md5)
    client.set_tag(run_id, "vqvp.dvc_lock", json.dumps(entries, sort_keys=True)[:5000])
    if flow_run_url:
        client.set_tag(run_id, "vqvp.prefect_flow_run_url", flow_run_url)
    return run_id


def _resolve(client, ref: str) -> str:
    if ref.startswith("models:/"):
        spec = ref[len("models:/"):]
        if "@" in spec:
            name, alias = spec.split("@", 1)
            return client.get_model_version_by_alias(name, alias).run_id
        name, version = spec.rsplit("/", 1)
        return client.get_model_version(name, version).run_id
    return ref


def producer_of(client, experiment_ids: list[str], path: str, digest: str):
    """The latest run whose DVC out `path` has md5 `digest`."""
    runs = client.search_runs(experiment_ids, f"tags.`vqvp.out.{path}` = '{digest}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def chain(ref: str) -> list[dict[str, Any]]:
    """Walk from a run (or registered model) back to the raw source. One dict per run, breadth first."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri())
    run = client.get_run(_resolve(client, ref))
    exps = [run.info.experiment_id]
    todo, seen, out = [run], set(), []
    while todo:
        run = todo.pop(0)
        if run.info.run_id in seen:
            continue
        seen.add(run.info.run_id)
        node = {"run_id": run.info.run_id, "stage": run.data.tags.get("vqvp.stage", "?"),
                "git_commit": run.data.tags.get("vqvp.git_commit", "?"),
                "flow_run": run.data.tags.get("vqvp.prefect_flow_run_id"),
                "parent_run": run.data.tags.get("mlflow.parentRunId"), "inputs": []}
        for ds in run.inputs.dataset_inputs:
            try:
                spec = json.loads(ds.dataset.source)
                source = spec.get("uri") or spec.get("tags", {}).get("uri") or ds.dataset.source
            except (TypeError, ValueError, AttributeError):
                source = ds.dataset.source or ""
            item = {"name": ds.dataset.name, "digest": ds.dataset.digest, "source": source, "produced_by": None}
            producer = producer_of(client, exps, ds.dataset.name, ds.dataset.digest)
            if producer is not None:
                item["produced_by"] = producer.info.run_id
                todo.append(producer)
            node["inputs"].append(item)
        out.append(node)
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("ref", help="an MLflow run id, or models:/NAME@ALIAS, or models:/NAME/VERSION")
    ap.add_argument("--json", action="store_true", help="print the chain as JSON")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vqvp lineage", description="the runs, datasets and models behind a run or model")
    add_arguments(ap)
    return run(ap.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    try:
        nodes = chain(args.ref)
    except Exception as exc:  # unknown run id, model or alias
        print(f"vqvp lineage: cannot resolve {args.ref!r}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(nodes, indent=2))
        return 0
    for node in nodes:
        print(f"{node['stage']:<20} run {node['run_id']}  commit {node['git_commit'][:10]}"
              + (f"  flow run {node['flow_run']}" if node["flow_run"] else ""))
        for item in node["inputs"]:
            origin = (f"<- run {item['produced_by']}" if item["produced_by"] else "(raw source)"
                      if node["stage"] == "ingest" else "(no producing run found: not run by `vqvp run`?)")
            print(f"    input {item['name']:<14} {item['digest']:<36} {item['source']}  {origin}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
