"""One module per pipeline stage; each has `main(argv=None) -> int`, run by `vqvp stage NAME`.

STAGES lists them in pipeline order (the order of `dvc.yaml`). Only stages that really exist
are listed: the pipeline grows as they are built.
"""
from __future__ import annotations

import importlib

from vqvp_core.stage_names import GPU_STAGES, STAGES  # noqa: F401  (one list: vqvp_core/stage_names.py)


def stage_main(name: str):
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    return importlib.import_module(f"stages.{name}").main
