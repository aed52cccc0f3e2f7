"""One way to save and load a model (diffusers' ``from_pretrained`` idea): a model file is one dict

    format      MODEL_FORMAT (1)
    kind        "vqvae" | "top_prior" | "bottom_prior": which (Model, Config) pair builds it
    config      the model's config (``Config.to_dict()``): nothing is rebuilt from defaults
    state_dict  the weights, on the CPU
    ...         whatever the writer adds (step, metrics, fingerprint, data_source, train_config)

written atomically (temp file, fsync, rename) and read with ``torch.load(weights_only=True)``, so
loading a model never unpickles code. Every stage, ``vqvp predict``, the evaluation and the MLflow
predictor save and load through :func:`save_model` / :func:`load_model`.

Files written before ``kind`` existed (vqvp before issue 15) load when the caller says which kind
it expects; without that they fail with a message saying so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

MODEL_FORMAT = 1


class ModelFileError(ValueError):
    """A file that is not a vqvp model file, or not of the expected kind."""


def kinds() -> dict[str, tuple[type, type]]:
    """kind -> (Model, Config)."""
    from vqvp_core.models.bottom_prior import BottomPrior, BottomPriorConfig
    from vqvp_core.models.top_prior import TopPrior, TopPriorConfig
    from vqvp_core.models.vqvae import VQVAE, VQVAEConfig

    return {"vqvae": (VQVAE, VQVAEConfig), "top_prior": (TopPrior, TopPriorConfig),
            "bottom_prior": (BottomPrior, BottomPriorConfig)}


def kind_of(model: torch.nn.Module) -> str:
    """The registry kind of a model (unwrapping DDP's ``.module``)."""
    model = getattr(model, "module", model)
    for kind, (model_cls, _) in kinds().items():
        if type(model) is model_cls:
            return kind
    raise TypeError(f"{type(model).__name__} is not a registered vqvp model ({', '.join(kinds())})")


def build_model(kind: str, config: dict[str, Any]) -> torch.nn.Module:
    """A fresh model of ``kind`` from its config dict (validated by the Config)."""
    if kind not in kinds():
        raise ModelFileError(f"unknown model kind {kind!r}: expected one of {', '.join(kinds())}")
    model_cls, cfg_cls = kinds()[kind]
    return model_cls(cfg_cls.from_dict(config))


def save_model(path: str | Path, model: torch.nn.Module, **extra: Any) -> Path:
    """Write ``model`` (its kind, config and CPU weights, plus ``extra``) to ``path`` atomically."""
    from vqvp_core.train.checkpoint import atomic_torch_save

    model = getattr(model, "module", model)
    kind = kind_of(model)
    clash = {"format", "kind", "config", "state_dict"} & set(extra)
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} would overwrite the model file's own")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_torch_save({"format": MODEL_FORMAT, "kind": kind, "config": model.config.to_dict(),
                              "state_dict": state, **extra}, path)


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The model file's dict (weights on the CPU), checked to be one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (a model file written by a vqvp training stage)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the path
        raise ModelFileError(f"{path} is not a vqvp model file: {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict) or "config" not in obj or "state_dict" not in obj:
        raise ModelFileError(f"{path} is not a vqvp model file: expected a dict with 'config' and 'state_dict'")
    if obj.get("format", MODEL_FORMAT) > MODEL_FORMAT:
        raise ModelFileError(f"{path} has model file format {obj['format']}; this vqvp reads up to "
                             f"{MODEL_FORMAT}: upgrade vqvp")
    return obj


def load_model(path: str | Path, kind: str | None = None, device: torch.device | str = "cpu",
               obj: dict[str, Any] | None = None) -> torch.nn.Module:
    """The model in ``path`` (or the already-read ``obj``), on ``device``, in eval mode.

    kind: the kind the caller expects; a file of another kind is an error. Needed only for files
    written before model files recorded their kind.
    """
    obj = read_model_file(path) if obj is None else obj
    found = obj.get("kind")
    if found is None and kind is None:
        raise ModelFileError(f"{path} predates model kinds (vqvp before issue 15): "
                             f"load it with kind= one of {', '.join(kinds())}")
    if kind is not None and found is not None and found != kind:
        raise ModelFileError(f"{path} holds a {found} model, not a {kind}")
    kind = found or kind
    if kind not in kinds():
        raise ModelFileError(f"{path}: unknown model kind {kind!r}: expected one of {', '.join(kinds())}")
    try:
        model = build_model(kind, obj["config"])
        model.load_state_dict(obj["state_dict"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path}: its config or weights do not build a {kind}: {e}") from e
    return model.to(device).eval()
