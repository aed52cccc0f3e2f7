"""The rating server through FastAPI's TestClient: flow, assignment, errors, videos, restarts."""
from __future__ import annotations

import json
import sqlite3
import warnings

import numpy as np
import pytest

from vqvp_core.human_eval.package import build_package, load_key, load_pairs
from vqvp_core.human_eval.server import DB_NAME, create_app
from vqvp_core.human_eval.store import judgments_path

with warnings.catch_warnings():  # starlette's note about httpx vs httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

N_PAIRS = 5
NAMES = ("SYSTEM_ALPHA", "SYSTEM_BETA")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    out = tmp_path_factory.mktemp("srv") / "study"
    rng = np.random.default_rng(0)
    given = rng.integers(0, 256, (N_PAIRS, 4, 16, 16, 3), dtype=np.uint8)
    a = rng.integers(0, 256, (N_PAIRS, 16, 16, 16, 3), dtype=np.uint8)
    b = np.repeat(given[:, -1:], 12, axis=1)
    build_package(out, given, a, b, names=NAMES, formats=("webm", "gif"), seed=0, min_judgments=13)
    return out


@pytest.fixture
def db(tmp_path):
    return tmp_path / "judgments.sqlite"


@pytest.fixture
def client(package, db):
    return TestClient(create_app(package, db_path=db))


def rows(db):
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT rater, pair_id, choice FROM judgments ORDER BY id").fetchall()
    finally:
        conn.close()


def post(client, rater, pair_id, choice, **extra):
    return client.post("/api/judgments", json={"rater": rater, "pair_id": pair_id, "choice": choice, **extra})


def test_full_flow(client, db, package):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in ('id="btn-left"', 'id="btn-cant"', 'id="btn-right"', 'id="rater-input"', "localStorage"):
        assert element in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing external
    assert "default-src 'self'" in page.headers["content-security-policy"]
    study = client.get("/api/study").json()
    assert study["n_pairs"] == N_PAIRS and study["min_judgments"] == 13 and study["n_given"] == 4

    seen = []
    while True:
        nxt = client.get("/api/next", params={"rater": "alice"}).json()
        if nxt["done"]:
            break
        assert nxt["judged_by_you"] == len(seen) and nxt["total_pairs"] == N_PAIRS
        assert nxt["pair_id"] not in seen
        for side in ("left", "right"):
            for fmt, url in nxt[side].items():
                r = client.get(url)
                assert r.status_code == 200 and r.content
                assert r.headers["content-type"] == {"webm": "video/webm", "gif": "image/gif"}[fmt]
        r = post(client, "alice", nxt["pair_id"], ["left", "right", "cant_tell"][len(seen) % 3],
                 elapsed_ms=1234)
        assert r.status_code == 201, r.text
        assert r.json()["pair_id"] == nxt["pair_id"]
        seen.append(nxt["pair_id"])
    assert sorted(seen) == sorted(p["pair_id"] for p in load_pairs(package))
    assert nxt == {"done": True, "judged_by_you": N_PAIRS, "total_pairs": N_PAIRS}
    prog = client.get("/api/progress").json()
    assert prog["total_judgments"] == N_PAIRS and prog["raters"] == 1 and not prog["complete"]
    assert prog["pairs"] == {pid: 1 for pid in seen} and len(prog["below_min"]) == N_PAIRS
    assert [r[:2] for r in rows(db)] == [("alice", pid) for pid in seen]
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT elapsed_ms FROM judgments").fetchall() == [(1234,)] * N_PAIRS
    conn.close()


def test_nothing_served_reveals_the_systems(client):
    texts = [client.get(u).text for u in ("/", "/api/study", "/api/progress")]
    texts.append(client.get("/api/next", params={"rater": "bob"}).text)
    for text in texts:
        assert "ALPHA" not in text and "BETA" not in text


