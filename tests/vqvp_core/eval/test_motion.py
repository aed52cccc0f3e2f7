"""The motion metric: classes, found / centroid error / object PSNR, bootstrap intervals, the
constant-velocity baseline and the generator's renderer it reuses."""
import hashlib
import math

import numpy as np
import pytest

from vqvp_core.data.synthetic import (SyntheticConfig, generate_video, object_tracks, render_video,
                                      video_background)
from vqvp_core.eval import motion as M

RED, GREEN = (255, 64, 64), (64, 220, 64)


def _clips(cfg, indices):
    """(clips (N, 16, ...), scenes) of the first 16 frames of the given videos."""
    gt = np.stack([generate_video(cfg, i)[:16] for i in indices])
    return gt, M.synthetic_scenes(cfg, [f"synthetic://{i}" for i in indices], [0.0] * len(indices), 8.0)


def _report(gt, systems, scenes, **kw):
    return M.motion_report(M.motion_stats(gt, systems, scenes), **kw)


def _square_clip(size=32, boxes=((10, 12, 6, RED),), t=16):
    """A hand-made clip on black: squares (y, x, side, colour), still."""
    frame = np.zeros((size, size, 3), dtype=np.uint8)
    for y, x, side, col in boxes:
        frame[y:y + side, x:x + side] = col
    colors = list(dict.fromkeys(tuple(b[3]) for b in boxes))
    scene = M.Scene(video=0, start=0, background=np.zeros_like(frame), colors=np.array(colors, dtype=np.uint8),
                    groups=[[i for i, b in enumerate(boxes) if tuple(b[3]) == c] for c in colors])
    return np.broadcast_to(frame, (1, t, size, size, 3)).copy(), [scene]


# ------------------------------------------------------------------------------------ renderer

# sha256 of generate_video(cfg, 0..3) before rendering was factored out (render_video).
_GOLDEN = [(dict(background="black"), "d9922378d95f606d"), (dict(background="noise"), "aaf887f3c09fb48c"),
           (dict(background="gradient", bounce=False), "a697ce386af4c6d1"),
           (dict(occlusions=False, objects=(3, 4)), "9e1e854bb893412d")]


@pytest.mark.parametrize("kw,digest", _GOLDEN)
def test_refactored_renderer_gives_byte_identical_videos(kw, digest):
    cfg = SyntheticConfig(n_videos=4, n_frames=20, size=32, **kw)
    videos = [generate_video(cfg, i) for i in range(4)]
    assert hashlib.sha256(b"".join(v.tobytes() for v in videos)).hexdigest()[:16] == digest
    for i, v in enumerate(videos):  # the tracks' own positions re-render the video exactly
        again = render_video(cfg, i, [o["positions"] for o in object_tracks(cfg, i)])
        assert again.tobytes() == v.tobytes()
    with pytest.raises(ValueError, match="objects"):
        render_video(cfg, 0, [])


@pytest.mark.parametrize("background", ["black", "noise", "gradient"])
def test_classes_of_background_and_object_colours(background):
    cfg = SyntheticConfig(n_videos=2, n_frames=16, size=32, background=background)
    _, (scene,) = _clips(cfg, [0])
    bg = scene.background[None, None]
    assert np.array_equal(bg[0, 0], np.clip(video_background(cfg, 0) * 255 + 0.5, 0, 255).astype(np.uint8))
    valid = np.ones((1, len(scene.colors)), dtype=bool)
    assert not M.classify(bg, scene.background[None], scene.colors[None], valid).any()
    for k, col in enumerate(scene.colors):
        frame = np.broadcast_to(col, bg.shape).copy()
        assert (M.classify(frame, scene.background[None], scene.colors[None], valid) == k + 1).all()


# ------------------------------------------------------------------------------ the definitions

