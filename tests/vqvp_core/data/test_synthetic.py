import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from vqvp_core.data.synthetic import (
    SyntheticConfig,
    generate_video,
    object_tracks,
    video_metadata,
)

CFG = SyntheticConfig(n_videos=24, n_frames=24)


def _digest(v: np.ndarray) -> str:
    return hashlib.sha256(v.tobytes()).hexdigest()


def _single(**kw) -> SyntheticConfig:
    base = dict(n_videos=12, n_frames=40, objects=(1, 1), static_fraction=0.0)
    return SyntheticConfig(**{**base, **kw})


# ------------------------------------------------------------------------- shape, determinism

@pytest.mark.parametrize("size,background", [(64, "black"), (96, "noise"), (256, "gradient")])
def test_shape_dtype_and_values(size, background):
    cfg = SyntheticConfig(n_videos=2, n_frames=3, size=size, background=background)
    v = generate_video(cfg, 1)
    assert v.shape == (3, size, size, 3) and v.dtype == np.uint8
    assert v.max() >= 150, "objects should be bright"
    assert v.std() > 10, "frames should not be blank"
    if background == "black":
        assert v.min() == 0
    else:
        assert len(np.unique(v[0, ..., 0])) > 10, "textured backgrounds should vary"


def test_deterministic_across_calls_and_order():
    fwd = [_digest(generate_video(CFG, i)) for i in range(6)]
    back = [_digest(generate_video(SyntheticConfig(n_videos=24, n_frames=24), i))
            for i in reversed(range(6))][::-1]
    assert fwd == back
    assert len(set(fwd)) == 6, "different indices should give different videos"
    other_seed = SyntheticConfig(n_videos=24, n_frames=24, seed=1)
    assert _digest(generate_video(other_seed, 0)) != fwd[0]


