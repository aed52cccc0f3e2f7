"""The `vqvp` commands that are not pipeline stages: `predict`, `lineage`, `human-eval`. Each has
`main(argv=None) -> int`; flows/cli.py dispatches to them. They use the library (vqvp_core) and,
for models registered in MLflow, the stage helpers; no stage imports them."""
