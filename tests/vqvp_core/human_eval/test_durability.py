"""A real `vqvp human-eval serve` process under load: SIGKILLed twice while raters post, restarted,
and nothing acknowledged is lost or stored twice; raters racing on one pair store one vote."""
from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from vqvp_core.human_eval.analysis import analyze
from tests.vqvp_core.human_eval.conftest import make_study
from vqvp_core.human_eval.store import invite

pytestmark = pytest.mark.integration
N_PAIRS = 40


@pytest.fixture(scope="module")
def big_study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("durable") / "study", n_pairs=N_PAIRS, size=8, seed=1,
                      names=("A", "B"), formats=("gif",), min_judgments=1, display_px=64)


class Server:
    def __init__(self, study, db, tmp_path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.cmd = [sys.executable, "-m", "flows.cli", "human-eval", "serve", str(study), "--db", str(db),
                    "--port", str(self.port), "--rate", "10000", "--burst", "10000"]
        self.log = open(tmp_path / "server.log", "ab")
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, "the server exited"
            try:
                if httpx.get(self.url + "/api/study", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def server(big_study, tmp_path):
    srv = Server(big_study, tmp_path / "judgments.sqlite", tmp_path)
    srv.db = tmp_path / "judgments.sqlite"
    yield srv
    srv.stop()


def _rate(server, token, acked, errors, stop):
    """One rater's client: next pair, vote, until done; reconnects while the server is down."""
    auth = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        try:
            nxt = httpx.get(server.url + "/api/next", headers=auth, timeout=5).json()
            if nxt["done"]:
                return
            choice = ("left", "right", "cant_tell")[len(acked) % 3]
            r = httpx.post(server.url + "/api/judgments", headers=auth, timeout=5,
                           json={"pair_id": nxt["pair_id"], "choice": choice})
        except (httpx.HTTPError, json.JSONDecodeError):
            time.sleep(0.05)  # the server is down (killed): try again
            continue
        if r.status_code == 201:
            acked.append((r.json()["rater"], nxt["pair_id"], choice))
        elif r.status_code != 409:  # 409: stored before a kill, the answer lost with it
            errors.append(r.text)


def test_sigkill_under_load_loses_no_acknowledged_vote(server, big_study):
    raters = invite(server.db, 3)
    server.start()
    acked, errors, stop = [], [], threading.Event()
    threads = [threading.Thread(target=_rate, args=(server, tok, acked, errors, stop), daemon=True)
               for _, tok in raters]
    for t in threads:
        t.start()
    try:
        for kill_after in (20, 60):  # two SIGKILLs while the clients keep posting
            deadline = time.monotonic() + 60
            while len(acked) < kill_after:
                assert time.monotonic() < deadline, f"only {len(acked)} votes acknowledged"
                time.sleep(0.01)
            server.kill()
            time.sleep(0.3)
            server.start()
        for t in threads:
            t.join(120)
    finally:
        stop.set()
    assert not errors, errors[:3]
    assert not any(t.is_alive() for t in threads)
    conn = sqlite3.connect(server.db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = conn.execute("SELECT rater, pair_id, choice FROM judgments").fetchall()
    finally:
        conn.close()
    assert set(acked) <= set(stored)  # every acknowledged vote is there
    assert len(stored) == len(set((r, p) for r, p, _ in stored)) == 3 * N_PAIRS  # none twice, all done
    table = analyze(big_study, db_path=server.db, write=False)
    assert int(table.loc["Total judgements", "count"]) == len(stored)


def test_racing_clients_store_one_vote(server):
    [(rater, token)] = invite(server.db, 1)
    server.start()
    auth = {"Authorization": f"Bearer {token}"}
    for pair in [f"p{i:04d}" for i in range(10)]:
        codes, barrier = [], threading.Barrier(4)

        def vote(choice):
            with httpx.Client(timeout=10) as c:
                barrier.wait()
                codes.append(c.post(server.url + "/api/judgments", headers=auth,
                                    json={"pair_id": pair, "choice": choice}).status_code)

        threads = [threading.Thread(target=vote, args=(ch,)) for ch in ("left", "right", "cant_tell", "left")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(codes) == [201, 409, 409, 409], (pair, codes)
    conn = sqlite3.connect(server.db)
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT pair_id) FROM judgments").fetchone() == (10, 10)
    conn.close()
