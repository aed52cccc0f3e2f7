"""build_package: layout, blinding, seeded sides, the key, frames and resizing, atomicity."""
from __future__ import annotations

import json
import os
import re
import sqlite3
import stat

import av
import numpy as np
import pytest

from vqvp_core.human_eval import package as pkg
from vqvp_core.human_eval.package import build_package, load_key, load_pairs, load_study, resize_frames

GREY, RED, BLUE = (128, 128, 128), (220, 30, 30), (30, 30, 220)


def _const(n, t, size, colour):
    arr = np.zeros((n, t, size, size, 3), np.uint8)
    arr[...] = colour
    return arr


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _colour_of(frame) -> str:
    r, _, b = frame.reshape(-1, 3).mean(0)
    return "red" if r > b + 60 else "blue" if b > r + 60 else "grey"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """6 pairs, 80x80 frames (so resized to 64): A is red, B is blue, given frames are grey."""
    out = tmp_path_factory.mktemp("pkg") / "study"
    n = 6
    summary = build_package(out, _const(n, 4, 80, GREY), _const(n, 16, 80, RED),
                            _const(n, 12, 80, BLUE), names=("SYSTEM_ALPHA", "SYSTEM_BETA"),
                            clip_ids=[f"clip-{i}" for i in range(n)], seed=3, min_judgments=13)
    return out, summary


def test_layout_summary_and_study_json(study):
    out, summary = study
    assert sorted(p.name for p in out.iterdir()) == ["key.json", "pairs.json", "study.json", "videos"]
    assert summary["n_pairs"] == 6 and summary["n_videos"] == 24
    assert summary["a_left"] + summary["b_left"] == 6 and summary["judgments_needed"] == 78
    s = load_study(out)
    assert s["names"] == ["SYSTEM_ALPHA", "SYSTEM_BETA"] and s["min_judgments"] == 13
    assert s["seed"] == 3 and s["size"] == [64, 64] and s["n_frames"] == 16 and s["n_given"] == 4
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", s["created"])
    assert s["min_view_seconds"] == pytest.approx(2.0)  # one loop: 16 frames at 8 fps
    files = sorted(p.name for p in (out / "videos").iterdir())
    assert len(files) == 24
    umask = os.umask(0)
    os.umask(umask)
    for name in files:  # the usual file mode, not mkstemp's 0600
        assert stat.S_IMODE(os.stat(out / "videos" / name).st_mode) == 0o666 & ~umask
    # no temporary folders left beside the study
    assert [p.name for p in out.parent.iterdir()] == ["study"]


def test_videos_are_64x64_16_frames_and_gif_loops(study):
    out, _ = study
    pair = load_pairs(out)[0]
    for side in ("left", "right"):
        webm = _decode(out / "videos" / pair[side]["webm"])
        gif = _decode(out / "videos" / pair[side]["gif"])
        assert webm.shape == (16, 64, 64, 3) and gif.shape == (16, 64, 64, 3)
        with av.open(str(out / "videos" / pair[side]["webm"])) as c:
            assert c.streams.video[0].codec_context.name == "vp9"
        assert b"NETSCAPE2.0\x03\x01\x00\x00" in (out / "videos" / pair[side]["gif"]).read_bytes()


def test_blinding_nothing_public_reveals_the_systems(study):
    out, _ = study
    public = (out / "pairs.json").read_text()
    for secret in ("SYSTEM_ALPHA", "SYSTEM_BETA", "ALPHA", "BETA", "clip-"):
        assert secret not in public
    pairs = load_pairs(out)
    assert all(set(p) == {"pair_id", "left", "right"} for p in pairs)
    names = [n for p in pairs for side in ("left", "right") for n in p[side].values()]
    assert all(re.fullmatch(r"[0-9a-f]{16}\.(webm|gif)", n) for n in names)
    assert sorted(names) == sorted(p.name for p in (out / "videos").iterdir())
    # the two files of a side share a token; every side has its own token
    tokens = [p[side]["webm"][:-5] for p in pairs for side in ("left", "right")]
    assert len(set(tokens)) == len(tokens)
    assert all(p[s]["gif"][:-4] == p[s]["webm"][:-5] for p in pairs for s in ("left", "right"))
    # the sides are mixed: A is on the left in some pairs and on the right in others
    key = load_key(out)["pairs"]
    assert {key[p["pair_id"]]["left"] for p in pairs} == {"SYSTEM_ALPHA", "SYSTEM_BETA"}


