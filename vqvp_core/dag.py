"""The pipeline's graph, read from dvc.yaml, its one source: the stages in order, where each runs,
and which depend on which.

    stages()              ('ingest', 'train_vqvae', ...)   the order of dvc.yaml
    placement('sample')   'gpu'                           the stage's `meta: {placement: gpu|cpu}`
    gpu_stages()          the stages placed on 'gpu'
    downstream_of('train_top_prior')   that stage and every stage that reads its outs, transitively

A GPU stage holds one of the machine's GPU slots while it runs (stages/gpu_slot.py), its Prefect
task carries the `gpu` tag, and its deployment goes to the GPU work pool (infra/prefect.yaml).
To add a stage: a module `stages/NAME.py` with `main(argv=None)`, an entry in dvc.yaml with its
`cmd`, `outs` and `meta.placement`, then `python scripts/dvc_graph.py --write` for its deps and params.

Which dvc.yaml: ``repo``'s when given, else the working directory's (a stage runs in its
workspace), else the one in ``$VQVP_WORKDIR`` (the container image's copy of the project), else
the one of the checkout this package lives in. Commands that need no pipeline (predict,
human-eval, params) work without any.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

PLACEMENTS = ("cpu", "gpu")
_CHECKOUT = Path(__file__).resolve().parents[1]


class DagError(ValueError):
    """dvc.yaml is missing, or a stage in it lacks what the pipeline needs."""


def dvc_file(repo: str | Path | None = None) -> Path:
    if repo is not None:
        return Path(repo) / "dvc.yaml"
    here = Path.cwd() / "dvc.yaml"
    candidates = [here, *([Path(os.environ["VQVP_WORKDIR"]) / "dvc.yaml"] if os.environ.get("VQVP_WORKDIR") else []),
                  _CHECKOUT / "dvc.yaml"]
    return next((c for c in candidates if c.is_file()), here)


@lru_cache(maxsize=8)
def _load(path: Path, mtime_ns: int) -> dict[str, dict[str, Any]]:
    import yaml

    try:
        stages = (yaml.safe_load(path.read_text()) or {}).get("stages")
    except (OSError, yaml.YAMLError) as e:
        raise DagError(f"cannot read {path}: {e}") from e
    if not isinstance(stages, dict) or not stages:
        raise DagError(f"{path} has no stages")
    for name, spec in stages.items():
        where = ((spec or {}).get("meta") or {}).get("placement")
        if where not in PLACEMENTS:
            raise DagError(f"{path}: stage {name!r} needs meta.placement, one of {PLACEMENTS} (got {where!r})")
    return stages


def graph(repo: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """dvc.yaml's stages, {name: spec}, in file order (re-read when the file changes)."""
    path = dvc_file(repo)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as e:
        raise DagError(f"{path} not found: the pipeline's stages are defined there") from e
    return _load(path, mtime)


def stages(repo: str | Path | None = None) -> tuple[str, ...]:
    return tuple(graph(repo))


def placement(stage: str, repo: str | Path | None = None) -> str:
    g = graph(repo)
    if stage not in g:
        raise KeyError(f"unknown stage {stage!r}; stages are: {', '.join(g)}")
    return g[stage]["meta"]["placement"]


def gpu_stages(repo: str | Path | None = None) -> tuple[str, ...]:
    return tuple(s for s, spec in graph(repo).items() if spec["meta"]["placement"] == "gpu")


def _paths(items) -> list[str]:
    return [str(i if isinstance(i, str) else next(iter(i))) for i in items or []]


def downstream_of(stage: str, repo: str | Path | None = None) -> list[str]:
    """`stage` and every stage whose deps include its outs (or a path inside them), directly or
    through others, in pipeline order."""
    g = graph(repo)
    if stage not in g:
        raise KeyError(f"unknown stage {stage!r}; stages are: {', '.join(g)}")
    outs = {name: _paths(spec.get("outs")) for name, spec in g.items()}
    found = {stage}
    for name, spec in g.items():  # dvc.yaml order: a stage comes after the stages it reads
        deps = _paths(spec.get("deps"))
        if any(d == o or d.startswith(o.rstrip("/") + "/") for p in found for o in outs[p] for d in deps):
            found.add(name)
    return [s for s in g if s in found]
