"""The rating server through FastAPI's TestClient: flow, assignment, errors, videos, restarts."""
from __future__ import annotations

import json
import sqlite3

import pytest

from tests.vqvp_core.human_eval.conftest import N_PAIRS, Rater, TestClient, rows
from vqvp_core.human_eval.package import load_key, load_pairs
from vqvp_core.human_eval.server import DB_NAME, create_app
from vqvp_core.human_eval.store import judgments_path


def test_full_flow(client, db, package, alice):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in ('id="btn-left"', 'id="btn-cant"', 'id="btn-right"', "#token=", "localStorage"):
        assert element in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing external
    assert "default-src 'self'" in page.headers["content-security-policy"]
    study = client.get("/api/study").json()
    assert study["n_pairs"] == N_PAIRS and study["min_judgments"] == 13 and study["n_given"] == 4

    seen = []
    while True:
        nxt = alice.next().json()
        if nxt["done"]:
            break
        assert nxt["judged_by_you"] == len(seen) and nxt["total_pairs"] == N_PAIRS
        assert nxt["rater"] == alice.id and nxt["pair_id"] not in seen
        for side in ("left", "right"):
            for fmt, url in nxt[side].items():
                r = client.get(url)
                assert r.status_code == 200 and r.content
                assert r.headers["content-type"] == {"webm": "video/webm", "gif": "image/gif"}[fmt]
        r = alice.post(nxt["pair_id"], ["left", "right", "cant_tell"][len(seen) % 3], elapsed_ms=1234)
        assert r.status_code == 201, r.text
        assert r.json()["pair_id"] == nxt["pair_id"] and r.json()["rater"] == alice.id
        seen.append(nxt["pair_id"])
    assert sorted(seen) == sorted(p["pair_id"] for p in load_pairs(package))
    assert {k: v for k, v in nxt.items() if v is not None} == {
        "done": True, "rater": alice.id, "judged_by_you": N_PAIRS, "total_pairs": N_PAIRS}
    prog = client.get("/api/progress").json()
    assert prog["total_judgments"] == N_PAIRS and prog["raters"] == 1 and not prog["complete"]
    assert prog["pairs"] == {pid: 1 for pid in seen} and len(prog["below_min"]) == N_PAIRS
    assert [r[:2] for r in rows(db)] == [(alice.id, pid) for pid in seen]
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT elapsed_ms FROM judgments").fetchall() == [(1234,)] * N_PAIRS
    conn.close()


def test_nothing_served_reveals_the_systems(client, alice):
    texts = [client.get(u).text for u in ("/", "/api/study", "/api/progress", "/openapi.json")]
    texts.append(alice.next().text)
    for text in texts:
        assert "ALPHA" not in text and "BETA" not in text


def test_assignment_13_raters_each_pair_reaches_13(client, db):
    raters = [Rater(client, db) for _ in range(13)]
    active = list(raters)
    while active:  # round robin: each rater takes one pair per turn
        for r in list(active):
            nxt = r.next().json()
            if nxt["done"]:
                active.remove(r)
                continue
            counts = client.get("/api/progress").json()["pairs"]
            assert counts[nxt["pair_id"]] == min(  # always one of the least-judged pairs left
                c for pid, c in counts.items()
                if pid not in {p for rr, p, _ in rows(db) if rr == r.id})
            assert r.post(nxt["pair_id"], "left").status_code == 201
    prog = client.get("/api/progress").json()
    assert prog["complete"] and prog["below_min"] == [] and prog["raters"] == 13
    assert set(prog["pairs"].values()) == {13} and prog["total_judgments"] == 13 * N_PAIRS


def test_assignment_spreads_raters_working_at_the_same_time(client, db):
    raters = [Rater(client, db) for _ in range(2 * N_PAIRS)]
    got = [r.next().json()["pair_id"] for r in raters]
    counts = [got.count(p["pair_id"]) for p in load_pairs(client.app.state.package_dir)]
    assert counts == [2] * N_PAIRS  # reservations of other raters count as judgments
    # asking again does not reserve a second pair for the same rater's tie
    assert raters[0].next().json()["pair_id"] == got[0]


def test_partial_progress_prefers_pairs_below_min(client, db):
    pids = [p["pair_id"] for p in load_pairs(client.app.state.package_dir)]
    for _ in range(3):
        early = Rater(client, db)
        for pid in pids[:-1]:
            assert early.post(pid, "right").status_code == 201
    assert Rater(client, db).next().json()["pair_id"] == pids[-1]


BIG = "x" * 5000


