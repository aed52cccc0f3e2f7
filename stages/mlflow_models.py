"""Logging vqvp's models to MLflow as pyfunc models (stages/pyfunc_model.py, logged as code) and
registering them: each trained model on its own (`vqvp-vqvae`, `vqvp-top-prior`,
`vqvp-bottom-prior`), and the video predictor, the three together (`vqvp-predictor`, by the
sample stage). The weights logged are the project's model files (vqvp_core/models/registry.py),
with their config inside: nothing is pickled.

    mlflow.pyfunc.load_model("models:/vqvp-predictor@candidate").predict(frames)   # uint8 (N, 4, H, W, 3)
    mlflow models serve -m models:/vqvp-predictor@candidate --env-manager local
"""
from __future__ import annotations

import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

CODE = Path(__file__).with_name("pyfunc_model.py")
LIBRARY = Path(__file__).resolve().parents[1] / "vqvp_core"  # travels with the model (code_paths)
# what the model code imports, pinned to this environment's versions
REQUIREMENTS = ("torch", "numpy", "pydantic", "av", "tqdm", "mlflow")


def requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:  # pragma: no cover - every one is a dependency of vqvp
            out.append(name)
    return out


def _register(mlflow, info, name: str, alias: str) -> str | None:
    number = getattr(info, "registered_model_version", None)
    if number is None:
        return None
    mlflow.MlflowClient().set_registered_model_alias(name, alias, str(number))
    return f"models:/{name}@{alias}"


def log_component(mlflow, kind: str, model_file: Path, name: str, alias: str, size: int | None = None) -> str | None:
    """One trained model as a pyfunc (`kind` = vqvae | top_prior | bottom_prior), registered as
    `name` with `alias`. Returns the models:/ URI."""
    signature = None
    if kind == "vqvae" and size:
        import numpy as np
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        clips = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, size, size, 3))])
        signature = ModelSignature(inputs=clips, outputs=clips)
    info = mlflow.pyfunc.log_model(name="model", python_model=str(CODE), artifacts={"model": str(model_file)},
                                   code_paths=[str(LIBRARY)], model_config={"role": kind}, signature=signature,
                                   registered_model_name=name, pip_requirements=requirements())
    return _register(mlflow, info, name, alias)


def log_predictor(mlflow, model_files: dict[str, Path], size: int, sampling: dict[str, Any], name: str,
                  alias: str, video: bool = False, fps: float = 8.0) -> str | None:
    """The video predictor (the three model files together) with its signature, sampling params and
    an input example, registered as `name` with `alias`. `sampling`: temperature, top_k, seed,
    batch_size (the defaults a request may override). `video`: its input is a column of video paths
    or URLs, read at `fps` (the training data's) as ingest reads them, instead of frames."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    from vqvp_core.clip import CLIP_FRAMES, GIVEN_FRAMES

    params = [ParamSpec("temperature", "double", float(sampling["temperature"])),
              ParamSpec("top_k", "long", int(sampling.get("top_k") or 0)),
              ParamSpec("seed", "long", int(sampling.get("seed", 0)))]
    if video:
        inputs, example = Schema([ColSpec("string", "video")]), None  # a path would not exist elsewhere
        params.append(ParamSpec("start", "long", 0))
    else:
        inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, GIVEN_FRAMES, -1, -1, 3))])
        example = np.zeros((1, GIVEN_FRAMES, size, size, 3), np.uint8)
    signature = ModelSignature(inputs=inputs, params=ParamSchema(params),
                               outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, CLIP_FRAMES, size, size, 3))]))
    config = {"role": "video_predictor" if video else "predictor", "temperature": float(sampling["temperature"]),
              "seed": int(sampling.get("seed", 0)), "batch_size": int(sampling.get("batch_size", 16)),
              "given_frames": GIVEN_FRAMES, "frames": CLIP_FRAMES, "size": size, "fps": float(fps)}
    with tempfile.TemporaryDirectory() as tmp:  # one name per file: MLflow keeps artifacts by file name
        files = {}
        for kind, path in model_files.items():
            files[kind] = str(Path(tmp) / f"{kind}.pt")
            shutil.copyfile(path, files[kind])
        info = mlflow.pyfunc.log_model(name="predictor", python_model=str(CODE), artifacts=files,
                                       code_paths=[str(LIBRARY)], model_config=config, signature=signature,
                                       input_example=example, registered_model_name=name,
                                       pip_requirements=requirements())
    return _register(mlflow, info, name, alias)


def download_component(ref: str, dst: Path) -> Path:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` of a registered vqvp model -> its model file
    (the pyfunc's `model` artifact), downloaded under dst."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(dst)))
    files = sorted((local / "artifacts").glob("*.pt"))
    if len(files) != 1:
        raise FileNotFoundError(f"{ref} holds no vqvp model file (artifacts/*.pt): logged before vqvp logged "
                                f"its models as pyfunc? Retrain it, or give the model file's path")
    return files[0]
