"""evaluate and package_human_eval after a tiny sample run, and the human-eval commands."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from flows.cli import main as vqvp
from stages import evaluate, package_human_eval, sample
from commands.human_eval import default_db
from tests.stages.conftest import args
from vqvp_core.eval.i3d import InceptionI3d
from vqvp_core.human_eval.server import create_app


@pytest.fixture
def sampled(models_workdir):
    assert sample.main(args("sample.count=4", "sample.videos=0")) == 0
    return models_workdir


def test_evaluate_without_i3d_weights_reports_everything_else(sampled):
    """PSNR/SSIM with intervals, the motion metric, bits per code; FVD unavailable."""
    assert evaluate.main(args()) == 0
    metrics = json.loads((sampled / "metrics/eval.json").read_text())
    assert metrics["fvd"] == {"available": False, "reason": metrics["fvd"]["reason"]}
    assert "evaluate.i3d.path" in metrics["fvd"]["reason"]
    for m in ("psnr", "ssim", "psnr_frame_mean", "exact_frames"):
        assert set(metrics[m]) == {"model", "copy_last_frame", "reconstruction"}
    for m in ("psnr", "ssim"):
        assert len(metrics[f"{m}_per_frame"]["model"]) == 12
    assert 0.0 <= metrics["clips_model_beats_copy_last"] <= 1.0
    assert metrics["bits_per_code"]["top_prior"]["uniform_bits"] == 5.0
    assert (sampled / "metrics/eval_psnr_per_frame.png").stat().st_size > 0
    for m in ("psnr", "ssim"):  # bootstrap intervals over clips, beside the existing keys
        assert set(metrics[f"{m}_ci95"]) == set(metrics[m])
        lo, hi = metrics[f"{m}_ci95"]["model"]
        assert lo <= metrics[m]["model"] <= hi
        assert set(metrics[f"{m}_model_minus_copy_last"]) == {"value", "ci95"}
    # the motion metric, of every system; best of the draws sample keeps in draws.npz
    draws = np.load(sampled / "data/samples/draws.npz")["draws"]
    preds = np.load(sampled / "data/samples/predictions.npy")
    n_draws = json.loads((sampled / "data/samples/stats.json").read_text())["samples_per_clip"]
    assert n_draws > 1 and draws.shape == (n_draws, *preds.shape) and draws.dtype == np.uint8
    assert np.array_equal(draws[0], preds)
    motion = metrics["motion"]
    assert motion["available"] and motion["n_clips"] == 4 and motion["draws"] == n_draws
    systems = {"model", "model_best", "copy_last_frame", "constant_velocity", "reconstruction"}
    assert set(motion["systems"]) == systems
    for fig in ("psnr", "ssim", "centroid_error_px", "found", "found_frame16", "object_psnr"):
        assert set(motion[fig]) == systems and set(motion["model_minus_copy_last_frame"][fig]) == {"model", "model_best"}
        v = motion[fig]["model"]
        assert v["ci95"][0] <= v["value"] <= v["ci95"][1]
    for fig in ("centroid_error_px", "found", "object_psnr", "psnr", "ssim"):
        assert all(len(v) == 12 for v in motion["per_frame"][fig].values())
    assert motion["psnr"]["model"]["value"] == pytest.approx(metrics["psnr"]["model"], abs=1e-5)
    assert motion["ssim"]["model"]["value"] == pytest.approx(metrics["ssim"]["model"], abs=1e-5)
    assert motion["found"]["model_best"]["value"] >= motion["found"]["model"]["value"]
    assert motion["constants"]["found_area_ratio"] == [0.5, 2.0]
    assert (sampled / "metrics/eval_motion_per_frame.png").stat().st_size > 0
    # the same curves as plot data for `dvc plots` (one CSV per metric, a column per system)
    import pandas as pd

    for fig in ("psnr", "ssim", "centroid_error_px", "found", "object_psnr"):
        table = pd.read_csv(sampled / f"metrics/per_frame/{fig}.csv")
        assert list(table["frame"]) == list(range(5, 17)) and set(table.columns) == {"frame", *systems}
        assert np.allclose(table["model"], motion["per_frame"][fig]["model"], atol=1e-4, equal_nan=True)


def test_dvc_plots_show_renders_the_per_frame_curves(sampled, tmp_path):
    """The top-level plots of the project's dvc.yaml, read by a real `dvc plots show`."""
    import shutil
    import subprocess

    import yaml

    from tests.conftest import BIN

    if not (sampled / "metrics/per_frame/psnr.csv").exists():
        assert evaluate.main(args()) == 0
    repo = tmp_path / "repo"
    shutil.copytree(sampled / "metrics/per_frame", repo / "metrics/per_frame")
    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "dvc.yaml").read_text())
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": spec["plots"]}, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=repo, check=True)
    out = subprocess.run([str(BIN / "dvc"), "plots", "show", "--json"], cwd=repo, check=True,
                         capture_output=True, text=True).stdout
    shown = json.loads(out)["data"]  # {title: [vega specs with the rows]}
    titles = set(shown)
    assert {"PSNR per predicted frame (dB)", "objects found per predicted frame"} <= titles, titles
    text = json.dumps(shown)
    assert "copy_last_frame" in text and "constant_velocity" in text


