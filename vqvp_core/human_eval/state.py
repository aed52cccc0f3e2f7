"""What the rating server holds for one study: its pairs and videos, the judgments database (one
SQLite connection per thread) and the pairs handed out but not yet judged. The HTTP layer
(server.py) only checks requests and calls these."""
from __future__ import annotations

import datetime as _dt
import hashlib
import sqlite3
import threading
import time
from pathlib import Path

from vqvp_core.human_eval.package import load_pairs, load_study
from vqvp_core.human_eval.store import judgments_path, open_db


class StudyState:
    def __init__(self, package_dir, db_path=None, reserve_seconds: float = 600.0) -> None:
        self.package_dir = Path(package_dir).resolve()
        self.study = load_study(self.package_dir)
        self.pairs = {p["pair_id"]: p for p in load_pairs(self.package_dir)}
        self.videos_dir = self.package_dir / "videos"
        self.video_names = {name for p in self.pairs.values() for side in ("left", "right") for name in p[side].values()}
        self.min_judgments = int(self.study["min_judgments"])
        self.db_file = Path(db_path) if db_path is not None else judgments_path(self.package_dir)
        open_db(self.db_file).close()  # create the schema (and the file) up front
        self.reserve_seconds = reserve_seconds
        self._local = threading.local()
        self._reservations: dict[str, dict[str, float]] = {}  # pair_id -> {rater: time handed out}
        self._lock = threading.Lock()

    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = open_db(self.db_file)
        return conn

    def counts(self) -> dict[str, int]:
        """Judgments per pair that count: invited, unrevoked raters' (as the analysis counts them)."""
        c = {pid: 0 for pid in self.pairs}
        for pid, k in self.db().execute("SELECT j.pair_id, COUNT(*) FROM judgments j JOIN raters r ON "
                                        "r.rater = j.rater AND r.revoked IS NULL GROUP BY j.pair_id"):
            if pid in c:
                c[pid] = k
        return c

    def video_path(self, name: str) -> Path | None:
        """A video the study's pairs name (a whitelist: ../, key.json and the rest are None)."""
        if name not in self.video_names or "/" in name or "\\" in name or name.startswith("."):
            return None
        path = self.videos_dir / name
        if not path.is_file() or path.resolve().parent != self.videos_dir.resolve():
            return None
        return path

    def next_for(self, rater: str) -> dict:
        """The pair to show `rater` next (the fewest judgments, counting other raters' open
        reservations; ties by a per-rater shuffle), reserved for them; or done."""
        judged = {r[0] for r in self.db().execute("SELECT pair_id FROM judgments WHERE rater = ?", (rater,))}
        c, now = self.counts(), time.monotonic()
        with self._lock:
            for pid in list(self._reservations):
                held = {r: t for r, t in self._reservations[pid].items() if now - t < self.reserve_seconds}
                if held:
                    self._reservations[pid] = held
                else:
                    del self._reservations[pid]
            todo = [pid for pid in self.pairs if pid not in judged]
            base = {"rater": rater, "judged_by_you": len(judged), "total_pairs": len(self.pairs)}
            if not todo:
                return {"done": True, **base}

            def rank(pid):
                pending = sum(1 for r in self._reservations.get(pid, ()) if r != rater)
                return c[pid] + pending, hashlib.sha256(f"{rater}\0{pid}".encode()).hexdigest()

            pid = min(todo, key=rank)
            self._reservations.setdefault(pid, {})[rater] = now
        p = self.pairs[pid]
        return {"done": False, "pair_id": pid,
                "left": {fmt: f"/videos/{name}" for fmt, name in p["left"].items()},
                "right": {fmt: f"/videos/{name}" for fmt, name in p["right"].items()},
                "remaining_for_you": len(todo), **base}

    def record(self, rater: str, pair_id: str, choice: str, elapsed_ms: int | None) -> dict:
        """Store one judgment, committed (fsync'ed) before returning; sqlite3.IntegrityError when
        this rater has judged this pair already."""
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
        conn = self.db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute("INSERT INTO judgments (rater, pair_id, choice, created, elapsed_ms) "
                               "VALUES (?, ?, ?, ?, ?)", (rater, pair_id, choice, created, elapsed_ms))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        with self._lock:
            self._reservations.get(pair_id, {}).pop(rater, None)
        return {"id": cur.lastrowid, "rater": rater, "pair_id": pair_id, "choice": choice, "created": created}

    def progress(self) -> dict:
        c = self.counts()
        raters = self.db().execute("SELECT COUNT(DISTINCT j.rater) FROM judgments j JOIN raters r ON "
                                   "r.rater = j.rater AND r.revoked IS NULL").fetchone()[0]
        below = [pid for pid, k in c.items() if k < self.min_judgments]
        return {"pairs": c, "min_judgments": self.min_judgments, "below_min": below, "complete": not below,
                "total_judgments": sum(c.values()), "raters": raters, "n_pairs": len(c)}