@pytest.mark.parametrize("background", ["black", "noise"])
def test_exact_copy_scores_perfectly(background):
    cfg = SyntheticConfig(n_videos=6, n_frames=16, size=32, background=background)
    gt, scenes = _clips(cfg, range(6))
    st = M.motion_stats(gt, {"copy": gt}, scenes)["copy"]
    assert st["err"].sum() == 0 and st["objects"].sum() > 0
    assert np.array_equal(st["found"], st["objects"])
    rep = M.motion_report({"copy": M.motion_stats(gt, {"copy": gt}, scenes)["copy"]}, baseline="none", primary="copy")
    assert rep["centroid_error_px"]["copy"]["value"] == 0 and rep["found"]["copy"]["value"] == 1
    # exact frames count at the uint8 ceiling (one value off by one per frame), never infinity
    assert rep["psnr"]["copy"]["value"] == pytest.approx(10 * math.log10(255**2 * 32 * 32 * 3))
    fg_ceiling = 10 * math.log10(255**2 * st["fg_values"].sum() / st["fg_frames"].sum())
    assert rep["object_psnr"]["copy"]["value"] == pytest.approx(fg_ceiling, abs=1e-5)
    assert all(math.isfinite(v) for v in rep["per_frame"]["object_psnr"]["copy"])


def _away_from_walls(margin):
    """A real synthetic clip with one moving object whose box stays ``margin`` px off the walls."""
    cfg = SyntheticConfig(n_videos=64, n_frames=16, size=32, objects=(1, 1), speed=(0.5, 1.0),
                          scale=(0.25, 0.3), static_fraction=0.0)
    for i in range(cfg.n_videos):
        (o,) = object_tracks(cfg, i)
        p = o["positions"]
        if (p.min() >= margin and (p[:, 0] <= cfg.size - o["h"] - 1 - margin).all()
                and (p[:, 1] <= cfg.size - o["w"] - 1 - margin).all()):
            return _clips(cfg, [i])
    raise AssertionError("no clip away from the walls")


@pytest.mark.parametrize("dy,dx", [(0, 3), (-2, 0), (2, -1), (3, 3)])
@pytest.mark.parametrize("clip", ["hand-made", "synthetic"])
def test_a_shifted_prediction_scores_its_displacement(dy, dx, clip):
    gt, scenes = _square_clip() if clip == "hand-made" else _away_from_walls(margin=4)
    pred = np.roll(gt, (dy, dx), axis=(2, 3))  # on black, away from the walls: a pure shift
    st = M.motion_stats(gt, {"shifted": pred}, scenes)["shifted"]
    assert (st["objects"] == 1).all() and (st["found"] == 1).all()
    np.testing.assert_allclose(st["err"], math.hypot(dy, dx), atol=1e-9)


def test_a_removed_object_is_not_found_and_charged_a_guess():
    gt, scenes = _square_clip(boxes=((4, 4, 6, RED), (20, 18, 5, GREEN)))
    pred = gt.copy()
    pred[:, :, 20:25, 18:23] = 0  # the green square is gone
    st = M.motion_stats(gt, {"p": pred}, scenes)["p"]
    assert (st["objects"] == 2).all() and (st["found"] == 1).all()
    centre = (22.0, 20.0)
    ys, xs = np.mgrid[:32, :32]
    guess = np.hypot(ys - centre[0], xs - centre[1]).mean()  # mean distance to a random pixel
    assert M.guess_error([centre], 32, 32)[0] == pytest.approx(guess)
    np.testing.assert_allclose(st["err"], guess)  # the red one is exact: the whole error is the guess
    assert guess > 10  # far more than a near miss: losing an object never helps the mean


def test_objects_sharing_a_colour_form_one_group():
    gt, (scene,) = _square_clip(boxes=((4, 4, 6, RED), (20, 20, 6, RED)))
    assert len(scene.colors) == 1 and scene.groups == [[0, 1]]
    pred = gt.copy()
    pred[:, :, 4:10, 4:10] = 0
    pred[:, :, 4:10, 8:14] = RED  # one of the two moves 4 px right: the union's centroid moves 2 px
    st = M.motion_stats(gt, {"p": pred}, [scene])["p"]
    assert (st["objects"] == 1).all() and (st["found"] == 1).all()
    np.testing.assert_allclose(st["err"], 2.0)
    # the generator's clips: objects of one colour share a group
    cfg = SyntheticConfig(n_videos=64, n_frames=16, size=32, objects=(3, 3))
    for i in range(cfg.n_videos):
        cols = [tuple(M._uint8(o["color"])) for o in object_tracks(cfg, i)]
        if len(set(cols)) < 3:
            (sc,) = M.synthetic_scenes(cfg, [f"synthetic://{i}"], [0.0], 8.0)
            assert len(sc.colors) == len(set(cols)) and sorted(sum(sc.groups, [])) == [0, 1, 2]
            assert [cols[g[0]] for g in sc.groups] == [tuple(c) for c in sc.colors]
            break
    else:
        raise AssertionError("no video with two objects of one colour")


