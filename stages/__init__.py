"""One module per pipeline stage; each has `main(argv=None) -> int`, run by `vqvp stage NAME`.

STAGES lists them in pipeline order (the order of `dvc.yaml`). Only stages that really exist
are listed: the pipeline grows as they are built.
"""
from __future__ import annotations

import importlib

STAGES: tuple[str, ...] = ("ingest", "train_vqvae", "extract_latents", "train_top_prior", "train_bottom_prior",
                           "sample", "evaluate", "package_human_eval")

# Stages that want an accelerator: each holds one of the machine's GPU slots while it runs
# (stages/gpu_slot.py), their Prefect tasks carry the `gpu` tag, and the GPU work pool's
# deployments (infra/prefect.yaml) pick them up.
GPU_STAGES: tuple[str, ...] = ("train_vqvae", "extract_latents", "train_top_prior", "train_bottom_prior",
                               "sample", "evaluate")


def stage_main(name: str):
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    return importlib.import_module(f"stages.{name}").main
