"""One module per pipeline stage; each has `main(argv=None) -> int`, run by `vqvp stage NAME`.

STAGES lists them in pipeline order (the order of `dvc.yaml`). Only stages that really exist
are listed: the pipeline grows as they are built.
"""
from __future__ import annotations

import importlib

STAGES: tuple[str, ...] = ("ingest", "train_vqvae", "extract_latents", "train_top_prior", "train_bottom_prior",
                           "sample", "evaluate", "package_human_eval")


def stage_main(name: str):
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    return importlib.import_module(f"stages.{name}").main