def test_object_psnr_counts_the_pixels_of_either_side():
    gt, scenes = _square_clip(boxes=((4, 4, 4, RED),))
    pred = np.roll(gt, 10, axis=3)  # disjoint: 16 object pixels in each, 32 in all, all wrong
    st = M.motion_stats(gt, {"p": pred}, scenes)["p"]
    assert (st["fg_values"] == 32 * 3).all()
    sse = 2 * 16 * sum(v * v for v in RED)
    assert (st["fg_sse"] == sse).all() and (st["sse"] == sse).all()


# ---------------------------------------------------------------------------------- intervals

def test_bootstrap_contains_the_estimate_and_is_zero_for_identical_systems():
    rng = np.random.default_rng(0)
    cols = np.stack([rng.random(50) * 5, np.full(50, 3.0)], 1)
    value, lo, hi = M.bootstrap_ci(cols, "ratio", seed=1)
    assert value == pytest.approx(cols[:, 0].sum() / 150) and lo < value < hi
    assert M.bootstrap_ci(cols, "ratio", seed=1) == (value, lo, hi)  # the seed fixes the resamples
    assert M.bootstrap_ci(cols, "ratio", baseline=cols, seed=1) == (0.0, 0.0, 0.0)
    wide = M.bootstrap_ci(cols[:10], "ratio", seed=1)
    assert wide[2] - wide[1] > hi - lo  # fewer clips, wider interval
    sse = np.stack([rng.random(50) * 100, np.full(50, 300.0), np.ones(50)], 1)
    v, lo, hi = M.bootstrap_ci(sse, "psnr")
    assert lo <= v <= hi and v == pytest.approx(10 * math.log10(255**2 * 300 * 50 / sse[:, 0].sum()))


def test_report_keys_best_of_draws_and_differences():
    cfg = SyntheticConfig(n_videos=8, n_frames=16, size=32)
    gt, scenes = _clips(cfg, range(8))
    copy = gt.copy()
    copy[:, 4:] = gt[:, 3:4]
    draws = np.stack([copy, gt])  # draw 0 = copy-last, draw 1 = exact: best of = exact
    rep = _report(gt, {"model": draws, "copy_last_frame": copy}, scenes, resamples=200)
    assert rep["systems"] == ["model", "model_best", "copy_last_frame"] and rep["draws"] == 2
    assert rep["n_clips"] == 8 and rep["frames"] == list(range(5, 17))
    assert rep["constants"]["found_area_ratio"] == [0.5, 2.0]
    for fig in ("psnr", "centroid_error_px", "found", "found_frame16", "object_psnr"):
        assert set(rep[fig]) == {"model", "model_best", "copy_last_frame"}
        lo, hi = rep[fig]["model"]["ci95"]
        assert lo <= rep[fig]["model"]["value"] <= hi
        diff = rep["model_minus_copy_last_frame"][fig]["model"]
        assert diff["value"] == 0 and diff["ci95"] == [0, 0]  # draw 0 is copy-last itself
    assert rep["centroid_error_px"]["model_best"]["value"] == 0 and rep["found"]["model_best"]["value"] == 1
    assert "ssim" not in rep  # no SSIM column given
    assert all(len(v) == 12 for v in rep["per_frame"]["centroid_error_px"].values())
    flat = M.headline(rep)
    assert flat["motion/found/model_best"] == 1 and "motion/centroid_error_px/model_minus_copy_last_frame" in flat


# ------------------------------------------------------------------------ constant velocity

def _track_is_straight(cfg, o, start, n=16):
    """No bounce in frames start..start+n-1: the unreflected track stays strictly inside."""
    span = np.array([cfg.size - o["h"] - 1, cfg.size - o["w"] - 1], dtype=np.float64)
    t = np.arange(start, start + n)[:, None]
    x = np.asarray(o["start"]) * span + np.asarray(o["velocity"]) * t
    return bool(((x > 0) & (x < span)).all())