def test_assignment_13_raters_each_pair_reaches_13(client, db):
    raters = [f"rater{i:02d}" for i in range(13)]
    active = list(raters)
    while active:  # round robin: each rater takes one pair per turn
        for r in list(active):
            nxt = client.get("/api/next", params={"rater": r}).json()
            if nxt["done"]:
                active.remove(r)
                continue
            counts = client.get("/api/progress").json()["pairs"]
            assert counts[nxt["pair_id"]] == min(  # always one of the least-judged pairs left
                c for pid, c in counts.items()
                if pid not in {p for rr, p, _ in rows(db) if rr == r})
            assert post(client, r, nxt["pair_id"], "left").status_code == 201
    prog = client.get("/api/progress").json()
    assert prog["complete"] and prog["below_min"] == [] and prog["raters"] == 13
    assert set(prog["pairs"].values()) == {13} and prog["total_judgments"] == 13 * N_PAIRS


def test_assignment_spreads_raters_working_at_the_same_time(client):
    got = [client.get("/api/next", params={"rater": f"r{i}"}).json()["pair_id"] for i in range(2 * N_PAIRS)]
    counts = [got.count(p["pair_id"]) for p in load_pairs(client.app.state.package_dir)]
    assert counts == [2] * N_PAIRS  # reservations of other raters count as judgments
    # asking again does not reserve a second pair for the same rater's tie
    assert client.get("/api/next", params={"rater": "r0"}).json()["pair_id"] == got[0]


def test_partial_progress_prefers_pairs_below_min(client):
    pids = [p["pair_id"] for p in load_pairs(client.app.state.package_dir)]
    for i in range(3):
        for pid in pids[:-1]:
            assert post(client, f"early{i}", pid, "right").status_code == 201
    assert client.get("/api/next", params={"rater": "late"}).json()["pair_id"] == pids[-1]


BIG = "x" * 5000


@pytest.mark.parametrize("body, status", [
    ({"rater": "alice", "pair_id": "p9999", "choice": "left"}, 404),
    ({"rater": "alice", "pair_id": "../key", "choice": "left"}, 404),
    ({"rater": "alice", "pair_id": "p0000", "choice": "up"}, 422),
    ({"rater": "alice", "pair_id": "p0000", "choice": "LEFT"}, 422),
    ({"rater": "alice", "pair_id": "p0000"}, 422),
    ({"pair_id": "p0000", "choice": "left"}, 422),
    ({"rater": "", "pair_id": "p0000", "choice": "left"}, 422),
    ({"rater": "a b", "pair_id": "p0000", "choice": "left"}, 422),
    ({"rater": "../etc", "pair_id": "p0000", "choice": "left"}, 422),
    ({"rater": "a" * 65, "pair_id": "p0000", "choice": "left"}, 422),
    ({"rater": 7, "pair_id": "p0000", "choice": "left"}, 422),
    ({"rater": "alice", "pair_id": "p0000", "choice": "left", "system": "vqvp"}, 422),
    ({"rater": "alice", "pair_id": "p0000", "choice": "left", "elapsed_ms": -1}, 422),
    (["alice", "p0000", "left"], 422),
    ({"rater": "alice", "pair_id": "p0000", "choice": "left", "pad": BIG}, 413),
])
def test_bad_judgments_store_nothing(client, db, body, status):
    r = client.post("/api/judgments", json=body)
    assert r.status_code == status, r.text
    assert rows(db) == []


@pytest.mark.parametrize("raw, headers, status", [
    (b"not json", {"content-type": "application/json"}, 400),
    (b"\xff\xfe", {"content-type": "application/json"}, 400),
    (b"", {"content-type": "application/json"}, 400),
])
def test_malformed_bodies_store_nothing(client, db, raw, headers, status):
    assert client.post("/api/judgments", content=raw, headers=headers).status_code == status
    assert rows(db) == []


def test_streamed_body_over_the_limit_is_413(client, db):
    def chunks():  # no Content-Length: the server counts while reading
        yield b'{"rater": "alice", "pair_id": "p0000", "choice": "left", "pad": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = client.post("/api/judgments", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert rows(db) == []


def test_second_vote_same_rater_same_pair_is_409(client, db):
    assert post(client, "alice", "p0001", "left").status_code == 201
    r = post(client, "alice", "p0001", "right")
    assert r.status_code == 409
    assert post(client, "bob", "p0001", "right").status_code == 201  # another rater may
    assert rows(db) == [("alice", "p0001", "left"), ("bob", "p0001", "right")]


