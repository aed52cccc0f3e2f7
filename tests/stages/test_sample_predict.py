"""The sample stage and `vqvp predict` on (barely) trained small models."""
import json
import os

import av
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from flows.cli import main as vqvp
from stages import sample
from tests.stages.conftest import args
from tests.vqvp_core.video import fixtures


@pytest.mark.slow
def test_sample_stage(models_workdir):
    assert sample.main(args("sample.count=3", "sample.videos=2")) == 0
    out = models_workdir / "data/samples"
    preds = np.load(out / "predictions.npy")
    assert preds.shape == (3, 16, 32, 32, 3) and preds.dtype == np.uint8
    stats = json.loads((out / "stats.json").read_text())
    assert stats["clips"] == 3 and len(stats["psnr_per_frame"]) == 12
    assert {"psnr_predicted_frames", "psnr_copy_last_frame", "psnr_mean_of_samples"} <= set(stats)
    assert 0.0 <= stats["clips_beating_copy_last"] <= 1.0 and len(stats["psnr_copy_last_per_frame"]) == 12
    assert stats["samples_per_clip"] == 4  # the default
    assert stats["psnr_best_of_samples"] >= stats["psnr_predicted_frames"]
    assert len(list((out / "videos").glob("*.mp4"))) == 2 and (out / "contact_sheet.png").stat().st_size > 0

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("vqvp").experiment_id], "tags.`vqvp.stage` = 'sample'")
    assert {d.dataset.name for d in runs[0].inputs.dataset_inputs} == {"data/clips", "models/vqvae", "models/top_prior", "models/bottom_prior"}
    # the stage registered the video predictor, from this run, with its sampling defaults
    version = client.get_model_version_by_alias("vqvp-predictor", "candidate")
    assert version.run_id == runs[0].info.run_id
    assert client.get_model_version_by_alias("vqvp-video-predictor", "candidate").run_id == runs[0].info.run_id
    import mlflow

    predictor = mlflow.pyfunc.load_model("models:/vqvp-predictor@candidate")
    assert {p.name: p.default for p in predictor.metadata.signature.params}["temperature"] == stats["temperature"]
    from vqvp_core.data.clips import ClipSet
    from vqvp_core.sampling.predict import Predictor

    given = np.stack([ClipSet(models_workdir / "data/clips", stats["split"])[i][:4] for i in range(2)])
    library = Predictor.from_files(*(models_workdir / f"models/{k}/model.pt" for k in ("vqvae", "top_prior", "bottom_prior")))
    assert np.array_equal(predictor.predict(given), library.predict(given, stats["temperature"], None, stats["seed"]))

    # the same seed gives the same frames, and the naive sampler gives exactly the cached sampler's
    assert sample.main(args("sample.count=3", "sample.videos=0", "sample.cached=false")) == 0
    assert np.array_equal(np.load(out / "predictions.npy"), preds)
    assert sample.main(args("sample.count=3", "sample.videos=0", "sample.seed=1")) == 0
    assert not np.array_equal(np.load(out / "predictions.npy"), preds)


def _frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_predict_a_user_video(models_workdir, capsys):
    video = fixtures.write_test_video(models_workdir / "in" / "my vidéo.webm", n_frames=60, size=(80, 60), fps=10)
    out = models_workdir / "out" / "pred.mp4"
    assert vqvp(["predict", os.fspath(video), "--out", str(out), "--seed", "3", "--start", "2"]) == 0
    assert "trained on synthetic shapes on black only" in capsys.readouterr().err  # said where users read
    frames = _frames(out)
    assert len(frames) == 16 and frames[0].shape == (32, 32, 3)
    assert out.with_suffix(".gif").exists()
    side = _frames(out.with_name("pred_side_by_side.mp4"))
    assert len(side) == 16 and side[0].shape[1] > 3 * 32  # given | predicted | ground truth
    # the same models from the MLflow registry
    out2 = models_workdir / "out" / "registry.mp4"
    assert vqvp(["predict", os.fspath(video), "--out", str(out2), "--seed", "3", "--start", "2",
                 "--vqvae", "models:/vqvp-vqvae@candidate", "--top-prior", "models:/vqvp-top-prior@candidate",
                 "--bottom-prior", "models:/vqvp-bottom-prior@candidate"]) == 0
    assert np.array_equal(np.stack(_frames(out2)), np.stack(frames))


def test_predict_bad_inputs(models_workdir, capsys):
    short = fixtures.write_test_video(models_workdir / "short.mp4", n_frames=3, fps=10)
    with pytest.raises(SystemExit, match="too short"):
        vqvp(["predict", os.fspath(short), "--out", str(models_workdir / "o.mp4")])
    bad = fixtures.write_not_a_video(models_workdir / "bad.mp4")
    with pytest.raises(SystemExit, match="cannot read"):
        vqvp(["predict", os.fspath(bad), "--out", str(models_workdir / "o.mp4")])
    assert vqvp(["predict", os.fspath(bad), "--out", str(models_workdir / "o.mp4"), "--vqvae", "nope.pt"]) == 3
    assert "nope.pt not found" in capsys.readouterr().err


def test_predict_options_are_honoured(models_workdir):
    """--start picks the given frames; --temperature 0 is greedy (the seed no longer matters);
    --top-k 1 is greedy too, at any temperature; the default temperature samples (seeds differ)."""
    video = fixtures.write_test_video(models_workdir / "in" / "v.mp4", n_frames=60, size=(64, 64), fps=10)

    def predict(name, *extra):
        out = models_workdir / "opts" / f"{name}.mp4"
        assert vqvp(["predict", os.fspath(video), "--out", str(out), *extra]) == 0
        return np.stack(_frames(out.with_name(f"{name}_side_by_side.mp4")))

    a0, a8 = predict("s0", "--seed", "1"), predict("s8", "--seed", "1", "--start", "8")
    assert not np.array_equal(a0[:4], a8[:4])  # other given frames
    greedy1 = predict("g1", "--temperature", "0", "--seed", "1")
    greedy2 = predict("g2", "--temperature", "0", "--seed", "2")
    assert np.array_equal(greedy1, greedy2)
    top1 = predict("k1", "--top-k", "1", "--temperature", "1.5", "--seed", "3")
    assert np.array_equal(top1, greedy1)
    assert not np.array_equal(a0, predict("s2", "--seed", "2"))  # sampling: another seed, another draw
    assert not np.array_equal(a0, greedy1)