def test_key_maps_each_side_to_its_system(study):
    out, _ = study
    key = load_key(out)
    assert key["names"] == ["SYSTEM_ALPHA", "SYSTEM_BETA"]
    colour = {"SYSTEM_ALPHA": "red", "SYSTEM_BETA": "blue"}
    for i, p in enumerate(load_pairs(out)):
        k = key["pairs"][p["pair_id"]]
        assert {k["left"], k["right"]} == set(colour) and k["clip_id"] == f"clip-{i}" and k["index"] == i
        for side in ("left", "right"):
            frames = _decode(out / "videos" / p[side]["webm"])
            assert [_colour_of(f) for f in frames[:4]] == ["grey"] * 4  # the given frames
            assert {_colour_of(f) for f in frames[4:]} == {colour[k[side]]}


def _sides(out):
    key = load_key(out)["pairs"]
    return [key[p]["left"] for p in sorted(key)]


@pytest.mark.parametrize("n", [8, 9])
def test_sides_balanced_and_deterministic_for_a_seed(tmp_path, n):
    args = (_const(n, 4, 8, GREY), _const(n, 16, 8, RED), _const(n, 16, 8, BLUE))
    kw = dict(names=("a", "b"), formats=("gif",))
    s1 = build_package(tmp_path / "s1", *args, seed=7, **kw)
    s2 = build_package(tmp_path / "s2", *args, seed=7, **kw)
    s3 = build_package(tmp_path / "s3", *args, seed=8, **kw)
    assert s1["a_left"] in (n // 2, (n + 1) // 2)
    assert _sides(tmp_path / "s1") == _sides(tmp_path / "s2")
    assert s2["a_left"] == s1["a_left"]
    assert (tmp_path / "s1" / "key.json").read_bytes() == (tmp_path / "s2" / "key.json").read_bytes()
    # the file names come from `secrets`, not from the seed: the same seed, other names, so
    # nothing served (n_pairs, a name) lets anyone search seeds for the sides (issue 14)
    names = lambda d: {f for p in load_pairs(d) for side in ("left", "right") for f in p[side].values()}  # noqa: E731
    assert not names(tmp_path / "s1") & names(tmp_path / "s2")
    assert all(len(f.split(".")[0]) == 16 for f in names(tmp_path / "s1"))
    assert s3["a_left"] in (n // 2, (n + 1) // 2)
    # across many seeds, each pair position gets A on the left about half of the time
    lefts = np.array([[s == "a" for s in _sides_for_seed(n, seed)] for seed in range(40)])
    assert 0.25 < lefts.mean(0).min() and lefts.mean(0).max() < 0.75


def _sides_for_seed(n, seed):
    rng = np.random.default_rng(seed)  # the same draws build_package makes, without encoding
    a_left = np.zeros(n, bool)
    a_left[: n // 2] = True
    if n % 2:
        a_left[n - 1] = bool(rng.integers(2))
    return ["a" if x else "b" for x in rng.permutation(a_left)]


def test_sides_for_seed_matches_build_package(tmp_path):
    n = 5
    build_package(tmp_path / "s", _const(n, 4, 8, GREY), _const(n, 16, 8, RED),
                  _const(n, 16, 8, BLUE), names=("a", "b"), seed=11, formats=("gif",))
    assert _sides(tmp_path / "s") == _sides_for_seed(n, 11)


def test_context_system_keeps_each_systems_first_frames(tmp_path):
    n = 2
    a = _const(n, 16, 16, RED)
    build_package(tmp_path / "s", _const(n, 4, 16, GREY), a, _const(n, 16, 16, BLUE),
                  names=("a", "b"), context="system", formats=("gif",), seed=0)
    key = load_key(tmp_path / "s")["pairs"]
    for p in load_pairs(tmp_path / "s"):
        frames = _decode(tmp_path / "s" / "videos" / p["left"]["gif"])
        want = "red" if key[p["pair_id"]]["left"] == "a" else "blue"
        assert {_colour_of(f) for f in frames} == {want}


def test_resize_area_and_centre_crop():
    checker = np.zeros((1, 128, 128, 3), np.uint8)
    checker[:, ::2, ::2] = 255
    checker[:, 1::2, 1::2] = 255
    small = resize_frames(checker, 64)
    assert small.shape == (1, 64, 64, 3)
    assert np.abs(small.astype(int) - 128).max() <= 1  # box average of a 2x2 checker
    wide = np.zeros((2, 3, 64, 96, 3), np.uint8)
    wide[..., 16:80, :] = 200  # the centre square
    assert resize_frames(wide, 64).shape == (2, 3, 64, 64, 3)
    assert (resize_frames(wide, 64) == 200).all()
    tiny = np.full((2, 32, 32, 3), 7, np.uint8)
    assert resize_frames(tiny, 64) is tiny  # never upscaled


@pytest.mark.parametrize("change, match", [
    (dict(system_a=np.zeros((3, 16, 8, 8, 3), np.uint8)), "clips"),
    (dict(system_a=np.zeros((2, 16, 8, 8, 3), np.float32)), "uint8"),
    (dict(system_b=np.zeros((2, 10, 8, 8, 3), np.uint8)), "frames per clip"),
    (dict(system_b=np.zeros((2, 16, 9, 9, 3), np.uint8)), "frames are"),
    (dict(names=("x", "x")), "names"),
    (dict(min_judgments=0), "min_judgments"),
    (dict(clip_ids=[1]), "clip_ids"),
    (dict(formats=("avi",)), "formats"),
    (dict(context="nope"), "context"),
])
def test_bad_arguments(tmp_path, change, match):
    kw = dict(given=np.zeros((2, 4, 8, 8, 3), np.uint8), system_a=np.zeros((2, 16, 8, 8, 3), np.uint8),
              system_b=np.zeros((2, 12, 8, 8, 3), np.uint8))
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        build_package(tmp_path / "s", **kw)
    assert not (tmp_path / "s").exists()


def test_failure_leaves_nothing_and_rebuild_replaces(tmp_path, monkeypatch):
    out = tmp_path / "s"
    args = (_const(3, 4, 8, GREY), _const(3, 16, 8, RED), _const(3, 16, 8, BLUE))
    build_package(out, *args, names=("a", "b"), formats=("gif",), seed=1)
    before = (out / "key.json").read_bytes()

    import vqvp_core.video.write as vio
    real, calls = vio.write_video, []

    def flaky(path, frames, fps):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(path, frames, fps)

    monkeypatch.setattr(vio, "write_video", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        build_package(out, *args, names=("a", "b"), formats=("gif",), seed=2)
    assert (out / "key.json").read_bytes() == before  # the old study is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temp folder left
    monkeypatch.setattr(vio, "write_video", real)
    # judgments inside the folder (older vqvp) are moved beside it, where a rebuild keeps them
    from vqvp_core.human_eval.store import judgments_path

    old_db = judgments_path(out)
    conn = sqlite3.connect(out / "judgments.sqlite")
    conn.execute("CREATE TABLE judgments (rater TEXT, pair_id TEXT, choice TEXT)")
    conn.execute("INSERT INTO judgments VALUES ('r', 'p0000', 'left')")
    conn.commit()
    conn.close()
    build_package(out, *args, names=("a", "b"), formats=("gif",), seed=2)
    assert not (out / "judgments.sqlite").exists() and old_db.exists()
    conn = sqlite3.connect(old_db)
    assert conn.execute("SELECT COUNT(*) FROM judgments").fetchone()[0] == 1
    conn.close()
    assert json.loads((out / "study.json").read_text())["seed"] == 2
    assert pkg.FORMAT_VERSION == json.loads((out / "study.json").read_text())["format_version"]
