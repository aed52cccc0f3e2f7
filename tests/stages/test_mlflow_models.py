"""The MLflow video predictor: logged as code with the project's model files, loaded in a fresh
process with mlflow.pyfunc.load_model, and served over HTTP by `mlflow models serve`."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import textwrap
import time
import urllib.request

import numpy as np
import pytest

from tests.conftest import BIN, SMALL_MODEL, TINY_INGEST

SIZE = 32  # TINY_INGEST's frame size
FPS = 8.0  # the training data's rate the video predictor reads videos at


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Small (untrained) models, logged and registered as the sample and training stages do, in a
    private SQLite store. The weights are random: these tests are about loading and serving."""
    import mlflow
    import torch

    from stages.mlflow_models import log_component, log_predictor
    from vqvp_core.config import load_params
    from vqvp_core.models.bottom_prior import BottomPrior
    from vqvp_core.models.registry import save_model
    from vqvp_core.models.top_prior import TopPrior
    from vqvp_core.models.vqvae import VQVAE

    root = tmp_path_factory.mktemp("mlflow_models")
    params = load_params(None, TINY_INGEST + SMALL_MODEL)
    torch.manual_seed(0)
    files = {}
    for kind, model in (("vqvae", VQVAE(params.vqvae.model)), ("top_prior", TopPrior(params.top_prior.model)),
                        ("bottom_prior", BottomPrior(params.bottom_prior.model))):
        files[kind] = save_model(root / kind / "model.pt", model.eval())
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("pyfunc-test", artifact_location=(root / "mlruns").as_uri())  # not the cwd's
    mlflow.set_experiment("pyfunc-test")
    with mlflow.start_run():
        assert log_component(mlflow, "vqvae", files["vqvae"], "vqvp-vqvae", "candidate", SIZE) == "models:/vqvp-vqvae@candidate"
        assert log_component(mlflow, "top_prior", files["top_prior"], "vqvp-top-prior", "candidate") is not None
        got = log_predictor(mlflow, files, SIZE, {"temperature": 0.7, "top_k": None, "seed": 0, "batch_size": 8},
                            "vqvp-predictor", "candidate")
        video = log_predictor(mlflow, files, SIZE, {"temperature": 0.7, "top_k": None, "seed": 0, "batch_size": 8},
                              "vqvp-video-predictor", "candidate", video=True, fps=FPS)
    assert got == "models:/vqvp-predictor@candidate" and video == "models:/vqvp-video-predictor@candidate"
    return {"uri": uri, "files": files, "root": root}


def _given(n=2, h=48, w=40):
    """4 given frames at another size than the models' (cropped square and scaled as ingest does)."""
    return np.random.default_rng(1).integers(0, 256, (n, 4, h, w, 3), dtype=np.uint8)


def _reference(files, given, temperature, seed):
    """The library's own prediction of the same frames."""
    from vqvp_core.sampling.predict import Predictor
    from vqvp_core.video.transform import shrink_to_square

    predictor = Predictor.from_files(files["vqvae"], files["top_prior"], files["bottom_prior"])
    return predictor.predict(shrink_to_square(given, SIZE, upscale=True), temperature, None, seed)


