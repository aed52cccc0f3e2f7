"""One module per pipeline stage; each has `main(argv=None) -> int`, run by `vqvp stage NAME`.

Which stages there are, in which order and where each runs (cpu or gpu) is dvc.yaml's to say
(`vqvp_core/dag.py` reads it); the helpers beside them (common, training, priors, gpu_slot) are
what the stages share.
"""
from __future__ import annotations

import importlib


def stage_main(name: str):
    from vqvp_core.dag import stages

    if name not in stages():
        raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(stages())}")
    return importlib.import_module(f"stages.{name}").main
