"""vqvp's models as MLflow pyfunc models, logged as code (MLflow's "models from code": this file
is stored with each logged model and run when the model loads; nothing is pickled, and the
weights are the project's own model files, read with torch.load(weights_only=True)). The
library travels with the model (`code_paths`), so it loads where vqvp is not installed.

`role` (the logged model's `model_config`) says what it is:

- `predictor` (registered as `vqvp-predictor`): the three models together.
  input   uint8 (N, 4, H, W, 3), any H, W: the 4 given frames, centre-cropped square and scaled
          to the models' frame size S as ingest scales frames
  params  `temperature` (default: the sample stage's), `top_k` (0 = all codes), `seed`
  output  uint8 (N, 16, S, S, 3): the 4 given frames decoded, then the 12 predicted
- `video_predictor` (registered as `vqvp-video-predictor`): the same, from videos.
  input   a table with a string column `video`: paths or URLs (anything fsspec opens: s3://,
          https://), in any format PyAV reads
  params  those of `predictor`, and `start`: the first given frame, counted at the training fps
  output  uint8 (N, 16, S, S, 3): for each video, 4 frames from `start` (resampled to the training
          fps and resized/cropped to S exactly as ingest does) decoded, then the 12 predicted
- `vqvae`: input uint8 clips (N, T, S, S, 3), T a multiple of 4 -> their reconstructions.
- `top_prior`, `bottom_prior`: no prediction of their own (a prior predicts codes inside the
  predictor); `unwrap_python_model().model` is the torch module, as for every role.
"""
from __future__ import annotations

import os

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

COMPONENTS = ("vqvae", "top_prior", "bottom_prior")


class VqvpModel(PythonModel):
    def load_context(self, context) -> None:
        from vqvp_core.models.registry import load_model
        from vqvp_core.sampling.predict import Predictor
        from vqvp_core.train.loop import resolve_device

        self.config = dict(context.model_config or {})
        self.role = self.config.get("role", "predictor")
        device = resolve_device(os.environ.get("VQVP_DEVICE", "auto"))  # auto: a GPU if there is one
        if self.role in ("predictor", "video_predictor"):
            self.model = Predictor.from_files(*(context.artifacts[k] for k in COMPONENTS), device=device)
        else:
            self.model = load_model(context.artifacts["model"], self.role, device)

    def predict(self, context, model_input, params: dict | None = None) -> np.ndarray:
        params = dict(params or {})
        if self.role == "video_predictor":
            return self._predict_video(self._read_videos(model_input, params), params)
        if self.role == "predictor":
            return self._predict_video(np.asarray(model_input), params)
        if self.role == "vqvae":
            return self._reconstruct(np.asarray(model_input))
        raise ValueError(f"a {self.role} predicts codes only inside the video predictor: load "
                         f"models:/vqvp-predictor@ALIAS, or unwrap_python_model().model for the torch module")

    def _read_videos(self, model_input, params: dict) -> np.ndarray:
        """The 4 given frames of each video in the input's `video` column, as ingest reads them."""
        from vqvp_core.clip import GIVEN_FRAMES
        from vqvp_core.video.io import VideoError, read_clip

        videos = [str(v) for v in model_input["video"]]  # the signature's string column
        if not videos:
            raise ValueError("no videos given: the input needs a column `video` of paths or URLs")
        fps, size = float(self.config["fps"]), self.model.vqvae.config.size
        start = int(params.get("start") or 0)
        if start < 0:
            raise ValueError(f"start = {start}: expected a frame index >= 0")
        out = []
        for video in videos:
            try:
                out.append(read_clip(video, fps, size, start, frames=GIVEN_FRAMES, need=GIVEN_FRAMES))
            except VideoError as exc:
                raise ValueError(f"cannot read {video}: {exc.message}") from None
        return np.stack(out)

    def _predict_video(self, frames: np.ndarray, params: dict) -> np.ndarray:
        from vqvp_core.clip import GIVEN_FRAMES
        from vqvp_core.video.transform import shrink_to_square

        if frames.ndim != 5 or frames.shape[1] != GIVEN_FRAMES or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"input must be uint8 (N, {GIVEN_FRAMES}, H, W, 3): the given frames, RGB; "
                             f"got {frames.dtype} {frames.shape}")
        size = self.model.vqvae.config.size
        frames = shrink_to_square(frames, size, upscale=True)  # as ingest: centre square, scaled to size
        top_k = int(params.get("top_k") or 0) or None
        temperature = params.get("temperature")
        temperature = float(self.config["temperature"] if temperature is None else temperature)
        seed = int(params.get("seed") if params.get("seed") is not None else self.config.get("seed", 0))
        if temperature < 0:
            raise ValueError(f"temperature = {temperature}: expected >= 0 (0 = greedy)")
        return self.model.predict(frames, temperature, top_k, seed, batch_size=int(self.config.get("batch_size", 16)))

    def _reconstruct(self, clips: np.ndarray):
        from vqvp_core.models.vqvae import reconstruct

        size = self.model.config.size
        if clips.ndim != 5 or clips.shape[1] % 4 or clips.shape[2:] != (size, size, 3) or clips.dtype != np.uint8:
            raise ValueError(f"input must be uint8 clips (N, T, {size}, {size}, 3), T a multiple of 4; "
                             f"got {clips.dtype} {clips.shape}")
        return reconstruct(self.model, clips)


mlflow.models.set_model(VqvpModel())