def test_predictor_loads_in_a_fresh_process_and_predicts_as_the_library(store, tmp_path):
    given = _given()
    np.save(tmp_path / "given.npy", given)
    script = textwrap.dedent(f"""
        import mlflow, numpy as np
        mlflow.set_tracking_uri({store['uri']!r})
        model = mlflow.pyfunc.load_model("models:/vqvp-predictor@candidate")
        sig = model.metadata.signature
        assert sig.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 4, -1, -1, 3), sig.inputs.to_dict()
        assert sig.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 16, {SIZE}, {SIZE}, 3)
        assert {{p.name: p.default for p in sig.params}} == {{"temperature": 0.7, "top_k": 0, "seed": 0}}
        given = np.load({str(tmp_path / 'given.npy')!r})
        np.save({str(tmp_path / 'default.npy')!r}, model.predict(given))
        np.save({str(tmp_path / 'seed3.npy')!r}, model.predict(given, params={{"seed": 3, "temperature": 1.0}}))
        try:
            model.predict(given[:, :3])
        except Exception as exc:
            print("REFUSED", exc)
    """)
    # a fresh interpreter, outside the checkout
    out = subprocess.run([str(BIN / "python"), "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "REFUSED" in out.stdout
    default, seeded = np.load(tmp_path / "default.npy"), np.load(tmp_path / "seed3.npy")
    assert default.dtype == np.uint8 and default.shape == (2, 16, SIZE, SIZE, 3)
    assert np.array_equal(default, _reference(store["files"], given, 0.7, 0))  # the logged sampling defaults
    assert np.array_equal(seeded, _reference(store["files"], given, 1.0, 3))  # a request's params are used


def test_video_predictor_reads_paths_as_ingest_does(store, tmp_path):
    """A column of video paths in: 4 frames from `start` read at the training fps and size as ingest
    reads them, then the same prediction as the library's from those frames."""
    from vqvp_core.video.io import decode_frames
    from vqvp_core.video.write import write_video

    rng = np.random.default_rng(3)
    paths = []
    for i, (h, w) in enumerate(((48, 64), (40, 40))):  # real mp4 files, not square, not the models' size
        paths.append(str(write_video(tmp_path / f"v{i}.mp4", rng.integers(0, 256, (12, h, w, 3), dtype=np.uint8),
                                     fps=FPS)))
    script = textwrap.dedent(f"""
        import mlflow, numpy as np, pandas as pd
        mlflow.set_tracking_uri({store['uri']!r})
        model = mlflow.pyfunc.load_model("models:/vqvp-video-predictor@candidate")
        out = model.predict(pd.DataFrame({{"video": {paths!r}}}), params={{"start": 2, "seed": 4}})
        np.save({str(tmp_path / 'out.npy')!r}, out)
        try:
            model.predict(pd.DataFrame({{"video": [{str(tmp_path / 'missing.mp4')!r}]}}))
        except Exception as exc:
            print("REFUSED", exc)
    """)
    run = subprocess.run([str(BIN / "python"), "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "REFUSED" in run.stdout and "missing.mp4" in run.stdout
    given = np.stack([np.stack(list(decode_frames(p, target_fps=FPS, size=SIZE, start_time=2 / FPS, max_frames=4)))
                      for p in paths])
    assert np.array_equal(np.load(tmp_path / "out.npy"), _reference(store["files"], given, 0.7, 4))


def test_components_load_as_pyfunc_without_pickle(store):
    import mlflow
    import torch

    from vqvp_core.models.vqvae import VQVAE

    vqvae = mlflow.pyfunc.load_model("models:/vqvp-vqvae@candidate")
    assert isinstance(vqvae.unwrap_python_model().model, VQVAE)
    clips = np.random.default_rng(2).integers(0, 256, (1, 16, SIZE, SIZE, 3), dtype=np.uint8)
    recon = vqvae.predict(clips)
    assert recon.shape == clips.shape and recon.dtype == np.uint8
    prior = mlflow.pyfunc.load_model("models:/vqvp-top-prior@candidate")
    assert isinstance(prior.unwrap_python_model().model, torch.nn.Module)
    with pytest.raises(Exception, match="inside the video predictor"):
        prior.predict(np.zeros((1, 1), np.int64))
    # what was logged is the project's model file (torch.load(weights_only=True)), no pickled module
    local = mlflow.artifacts.download_artifacts(artifact_uri="models:/vqvp-predictor@candidate")
    names = sorted(p.name for p in (__import__("pathlib").Path(local) / "artifacts").iterdir())
    assert names == ["bottom_prior.pt", "top_prior.pt", "vqvae.pt"]
    assert not list(__import__("pathlib").Path(local).rglob("*.pkl"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _served(model: str, uri: str, cwd):
    """`mlflow models serve` of a registered model on a free loopback port; yields its base URL."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local",
                               "--host", "127.0.0.1", "-p", str(port), "-w", "1"],
                              env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow models serve did not come up: "
                                f"{server.stdout.read()[-3000:] if server.poll() is not None else 'timeout'}")
                time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _invoke(base: str, body: dict) -> np.ndarray:
    request = urllib.request.Request(f"{base}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as r:
        return np.asarray(json.loads(r.read())["predictions"], dtype=np.uint8)


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_prediction(store, tmp_path):
    given = _given(n=1)
    with _served("models:/vqvp-predictor@candidate", store["uri"], tmp_path) as base:
        predictions = _invoke(base, {"inputs": given.tolist(), "params": {"seed": 5}})
    assert predictions.shape == (1, 16, SIZE, SIZE, 3)
    assert np.array_equal(predictions, _reference(store["files"], given, 0.7, 5))
    # the video predictor, a path in a dataframe record
    from vqvp_core.video.io import decode_frames
    from vqvp_core.video.write import write_video

    video = str(write_video(tmp_path / "clip.mp4", np.random.default_rng(5).integers(0, 256, (8, 36, 52, 3),
                                                                                         dtype=np.uint8), fps=FPS))
    with _served("models:/vqvp-video-predictor@candidate", store["uri"], tmp_path) as base:
        predictions = _invoke(base, {"dataframe_records": [{"video": video}], "params": {"seed": 6}})
    frames = np.stack(list(decode_frames(video, target_fps=FPS, size=SIZE, max_frames=4)))[None]
    assert np.array_equal(predictions, _reference(store["files"], frames, 0.7, 6))