@pytest.mark.parametrize("params", [{}, {"rater": ""}, {"rater": "a/b"}, {"rater": "x" * 65}])
def test_next_needs_a_valid_rater(client, params):
    assert client.get("/api/next", params=params).status_code == 422


def test_videos_only_from_the_videos_folder(client, package):
    name = load_pairs(package)[0]["left"]["webm"]
    r = client.get(f"/videos/{name}")
    assert r.status_code == 200 and r.content == (package / "videos" / name).read_bytes()
    (package / "videos" / "extra.webm").write_bytes(b"not listed")
    try:
        for bad in ("key.json", "../key.json", "..%2Fkey.json", "%2e%2e%2fkey.json", "..%2F..%2Fetc%2Fpasswd",
                    "study.json", DB_NAME, "extra.webm", "nope.webm", "", "%2e%2e", ".hidden"):
            r = client.get(f"/videos/{bad}")
            assert r.status_code in (400, 404), (bad, r.status_code)
            assert b"SYSTEM_ALPHA" not in r.content
        for url in ("/key.json", "/pairs.json", "/study.json", "/api/key", "/videos/../key.json"):
            r = client.get(url)
            assert r.status_code in (400, 404, 405) and b"SYSTEM_ALPHA" not in r.content, url
    finally:
        (package / "videos" / "extra.webm").unlink()


def test_restart_keeps_every_judgment(package, tmp_path):
    # the default location: beside the study folder (store.judgments_path)
    study = tmp_path / "study"
    import shutil
    shutil.copytree(package, study)
    first = TestClient(create_app(study))
    done = []
    for choice in ("left", "cant_tell", "right"):
        pid = first.get("/api/next", params={"rater": "carol"}).json()["pair_id"]
        assert post(first, "carol", pid, choice).status_code == 201
        done.append((pid, choice))
    del first  # no shutdown hook: every 201 was already committed
    second = TestClient(create_app(study))
    prog = second.get("/api/progress").json()
    assert prog["total_judgments"] == 3 and all(prog["pairs"][pid] == 1 for pid, _ in done)
    assert post(second, "carol", done[0][0], "left").status_code == 409
    nxt = second.get("/api/next", params={"rater": "carol"}).json()
    assert nxt["judged_by_you"] == 3 and nxt["pair_id"] not in {pid for pid, _ in done}
    assert not (study / DB_NAME).exists()
    assert rows(judgments_path(study)) == [("carol", pid, c) for pid, c in done]
    key = load_key(study)
    assert set(key["pairs"]) >= {pid for pid, _ in done}


def test_progress_json_is_plain(client):
    prog = client.get("/api/progress").json()
    assert set(prog) == {"pairs", "min_judgments", "below_min", "complete", "total_judgments",
                         "raters", "n_pairs"}
    json.dumps(prog)


@pytest.mark.parametrize("body, status", [
    (b'{"rater": "ann", "pair_id": "p0000", "choice": "left", "elapsed_ms": NaN}', 400),
    (b'{"rater": "ann", "pair_id": "p0000", "choice": "left", "elapsed_ms": Infinity}', 400),
    (b'{"rater": "ann", "pair_id": "p0000", "choice": "left", "elapsed_ms": -Infinity}', 400),
    (b'{"rater": "\\ud800", "pair_id": "p0000", "choice": "left"}', 400),
    (b'{"rater": "ann", "pair_id": "\\udfff", "choice": "left"}', 400),
    (b'{"\\ud800": 1}', 400),
    (b"[" * 2000 + b"]" * 2000, 400),
])
def test_odd_bodies_get_4xx_and_store_nothing(client, db, body, status):
    """Bodies that once gave 500 (issue 14): non-finite numbers, lone surrogates, deep nesting."""
    r = client.post("/api/judgments", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str)
    assert not db.exists() or rows(db) == []


@pytest.mark.parametrize("rater", ["abc\n", "abc\r\n", "\nabc", "abc ", ""])
def test_one_rater_validation_for_every_route(client, rater):
    assert client.get("/api/next", params={"rater": rater}).status_code == 422
    pid = client.get("/api/next", params={"rater": "ok"}).json()["pair_id"]
    assert client.post("/api/judgments", json={"rater": rater, "pair_id": pid, "choice": "left"}).status_code == 422