def test_psnr_and_ssim_agree_with_scikit_image(sampled):
    """evaluate's split PSNR and SSIM, recomputed from the saved arrays by an independent
    implementation (scikit-image: Gaussian window sigma 1.5, population covariance, data range 255)."""
    skimage_metrics = pytest.importorskip("skimage.metrics")
    from stages.evaluate import CLIPS, SAMPLES
    from vqvp_core.sampling.samples import load_samples

    assert evaluate.main(args()) == 0
    metrics = json.loads((sampled / "metrics/eval.json").read_text())
    preds, originals, _ = load_samples(SAMPLES, CLIPS)
    given = metrics["given_frames"]
    last = np.repeat(originals[:, given - 1:given], originals.shape[1] - given, axis=1)
    for name, video in (("model", preds[:, given:]), ("copy_last_frame", last)):
        truth = originals[:, given:]
        psnr = skimage_metrics.peak_signal_noise_ratio(truth, video, data_range=255)
        assert metrics["psnr"][name] == pytest.approx(psnr, abs=1e-4), name
        ssim = np.mean([skimage_metrics.structural_similarity(
            t, v, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            for t, v in zip(truth.reshape(-1, *truth.shape[2:]), video.reshape(-1, *video.shape[2:]))])
        assert metrics["ssim"][name] == pytest.approx(ssim, abs=1e-4), name


def test_motion_metric_needs_the_synthetic_source():
    from vqvp_core.config import load_params

    params = load_params(None, ["ingest.source=/data/videos"])
    motion = evaluate.motion_block(params, None, None, None, None, {})
    assert motion["available"] is False and "synthetic" in motion["reason"]


@pytest.mark.slow
def test_evaluate_with_weights_file(sampled, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "i3d_pretrained_400.pt"
    torch.save(InceptionI3d(400).state_dict(), weights)  # random weights: tests the plumbing, not a score
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    over = [f"evaluate.i3d.path={weights}", f"evaluate.i3d.sha256={digest}", "evaluate.resolutions=[32]"]
    assert evaluate.main(args(*over)) == 0
    fvd = json.loads((sampled / "metrics/eval.json").read_text())["fvd"]
    assert fvd["available"] and set(fvd) == {"available", "fvd", "fvd_star"}
    result = fvd["fvd"]["32"]
    assert result["k"] == 2 and result["n_a"] == 4 and result["weights"]["sha256"] == digest
    assert evaluate.main(args(*over[:1], "evaluate.i3d.sha256=" + "0" * 64, "evaluate.resolutions=[32]")) == 3


def test_evaluate_params_need_a_sha256(sampled, capsys):
    assert evaluate.main(args("evaluate.i3d.path=/some/i3d.pt")) == 2
    assert "sha256 is required" in capsys.readouterr().err


def test_human_eval_package_serve_and_analyze(sampled, capsys):
    assert package_human_eval.main(args("human_eval.pairs=3", "human_eval.min_judgments=2")) == 0
    study = sampled / "data/human_eval"
    pairs = json.loads((study / "pairs.json").read_text())
    assert len(pairs["pairs"] if isinstance(pairs, dict) else pairs) == 3
    assert "copy-last-frame" not in (study / "pairs.json").read_text()  # blinded
    db = default_db(study)
    assert db.parent == study.parent  # judgments live outside the DVC out
    client = TestClient(create_app(study, db_path=db))
    from vqvp_core.human_eval.store import invite

    for _, token in invite(db, 2):
        auth = {"Authorization": f"Bearer {token}"}
        while True:
            nxt = client.get("/api/next", headers=auth).json()
            if nxt.get("done"):
                break
            r = client.post("/api/judgments", headers=auth, json={"pair_id": nxt["pair_id"], "choice": "left"})
            assert r.status_code == 201
    capsys.readouterr()
    assert vqvp(["human-eval", "analyze", str(study)]) == 0
    assert "Total judgements" in capsys.readouterr().out
    from vqvp_core.human_eval.analysis import analyze

    table = analyze(study, db_path=db, write=False)
    counts = table["count"]
    assert counts["Total judgements"] == 6 and counts["Indifferent"] == 0
    assert counts["Prefer vqvp"] + counts["Prefer copy-last-frame"] == 6  # every "left" vote picks a system
    # the default database of the server and the analysis is the same file, and rebuilding the
    # study (as `dvc repro` would) keeps its judgments
    assert analyze(study, write=False)["count"]["Total judgements"] == 6
    assert package_human_eval.main(args("human_eval.pairs=3", "human_eval.min_judgments=2")) == 0
    assert analyze(study, write=False)["count"]["Total judgements"] == 6
