"""Shared factories of the human-eval tests: a small study, its database, invited raters."""
from __future__ import annotations

import sqlite3
import warnings

import numpy as np
import pytest

from vqvp_core.human_eval.package import build_package
from vqvp_core.human_eval.server import create_app
from vqvp_core.human_eval.store import invite

with warnings.catch_warnings():  # starlette's note about httpx vs httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

N_PAIRS = 5
NAMES = ("SYSTEM_ALPHA", "SYSTEM_BETA")


def make_study(out, n_pairs=N_PAIRS, size=16, names=NAMES, seed=0, **kwargs):
    """A study of random 'predictions' against copy-last-frame (4 given + 12 frames of size^2)."""
    rng = np.random.default_rng(seed)
    given = rng.integers(0, 256, (n_pairs, 4, size, size, 3), dtype=np.uint8)
    a = rng.integers(0, 256, (n_pairs, 16, size, size, 3), dtype=np.uint8)
    build_package(out, given, a, np.repeat(given[:, -1:], 12, axis=1), names=names, seed=0, **kwargs)
    return out


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("srv") / "study", formats=("webm", "gif"), min_judgments=13)


@pytest.fixture
def db(tmp_path):
    return tmp_path / "judgments.sqlite"


@pytest.fixture
def client(package, db):
    return TestClient(create_app(package, db_path=db, rate_per_s=1e6, burst=1e6))


def rows(db):
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT rater, pair_id, choice FROM judgments ORDER BY id").fetchall()
    finally:
        conn.close()


class Rater:
    """An invited rater: its id and token, and the two calls the page makes."""

    def __init__(self, client, db, rater=None, token=None):
        if rater is None:
            [(rater, token)] = invite(db, 1)
        self.client, self.id, self.token = client, rater, token
        self.auth = {"Authorization": f"Bearer {token}"}

    def next(self):
        return self.client.get("/api/next", headers=self.auth)

    def post(self, pair_id, choice, **extra):
        return self.client.post("/api/judgments", headers=self.auth,
                                json={"pair_id": pair_id, "choice": choice, **extra})


@pytest.fixture
def alice(client, db):
    return Rater(client, db)