@pytest.mark.parametrize("body, status", [
    ({"pair_id": "p9999", "choice": "left"}, 404),
    ({"pair_id": "../key", "choice": "left"}, 422),
    ({"pair_id": "p0000", "choice": "up"}, 422),
    ({"pair_id": "p0000", "choice": "LEFT"}, 422),
    ({"pair_id": "p0000"}, 422),
    ({"choice": "left"}, 422),
    ({"pair_id": "", "choice": "left"}, 422),
    ({"pair_id": 7, "choice": "left"}, 422),
    ({"pair_id": "p0000", "choice": "left", "rater": "someone-else"}, 422),  # who votes is the token's
    ({"pair_id": "p0000", "choice": "left", "system": "vqvp"}, 422),
    ({"pair_id": "p0000", "choice": "left", "elapsed_ms": -1}, 422),
    ({"pair_id": "p0000", "choice": "left", "elapsed_ms": 1.5}, 422),
    (["p0000", "left"], 422),
    ({"pair_id": "p0000", "choice": "left", "pad": BIG}, 413),
])
def test_bad_judgments_store_nothing(alice, db, body, status):
    r = alice.client.post("/api/judgments", json=body, headers=alice.auth)
    assert r.status_code == status, r.text
    if status == 422:  # FastAPI's documented shape, as /openapi.json says
        assert all(set(e) == {"loc", "msg", "type"} for e in r.json()["detail"]), r.json()
    assert rows(db) == []


@pytest.mark.parametrize("raw, status", [(b"not json", 400), (b"\xff\xfe", 400), (b"", 400)])
def test_malformed_bodies_store_nothing(alice, db, raw, status):
    headers = {"content-type": "application/json", **alice.auth}
    assert alice.client.post("/api/judgments", content=raw, headers=headers).status_code == status
    assert rows(db) == []


def test_streamed_body_over_the_limit_is_413(alice, db):
    def chunks():  # no Content-Length: the server counts while reading
        yield b'{"pair_id": "p0000", "choice": "left", "pad": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = alice.client.post("/api/judgments", content=chunks(),
                          headers={"content-type": "application/json", **alice.auth})
    assert r.status_code == 413
    assert rows(db) == []


def test_second_vote_same_rater_same_pair_is_409(client, db, alice):
    bob = Rater(client, db)
    assert alice.post("p0001", "left").status_code == 201
    assert alice.post("p0001", "right").status_code == 409
    assert bob.post("p0001", "right").status_code == 201  # another rater may
    assert rows(db) == [(alice.id, "p0001", "left"), (bob.id, "p0001", "right")]


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
    carol = Rater(first, judgments_path(study))
    done = []
    for choice in ("left", "cant_tell", "right"):
        pid = carol.next().json()["pair_id"]
        assert carol.post(pid, choice).status_code == 201
        done.append((pid, choice))
    del first  # no shutdown hook: every 201 was already committed
    carol.client = TestClient(create_app(study))
    prog = carol.client.get("/api/progress").json()
    assert prog["total_judgments"] == 3 and all(prog["pairs"][pid] == 1 for pid, _ in done)
    assert carol.post(done[0][0], "left").status_code == 409
    nxt = carol.next().json()
    assert nxt["judged_by_you"] == 3 and nxt["pair_id"] not in {pid for pid, _ in done}
    assert not (study / DB_NAME).exists()
    assert rows(judgments_path(study)) == [(carol.id, pid, c) for pid, c in done]
    key = load_key(study)
    assert set(key["pairs"]) >= {pid for pid, _ in done}


def test_progress_json_is_plain(client):
    prog = client.get("/api/progress").json()
    assert set(prog) == {"pairs", "min_judgments", "below_min", "complete", "total_judgments",
                         "raters", "n_pairs"}
    json.dumps(prog)


@pytest.mark.parametrize("body, status", [
    (b'{"pair_id": "p0000", "choice": "left", "elapsed_ms": NaN}', 400),
    (b'{"pair_id": "p0000", "choice": "left", "elapsed_ms": Infinity}', 400),
    (b'{"pair_id": "p0000", "choice": "left", "elapsed_ms": -Infinity}', 400),
    (b'{"pair_id": "\\ud800", "choice": "left"}', 400),
    (b'{"pair_id": "p0000", "choice": "\\udfff"}', 400),
    (b'{"\\ud800": 1}', 400),
    (b"[" * 2000 + b"]" * 2000, 400),
])
def test_odd_bodies_get_4xx_and_store_nothing(alice, db, body, status):
    """Bodies that once gave 500 (issue 14): non-finite numbers, lone surrogates, deep nesting."""
    r = alice.client.post("/api/judgments", content=body,
                          headers={"content-type": "application/json", **alice.auth})
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str)
    assert rows(db) == []
