"""One module per pipeline stage; each has `main(argv=None) -> int`, run by `vqvp stage NAME`.

Which stages there are, in which order and where each runs (cpu or gpu) is dvc.yaml's to say
(`vqvp_core/dag.py` reads it); the helpers beside them (common, training, priors, gpu_slot) are
what the stages share.
"""
from __future__ import annotations

import importlib
import importlib.util


def stage_main(name: str):
    from vqvp_core.dag import DagError, stages

    try:
        known = stages()
    except DagError:  # a workspace without the project's dvc.yaml: a stage module of this package
        module = _stage_module(name)
        if module is None:
            raise KeyError(f"unknown stage {name!r} (and no dvc.yaml here to list the stages)") from None
        return module.main
    if name not in known:
        raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(known)}")
    return importlib.import_module(f"stages.{name}").main


def _stage_module(name: str):
    """stages.NAME if it is a stage (its docstring starts 'Stage `NAME`'), else None."""
    if not name.isidentifier() or importlib.util.find_spec(f"stages.{name}") is None:
        return None
    module = importlib.import_module(f"stages.{name}")
    return module if (module.__doc__ or "").startswith(f"Stage `{name}`") and hasattr(module, "main") else None