def test_deterministic_across_processes():
    code = ("import hashlib; from vqvp_core.data.synthetic import SyntheticConfig, generate_video; "
            "v = generate_video(SyntheticConfig(n_videos=24, n_frames=24), 5); "
            "print(hashlib.sha256(v.tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest(generate_video(CFG, 5))


def test_index_out_of_range():
    with pytest.raises(IndexError):
        generate_video(CFG, CFG.n_videos)
    with pytest.raises(IndexError):
        video_metadata(CFG, -1)


# ----------------------------------------------------------------------------------- motion

def test_moving_videos_change_and_static_videos_do_not():
    for i in range(8):
        meta = video_metadata(CFG, i)
        v = generate_video(CFG, i).astype(np.int16)
        diffs = np.abs(np.diff(v, axis=0)).mean(axis=(1, 2, 3))
        if meta["n_static"] < meta["n_objects"]:
            assert (diffs > 0).all(), f"video {i}: some consecutive frames are identical"
            assert diffs.mean() > 0.5, f"video {i}: too little motion ({diffs.mean():.3f})"
    still = SyntheticConfig(n_videos=3, n_frames=6, static_fraction=1.0, background="noise")
    v = generate_video(still, 2)
    assert (v == v[:1]).all()
    assert video_metadata(still, 2)["n_static"] == video_metadata(still, 2)["n_objects"]


@pytest.mark.parametrize("bounce", [True, False])
def test_objects_stay_inside_frame(bounce):
    """Tracks stay in range, and no part of an object is ever cut off: a lone object on black
    keeps its total intensity in every frame (the sub-pixel shift conserves coverage)."""
    cfg = _single(bounce=bounce, n_frames=80, speed=(2.0, 3.0))
    flips = 0
    for i in range(6):
        (o,) = object_tracks(cfg, i)
        p = o["positions"]
        hi = np.array([cfg.size - o["h"] - 1, cfg.size - o["w"] - 1]) if bounce else cfg.size
        assert (p >= 0).all() and (p <= hi).all()
        flips += int((np.abs(np.diff(p, 2, axis=0)) > 1e-6).any())
        mass = generate_video(cfg, i).astype(np.float64).sum(axis=(1, 2, 3))
        assert mass.std() / mass.mean() < 0.01, f"video {i}: object mass varies, so it is clipped"
    if bounce:
        assert flips == 6, "over 80 frames at 2-3 px/frame every object should bounce"


def test_tracks_are_constant_velocity_between_bounces():
    cfg = _single(n_frames=48)
    for i in range(6):
        (o,) = object_tracks(cfg, i)
        step = np.diff(o["positions"], axis=0)
        # A step is either the velocity or (after a bounce) partly reflected; most are exact.
        exact = np.isclose(np.abs(step), np.abs(np.asarray(o["velocity"])), atol=1e-9).all(axis=1)
        assert exact.mean() > 0.7
        assert np.allclose(np.hypot(*o["velocity"]), np.hypot(*step[exact].T))


def test_motion_is_learnable_beyond_copy_last_frame():
    """Constant-velocity extrapolation of the object's centre of mass, read from the frames
    alone, predicts the next frame's far better than copying the last frame does."""
    cfg = _single(n_frames=24)
    cv_err, copy_err, mae = [], [], []
    for i in range(8):
        v = generate_video(cfg, i).astype(np.float64)
        w = v.sum(axis=3)
        ys, xs = np.arange(cfg.size), np.arange(cfg.size)
        com = np.stack([(w.sum(2) * ys).sum(1), (w.sum(1) * xs).sum(1)], 1) / w.sum((1, 2))[:, None]
        pred = 2 * com[1:-1] - com[:-2]
        cv_err.append(np.linalg.norm(pred - com[2:], axis=1))
        copy_err.append(np.linalg.norm(com[1:-1] - com[2:], axis=1))
        mae.append(np.abs(np.diff(v, axis=0)).mean())
    cv_err, copy_err = np.concatenate(cv_err), np.concatenate(copy_err)
    assert np.median(cv_err) < 0.1 * np.median(copy_err)
    assert copy_err.mean() > 0.5, "objects should move at least 0.5 px/frame"
    assert min(mae) > 0.5, "copying the last frame should leave a clear error"


# ------------------------------------------------------------------------------- occlusion

def test_occlusion_happens_in_some_videos():
    opaque = SyntheticConfig(n_videos=16, n_frames=24, objects=(3, 3))
    clear = SyntheticConfig(n_videos=16, n_frames=24, objects=(3, 3), occlusions=False)
    occluded = [i for i in range(16)
                if not np.array_equal(generate_video(opaque, i), generate_video(clear, i))]
    assert len(occluded) >= 2, "objects should overlap (and so occlude) in some videos"
    # With one object there is nothing to occlude: both modes draw the same frames.
    single = SyntheticConfig(n_videos=4, n_frames=8, objects=(1, 1))
    single_clear = SyntheticConfig(n_videos=4, n_frames=8, objects=(1, 1), occlusions=False)
    assert np.array_equal(generate_video(single, 0), generate_video(single_clear, 0))


def test_front_object_wins_where_objects_overlap():
    cfg = SyntheticConfig(n_videos=16, n_frames=24, objects=(2, 2), kinds="shapes",
                          static_fraction=0.0)
    found = False
    for i in range(16):
        back, front = object_tracks(cfg, i)
        if not np.array_equal(back["color"], front["color"]):
            v = generate_video(cfg, i)
            fy, fx = np.floor(front["positions"]).astype(int).T
            for t in range(cfg.n_frames):  # centre of the front shape is fully covered by it
                c = v[t, fy[t] + front["h"] // 2, fx[t] + front["w"] // 2]
                assert np.abs(c / 255.0 - front["color"]).max() < 0.02
            by, bx = np.floor(back["positions"]).astype(int).T
            overlap = ((np.abs(by - fy) < (back["h"] + front["h"]) / 2)
                       & (np.abs(bx - fx) < (back["w"] + front["w"]) / 2))
            found |= bool(overlap.any())
    assert found, "no overlapping pair of shapes in 16 videos"


# -------------------------------------------------------------------------------- metadata

@pytest.mark.parametrize("kinds,prefixes", [("digits", {"digits"}), ("shapes", {"shapes"}),
                                             ("both", {"digits", "shapes", "mixed"})])
def test_metadata(kinds, prefixes):
    cfg = SyntheticConfig(n_videos=10, n_frames=20, kinds=kinds, fps=10)
    seen = set()
    for i in range(10):
        meta = video_metadata(cfg, i)
        json.dumps(meta)  # plain types only, for the manifest
        prefix, names = meta["label"].split(":")
        names = names.split(",")
        seen.add(prefix)
        assert prefix in prefixes
        assert len(names) == meta["n_objects"] and 1 <= meta["n_objects"] <= 3
        assert names == [o["name"] for o in object_tracks(cfg, i)]
        assert all(n in "0123456789" if prefix == "digits" else n in {"square", "circle",
                   "triangle"} for n in names if prefix != "mixed")
        assert (meta["fps"], meta["n_frames"], meta["height"]) == (10, 20, 64)
        assert meta["index"] == i and meta["seed"] == 0
    if kinds == "both":
        assert "mixed" in seen


def test_varied_speeds_and_scales():
    cfg = SyntheticConfig(n_videos=20, n_frames=4, static_fraction=0.0)
    objs = [o for i in range(20) for o in object_tracks(cfg, i)]
    speeds = [np.hypot(*o["velocity"]) for o in objs]
    assert min(speeds) >= 0.5 and max(speeds) <= 3.0 and np.ptp(speeds) > 1.0
    assert np.ptp([o["h"] for o in objs]) >= 6


# ------------------------------------------------------------------------------ validation

@pytest.mark.parametrize("field,value", [
    ("n_videos", 0), ("n_frames", -1), ("size", 8), ("size", 64.0), ("seed", -3),
    ("objects", (3, 1)), ("objects", (0, 2)), ("objects", (1.5, 2)), ("objects", 2),
    ("kinds", "letters"), ("speed", (-1, 2)), ("speed", (3, 1)), ("scale", (0.2, 0.95)),
    ("background", "white"), ("occlusions", 1), ("bounce", "yes"),
    ("static_fraction", 1.5), ("fps", 0),
])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"SyntheticConfig\.{field}\b"):
        SyntheticConfig(**{field: value})


def test_from_dict():
    cfg = SyntheticConfig.from_dict({"n_videos": 3, "speed": [1, 2], "objects": [2, 2]})
    assert cfg.speed == (1.0, 2.0) and cfg.objects == (2, 2)
    with pytest.raises(ValueError, match="colour"):
        SyntheticConfig.from_dict({"colour": "red"})
