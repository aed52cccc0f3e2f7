"""The pipeline's stages in order, and which want an accelerator: one list for the params schema
(vqvp_core.config: per-stage timeouts), the stage package and the flows. A constant with no imports,
so `vqvp -h` stays fast; dvc.yaml holds the same stages (tests/integration/test_dvc_graph.py)."""

STAGES: tuple[str, ...] = ("ingest", "train_vqvae", "extract_latents", "train_top_prior", "train_bottom_prior",
                           "sample", "evaluate", "package_human_eval")
# Each holds one of the machine's GPU slots while it runs (stages/gpu_slot.py), their Prefect tasks
# carry the `gpu` tag, and the GPU work pool's deployments (infra/prefect.yaml) pick them up.
GPU_STAGES: tuple[str, ...] = ("train_vqvae", "extract_latents", "train_top_prior", "train_bottom_prior",
                               "sample", "evaluate")
