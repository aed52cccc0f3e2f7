"""vqvp core library: video I/O, datasets, models, training, sampling, metrics.

Never imports prefect, mlflow or dvc (see DESIGN.md, "Layers")."""