def test_constant_velocity_is_the_ground_truth_without_bounces():
    cfg = SyntheticConfig(n_videos=64, n_frames=16, size=32, speed=(0.5, 1.0), objects=(1, 2))
    straight = [i for i in range(cfg.n_videos) if all(_track_is_straight(cfg, o, 0) for o in object_tracks(cfg, i))]
    bouncing = [i for i in range(cfg.n_videos) if i not in straight]
    assert straight and bouncing
    gt, scenes = _clips(cfg, straight[:3] + bouncing[:3])
    cv = M.constant_velocity(cfg, scenes)
    assert np.array_equal(cv[:3], gt[:3])
    assert np.array_equal(cv[:, :4], gt[:, :4])  # the given frames are the ground truth's
    assert not np.array_equal(cv[3:], gt[3:])    # a bounce is what it cannot know
    st = M.motion_stats(gt, {"cv": cv}, scenes)["cv"]
    assert st["err"][0, :3].sum() == 0


def test_motion_metrics_end_to_end_and_mismatched_clips():
    cfg = SyntheticConfig(n_videos=6, n_frames=32, size=32)
    videos = [generate_video(cfg, i) for i in range(3)]
    gt = np.stack([v[s:s + 16] for v in videos for s in (0, 16)])
    src = [f"synthetic://{i}" for i in range(3) for _ in (0, 1)]
    starts = [s / 8.0 for _ in range(3) for s in (0, 16)]
    copy = gt.copy()
    copy[:, 4:] = gt[:, 3:4]

    def ssim(videos, target):  # a stand-in: 1 where the frame is exact
        return {k: (v == target).all((2, 3, 4)).astype(float) for k, v in videos.items()}

    rep = M.motion_metrics(cfg, src, starts, 8.0, gt, {"model": np.stack([gt, copy]), "copy_last_frame": copy,
                                                       "reconstruction": gt}, ssim=ssim, resamples=100)
    assert rep["available"] and rep["systems"] == ["model", "model_best", "copy_last_frame", "constant_velocity",
                                                   "reconstruction"]
    assert rep["ssim"]["model"]["value"] == 1 and rep["centroid_error_px"]["reconstruction"]["value"] == 0
    assert "centroid error px model 0.00" in M.summary(rep)
    wrong = M.motion_metrics(cfg, src, [0.0] * 6, 8.0, gt, {"model": gt, "copy_last_frame": copy})
    assert wrong["available"] is False and "re-run ingest" in wrong["reason"]
    other = M.motion_metrics(cfg, ["/data/a.mp4"] * 6, starts, 8.0, gt, {"model": gt, "copy_last_frame": copy})
    assert other["available"] is False


def test_found_by_group_and_the_generator_attributes_of_groups():
    gt, scenes = _square_clip(boxes=((4, 4, 6, RED), (18, 18, 8, GREEN)))
    pred = gt.copy()
    pred[:, 8:, 18:26, 18:26] = 0                                # the green square gone from frame 9 on
    present, found, ratio = M.found_by_group(gt, pred, scenes, [4, 12])
    assert present.shape == found.shape == ratio.shape == (1, 2, 2) and present.all()
    assert found[0, 0].tolist() == [True, True] and found[0, 1].tolist() == [True, False]
    assert ratio[0].tolist() == [[1.0, 1.0], [1.0, 0.0]]
    cfg = SyntheticConfig(n_videos=3, n_frames=16, size=32, objects=(1, 3))
    _, scenes = _clips(cfg, [0, 1, 2])
    attrs = M.group_attributes(cfg, scenes)
    for i, sc in enumerate(scenes):
        tracks = object_tracks(cfg, i)
        for g, members in enumerate(sc.groups):
            assert attrs["kind"][i, g] == ("digit" if any(tracks[j]["kind"] == "digit" for j in members) else "shape")
            assert attrs["height"][i, g] == max(tracks[j]["h"] for j in members)
            assert attrs["speed"][i, g] == pytest.approx(max(math.hypot(*tracks[j]["velocity"]) for j in members))
        assert (attrs["kind"][i, len(sc.groups):] == "").all()
