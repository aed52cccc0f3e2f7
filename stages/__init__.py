"""One module per pipeline stage; each has `main(argv=None) -> int`, run by `vqvp stage NAME`.

Which stages there are, in which order and where each runs (cpu or gpu) is dvc.yaml's to say
(`vqvp_core/dag.py` reads it); the helpers beside them (common, training, priors, gpu_slot) are
what the stages share.
"""
from __future__ import annotations

import importlib


def stage_main(name: str):
    """The `main` of stage `name`; KeyError for a name dvc.yaml does not list (DagError without a
    dvc.yaml: a stage runs in a project, or with $VQVP_WORKDIR naming one)."""
    from vqvp_core.dag import stages

    known = stages()
    if name not in known:
        raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(known)}")
    return importlib.import_module(f"stages.{name}").main
