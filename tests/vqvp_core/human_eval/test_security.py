"""The rating study against hostile clients (issue 14): invited raters only, same-origin JSON writes,
a per-client rate limit, a deadline for slow headers, and an OpenAPI document a fuzzer can use."""
from __future__ import annotations

import os
import socket
import stat
import threading
import time
from types import SimpleNamespace

import pytest

from commands.human_eval import main as human_eval
from tests.vqvp_core.human_eval.conftest import Rater, TestClient, rows
from vqvp_core.human_eval.analysis import analyze
from vqvp_core.human_eval.guard import RateLimiter, client_key, origin_of
from vqvp_core.human_eval.server import create_app
from vqvp_core.human_eval.store import invite, list_raters, revoke


# --- invited raters -------------------------------------------------------------------------

@pytest.mark.parametrize("auth", [None, "Bearer", "Bearer " + "A" * 43, "Bearer short", "Basic YWxpY2U6eA==",
                                  "Bearer " + "x" * 200, "Bearer abc\ndef-ghi-jkl-mno-pqr"])
def test_no_valid_token_no_pair_and_no_vote(client, db, alice, auth):
    headers = {} if auth is None else {"Authorization": auth}
    r = client.get("/api/next", headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert alice.id not in r.text  # nothing about any rater
    r = client.post("/api/judgments", json={"pair_id": "p0000", "choice": "left"}, headers=headers)
    assert r.status_code == 401
    assert rows(db) == []


def test_a_rater_query_reveals_nothing_and_votes_as_nobody(client, db, alice):
    """The attack of issue 14: `GET /api/next?rater=alice` and voting as alice without her token."""
    assert alice.post("p0000", "left").status_code == 201
    r = client.get("/api/next", params={"rater": alice.id})
    assert r.status_code == 401 and "judged" not in r.text
    r = client.post("/api/judgments", json={"rater": alice.id, "pair_id": "p0001", "choice": "left"})
    assert r.status_code == 401
    assert rows(db) == [(alice.id, "p0000", "left")]


def test_invitations_are_random_and_only_their_digest_is_stored(db):
    issued = invite(db, 50, label="batch 1")
    raters, tokens = zip(*issued)
    assert len(set(raters)) == 50 and len(set(tokens)) == 50
    assert all(len(t) >= 40 for t in tokens)  # 32 random bytes, url-safe base64
    stored = db.read_bytes()
    assert not any(t.encode() in stored for t in tokens)
    listed = list_raters(db)
    assert {r["rater"] for r in listed} == set(raters) and {r["label"] for r in listed} == {"batch 1"}
    with pytest.raises(ValueError, match="1..10000"):
        invite(db, 0)


def test_revoked_raters_cannot_vote_and_leave_the_analysis(client, db, package):
    ann, bob = Rater(client, db), Rater(client, db)
    assert ann.post("p0000", "left").status_code == 201
    assert bob.post("p0000", "right").status_code == 201
    assert revoke(db, bob.id) and not revoke(db, bob.id)
    assert bob.next().status_code == 401 and bob.post("p0001", "left").status_code == 401
    table = analyze(package, db_path=db, write=False)
    assert table.attrs["n_raters"] == 1 and table.attrs["excluded_judgments"] == 1
    assert int(table.loc["Total judgements", "count"]) == 1


def test_analysis_counts_only_invited_raters(client, db, package):
    ann = Rater(client, db)
    assert ann.post("p0000", "left").status_code == 201
    import sqlite3  # a row no server would write now: a rater without an invitation
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO judgments (rater, pair_id, choice, created) VALUES ('ghost', 'p0001', 'left', 't')")
    conn.commit()
    conn.close()
    table = analyze(package, db_path=db, write=False)
    assert table.attrs["n_raters"] == 1 and table.attrs["excluded_judgments"] == 1


def test_invite_raters_revoke_from_the_command_line(package, tmp_path, capsys):
    db, out = tmp_path / "j.sqlite", tmp_path / "links.csv"
    assert human_eval(["invite", str(package), "-n", "3", "--db", str(db), "--out", str(out),
                       "--base-url", "https://rate.example.org/", "--label", "pilot"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "rater,link" and len(lines) == 4
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    rater, link = lines[1].split(",")
    assert link.startswith("https://rate.example.org/#token=")
    token = link.split("#token=")[1]
    app = TestClient(create_app(package, db_path=db))
    nxt = app.get("/api/next", headers={"Authorization": f"Bearer {token}"}).json()
    assert nxt["rater"] == rater and not nxt["done"]
    capsys.readouterr()
    assert human_eval(["raters", str(package), "--db", str(db)]) == 0
    listing = capsys.readouterr().out
    assert rater in listing and "pilot" in listing and "3 rater(s), 3 active" in listing
    assert human_eval(["revoke", str(package), rater, "--db", str(db)]) == 0
    assert human_eval(["revoke", str(package), rater, "--db", str(db)]) == 2
    assert app.get("/api/next", headers={"Authorization": f"Bearer {token}"}).status_code == 401


# --- same-origin JSON writes ------------------------------------------------------------------

@pytest.mark.parametrize("headers, status", [
    ({"Origin": "http://evil.example"}, 403),
    ({"Origin": "null"}, 403),
    ({"Origin": "http://testserver.evil.example"}, 403),
    ({"Origin": "https://testserver"}, 403),  # another scheme is another origin
    ({"Sec-Fetch-Site": "cross-site"}, 403),
    ({"Sec-Fetch-Site": "same-site", "Origin": "http://testserver"}, 403),
    ({"Origin": "http://testserver"}, 201),
    ({"Origin": "http://TESTSERVER:80", "Sec-Fetch-Site": "same-origin"}, 201),
    ({}, 201),  # not a browser: nothing another site could drive (the token still decides)
])
def test_writes_only_from_the_studys_own_origin(alice, db, headers, status):
    r = alice.client.post("/api/judgments", json={"pair_id": "p0000", "choice": "left"},
                          headers={**alice.auth, **headers})
    assert r.status_code == status, r.text
    assert rows(db) == ([(alice.id, "p0000", "left")] if status == 201 else [])


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/json-seq", None])
def test_writes_only_as_json(alice, db, content_type):
    """The 'simple' requests a page of another site can send without a CORS preflight."""
    headers = {**alice.auth, **({"Content-Type": content_type} if content_type else {})}
    r = alice.client.post("/api/judgments", content=b'{"pair_id": "p0000", "choice": "left"}', headers=headers)
    assert r.status_code == 415
    assert rows(db) == []
    ok = alice.client.post("/api/judgments", content=b'{"pair_id": "p0000", "choice": "left"}',
                           headers={**alice.auth, "Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 201


def test_a_public_origin_replaces_the_host_header(package, db):
    client = TestClient(create_app(package, db_path=db, public_origin="https://rate.example.org"))
    ann = Rater(client, db)
    body = {"pair_id": "p0000", "choice": "left"}
    assert client.post("/api/judgments", json=body, headers={**ann.auth, "Origin": "http://testserver"}).status_code == 403
    assert client.post("/api/judgments", json=body,
                       headers={**ann.auth, "Origin": "https://rate.example.org"}).status_code == 201


def test_cross_site_writes_are_refused_as_such_before_any_token_is_looked_at(client, db):
    r = client.post("/api/judgments", content=b'{"pair_id": "p0000", "choice": "left"}',
                    headers={"Content-Type": "text/plain", "Origin": "http://evil.example"})
    assert r.status_code == 403
    r = client.post("/api/judgments", content=b'{"pair_id": "p0000", "choice": "left"}',
                    headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert rows(db) == []


def test_revoked_votes_leave_progress_and_assignment(client, db):
    ann, bob = Rater(client, db), Rater(client, db)
    assert bob.post("p0000", "left").status_code == 201
    assert client.get("/api/progress").json()["pairs"]["p0000"] == 1
    revoke(db, bob.id)
    prog = client.get("/api/progress").json()
    assert prog["pairs"]["p0000"] == 0 and prog["raters"] == 0 and prog["total_judgments"] == 0
    assert ann.next().json()["pair_id"] is not None


def test_no_cors_for_other_origins(client):
    r = client.options("/api/judgments", headers={"Origin": "http://evil.example",
                                                  "Access-Control-Request-Method": "POST"})
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers


def test_origin_of():
    assert origin_of("HTTPS://Rate.Example.org:443/x?y") == "https://rate.example.org"
    assert origin_of("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    with pytest.raises(ValueError):
        origin_of("rate.example.org")


# --- rate limit -------------------------------------------------------------------------------

def test_rate_limit_per_client(package, db):
    app = create_app(package, db_path=db, rate_per_s=0.5, burst=5)
    one, other = TestClient(app, client=("10.0.0.1", 1)), TestClient(app, client=("10.0.0.2", 1))
    codes = [one.get("/api/study").status_code for _ in range(8)]
    assert codes == [200] * 5 + [429] * 3
    r = one.get("/api/study")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert other.get("/api/study").status_code == 200  # another client has its own bucket


def test_guessing_tokens_is_throttled_hard(package, db):
    app = create_app(package, db_path=db, rate_per_s=0.1, burst=25)
    guesser = TestClient(app, client=("10.0.0.3", 1))
    codes = [guesser.get("/api/next", headers={"Authorization": "Bearer " + "g" * 43}).status_code
             for _ in range(4)]
    assert codes == [401, 401, 429, 429]  # each wrong token costs 10 requests' worth


@pytest.mark.parametrize("host, key", [
    ("10.1.2.3", "10.1.2.3"), ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"), ("::ffff:10.1.2.3", "10.1.2.3"), (None, "?"),
    ("testclient", "testclient"),
])
def test_one_ipv6_network_is_one_client(host, key):
    assert client_key(host) == key


def test_rate_limiter_refills_and_stays_bounded(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    rl = RateLimiter(rate=2, burst=4, max_clients=3)
    assert [rl.take("a") for _ in range(5)][-1] == pytest.approx(0.5)
    now[0] += 1.0  # two tokens back
    assert rl.take("a") == 0 and rl.take("a") == 0 and rl.take("a") > 0
    for c in "bcdef":
        rl.take(c)
    assert len(rl._buckets) == 3  # at most max_clients buckets


# --- slow clients (a real uvicorn) --------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live(package, db):
    import uvicorn

    from vqvp_core.human_eval.guard import with_header_timeout

    port = _free_port()
    app = create_app(package, db_path=db, body_timeout_s=1.0, rate_per_s=1e6, burst=1e6)
    app.state.raters = invite(db, 1)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, limit_concurrency=64,
                                        http=with_header_timeout(1.0, max_per_client=4), timeout_keep_alive=5,
                                        log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    yield SimpleNamespace(addr=("127.0.0.1", port), token=app.state.raters[0][1])
    srv.should_exit = True
    thread.join(10)


def _closed_after(sock: socket.socket, trickle: bytes, limit: float) -> float:
    """Send `trickle` one byte every 0.2 s until the server closes; the seconds that took."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    for b in trickle:
        if time.monotonic() - t0 > limit:
            break
        try:
            sock.send(bytes([b]))
            if sock.recv(1024) == b"":
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - t0
    return float("inf")


@pytest.mark.parametrize("trickle", [b"", b"GET /api/study HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100])
def test_slow_headers_are_cut_off(live, trickle):
    with socket.create_connection(live.addr) as sock:
        if not trickle:  # connect and send nothing
            sock.settimeout(5)
            t0 = time.monotonic()
            assert sock.recv(1024) == b""
            took = time.monotonic() - t0
        else:
            took = _closed_after(sock, trickle, limit=8)
    assert took < 3, f"connection held {took:.1f} s past a 1 s header deadline"
    with socket.create_connection(live.addr) as sock:  # a normal client still gets served
        sock.sendall(b"GET /api/study HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(64).startswith(b"HTTP/1.1 200")


def test_keep_alive_connection_gets_a_new_deadline_per_request(live):
    with socket.create_connection(live.addr) as sock:
        sock.settimeout(5)
        sock.sendall(b"GET /api/study HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        took = _closed_after(sock, b"GET /api/study HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100, limit=8)
    assert took < 3


def _post_head(token: str, length: int = 40) -> bytes:
    return (f"POST /api/judgments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {length}\r\n\r\n").encode()


def test_a_body_that_does_not_come_is_408_and_the_connection_closes(live, db):
    with socket.create_connection(live.addr) as sock:
        sock.settimeout(5)
        t0 = time.monotonic()
        sock.sendall(_post_head(live.token))  # and no body
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert 0.8 < time.monotonic() - t0 < 4
        assert _closed_after(sock, b"x" * 50, limit=5) < 1  # the rest of a body is not waited for
    assert rows(db) == []


@pytest.mark.parametrize("head", ["POST /api/judgments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                  "Content-Length: 100000\r\n\r\n",  # no token: 401 before the body
                                  "GET /api/study HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"])
def test_an_early_answer_closes_a_connection_with_a_body_still_coming(live, head):
    """A client answered before it sent its body cannot keep the connection by trickling it."""
    with socket.create_connection(live.addr) as sock:
        sock.settimeout(5)
        sock.sendall(head.encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 ")
        assert _closed_after(sock, b"y" * 100, limit=6) < 2


def test_one_client_cannot_take_every_connection(live):
    socks = [socket.create_connection(live.addr) for _ in range(10)]
    try:
        import select

        time.sleep(0.3)  # well within the 1 s header deadline
        readable, _, _ = select.select(socks, [], [], 0.2)
        closed = sum(s.recv(1) == b"" for s in readable)
        assert closed == 6  # 4 kept (max_per_client), the rest closed at once
    finally:
        for s in socks:
            s.close()
    time.sleep(0.2)  # their places are free again
    with socket.create_connection(live.addr) as sock:
        sock.sendall(b"GET /api/study HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(64).startswith(b"HTTP/1.1 200")


def test_one_token_rule_a_trailing_newline_is_not_the_token(db):
    """Issue 14.4: `abc\\n` passed one route's check (Python's `$` matches before a final newline);
    the token is checked with one fullmatch wherever it comes from."""
    from vqvp_core.human_eval.store import open_db, rater_for_token

    [(rater, token)] = invite(db, 1)
    conn = open_db(db)
    try:
        assert rater_for_token(conn, token) == rater
        for bad in (token + "\n", token + "\r\n", "\n" + token, token + " ", token[:-1], "", None):
            assert rater_for_token(conn, bad) is None, repr(bad)
    finally:
        conn.close()
