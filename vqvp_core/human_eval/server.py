"""Serve a study folder (see :mod:`vqvp_core.human_eval.package`) to raters and store every judgment.

``create_app(package_dir)`` returns a FastAPI app; ``serve(package_dir)`` runs it with uvicorn.
Judgments go to the study's SQLite database beside its folder (``store.judgments_path``; or ``db_path``),
in WAL mode with ``synchronous=FULL``; each judgment is committed before the response is sent,
so a crash or restart loses nothing that a rater saw acknowledged.

Endpoints::

    GET  /                     the rating page (page.html)
    GET  /videos/{name}        a video of the study (only names listed in pairs.json)
    GET  /api/study            what the page needs: title, n_pairs, fps, min_view_seconds, ...
    GET  /api/next?rater=ID    the next pair for this rater, or {"done": true}
    POST /api/judgments        {"rater", "pair_id", "choice": left|right|cant_tell
                                [, "elapsed_ms"]} -> 201
    GET  /api/progress         judgments per pair, pairs below min_judgments, raters

Assignment (``/api/next``): a pair this rater has not judged, the one with the fewest
judgments (counting pairs handed out to *other* raters in the last ``reserve_seconds`` and
not yet answered, so raters working at the same time spread over the pairs); ties are broken
by a fixed per-rater shuffle (a hash of rater and pair id), so raters see the pairs in
different orders. A rater can judge every pair once; when none is left the answer is done.

Errors (nothing is stored for any of them): body over ``max_body_bytes`` -> 413; not JSON ->
400; missing/invalid fields (rater id must match ``RATER_RE``; choice one of the three) -> 422;
unknown pair -> 404; the same rater judging the same pair twice -> 409 (a UNIQUE constraint).
The names of the systems and key.json are never served.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool

from vqvp_core.human_eval.package import load_pairs, load_study
from vqvp_core.human_eval.store import judgments_path

__all__ = ["create_app", "serve", "open_db", "RATER_RE", "DB_NAME"]

DB_NAME = "judgments.sqlite"
_RATER = r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}"
RATER_PATTERN = f"^{_RATER}$"  # for the schema; checked with fullmatch (Python's `$` matches before a final newline)
RATER_RE = re.compile(_RATER)
BODY_READ_TIMEOUT_S = 10.0  # a client that sends its (<= 4 KB) body slower than this gets 408


def valid_rater(rater) -> bool:
    """The one validation of a rater id, for every route (query and body alike)."""
    return isinstance(rater, str) and RATER_RE.fullmatch(rater) is not None


def _clean_json(obj, depth: int = 0):
    """Refuse what json.loads lets through but no field can hold: lone surrogates in strings and
    keys (they cannot be encoded back, so an error message about them fails too)."""
    if isinstance(obj, str):
        obj.encode("utf-8")  # UnicodeEncodeError on a lone surrogate
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _clean_json(k, depth + 1)
            _clean_json(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _clean_json(v, depth + 1)


def _no_constants(name: str):
    raise ValueError(f"{name} is not a number")
_VIDEO_TYPES = {".webm": "video/webm", ".gif": "image/gif", ".mp4": "video/mp4"}
PAGE = Path(__file__).with_name("page.html")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    rater      TEXT NOT NULL,
    pair_id    TEXT NOT NULL,
    choice     TEXT NOT NULL CHECK (choice IN ('left', 'right', 'cant_tell')),
    created    TEXT NOT NULL,
    elapsed_ms INTEGER,
    UNIQUE (rater, pair_id)
);
CREATE INDEX IF NOT EXISTS judgments_pair ON judgments (pair_id);
"""


def open_db(path) -> sqlite3.Connection:
    """A connection to the judgments database (created if missing), WAL + synchronous=FULL."""
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.executescript(_SCHEMA)
    return conn


class Judgment(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    rater: str = Field(pattern=RATER_PATTERN)  # and valid_rater (below): one rule for every route
    pair_id: str = Field(min_length=1, max_length=64)
    choice: Literal["left", "right", "cant_tell"]
    elapsed_ms: int | None = Field(default=None, ge=0, le=86_400_000)

    @field_validator("rater")
    @classmethod
    def _rater(cls, v: str) -> str:
        if not valid_rater(v):
            raise ValueError(f"rater must match {RATER_PATTERN}")
        return v


def _error(status: int, detail) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def create_app(package_dir, *, db_path=None, max_body_bytes: int = 4096,
               reserve_seconds: float = 600.0) -> FastAPI:
    """The rating app for the study folder ``package_dir`` (see the module doc)."""
    package_dir = Path(package_dir).resolve()
    study = load_study(package_dir)
    pairs = load_pairs(package_dir)
    pair_by_id = {p["pair_id"]: p for p in pairs}
    videos_dir = package_dir / "videos"
    video_names = {name for p in pairs for side in ("left", "right") for name in p[side].values()}
    min_judgments = int(study["min_judgments"])
    db_file = Path(db_path) if db_path is not None else judgments_path(package_dir)
    open_db(db_file).close()  # create the schema (and the file) up front

    local = threading.local()
    reservations: dict[str, dict[str, float]] = {}  # pair_id -> {rater: time handed out}
    lock = threading.Lock()

    def db() -> sqlite3.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = open_db(db_file)
        return conn

    def counts() -> dict[str, int]:
        c = {pid: 0 for pid in pair_by_id}
        for pid, k in db().execute("SELECT pair_id, COUNT(*) FROM judgments GROUP BY pair_id"):
            if pid in c:
                c[pid] = k
        return c

    def check_rater(rater: str | None) -> str:
        if not valid_rater(rater):
            raise HTTPException(422, f"rater must match {RATER_PATTERN}")
        return rater

    app = FastAPI(title="vqvp human evaluation", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.package_dir = package_dir
    app.state.db_path = db_file

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.get("/", response_class=HTMLResponse)
    def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={
            "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                                       "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                                       "object-src 'none'; "
                                       "frame-ancestors 'none'"})

    @app.get("/videos/{name}")
    def video(name: str):
        # a whitelist: only the files pairs.json names; anything else (../, key.json) is 404
        if name not in video_names or "/" in name or "\\" in name or name.startswith("."):
            raise HTTPException(404, "no such video")
        path = videos_dir / name
        if not path.is_file() or path.resolve().parent != videos_dir.resolve():
            raise HTTPException(404, "no such video")
        return FileResponse(path, media_type=_VIDEO_TYPES.get(path.suffix, "application/octet-stream"),
                            headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/study")
    def api_study():
        return {k: study.get(k) for k in ("title", "n_pairs", "fps", "size", "n_frames", "n_given",
                                          "min_judgments", "min_view_seconds", "display_px",
                                          "formats", "choices")}

    @app.get("/api/next")
    def api_next(rater: str | None = Query(default=None, max_length=64)):
        rater = check_rater(rater)
        conn = db()
        judged = {r[0] for r in conn.execute("SELECT pair_id FROM judgments WHERE rater = ?", (rater,))}
        c = counts()
        now = time.monotonic()
        with lock:
            for pid in list(reservations):
                held = {r: t for r, t in reservations[pid].items() if now - t < reserve_seconds}
                if held:
                    reservations[pid] = held
                else:
                    del reservations[pid]
            todo = [pid for pid in pair_by_id if pid not in judged]
            base = {"judged_by_you": len(judged), "total_pairs": len(pair_by_id)}
            if not todo:
                return {"done": True, **base}

            def rank(pid):
                pending = sum(1 for r in reservations.get(pid, ()) if r != rater)
                tie = hashlib.sha256(f"{rater}\0{pid}".encode()).hexdigest()
                return (c[pid] + pending, tie)

            pid = min(todo, key=rank)
            reservations.setdefault(pid, {})[rater] = now
        p = pair_by_id[pid]
        return {"done": False, "pair_id": pid,
                "left": {fmt: f"/videos/{name}" for fmt, name in p["left"].items()},
                "right": {fmt: f"/videos/{name}" for fmt, name in p["right"].items()},
                "remaining_for_you": len(todo), **base}

    @app.post("/api/judgments", status_code=201)
    async def api_judgments(request: Request):
        length = request.headers.get("content-length")
        if length is not None:
            try:
                if int(length) > max_body_bytes:
                    return _error(413, f"body larger than {max_body_bytes} bytes")
            except ValueError:
                return _error(400, "bad Content-Length")
        body = bytearray()

        async def read() -> bool:
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > max_body_bytes:
                    return False
            return True

        try:
            if not await asyncio.wait_for(read(), BODY_READ_TIMEOUT_S):
                return _error(413, f"body larger than {max_body_bytes} bytes")
        except asyncio.TimeoutError:
            return _error(408, f"body not received within {BODY_READ_TIMEOUT_S:g} s")
        try:
            data = json.loads(bytes(body).decode("utf-8"), parse_constant=_no_constants)
            _clean_json(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _error(400, "body is not JSON")
        except UnicodeEncodeError:  # before ValueError, its base class
            return _error(400, "body holds a lone surrogate (not valid Unicode)")
        except ValueError as e:  # NaN, Infinity, -Infinity
            return _error(400, f"body is not JSON: {e}")
        except RecursionError:
            return _error(400, "body is nested too deeply")
        if not isinstance(data, dict):
            return _error(422, "body must be a JSON object")
        try:
            j = Judgment.model_validate(data)
        except ValidationError as e:
            return _error(422, json.loads(e.json(include_url=False, include_context=False)))
        if j.pair_id not in pair_by_id:
            return _error(404, f"unknown pair {j.pair_id!r}")
        created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")

        def insert() -> int:  # committed (fsync'ed) before the 201 goes out
            conn = db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    "INSERT INTO judgments (rater, pair_id, choice, created, elapsed_ms) "
                    "VALUES (?, ?, ?, ?, ?)", (j.rater, j.pair_id, j.choice, created, j.elapsed_ms))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return cur.lastrowid

        try:
            row_id = await run_in_threadpool(insert)
        except sqlite3.IntegrityError:
            return _error(409, f"rater {j.rater!r} has already judged pair {j.pair_id!r}")
        with lock:
            reservations.get(j.pair_id, {}).pop(j.rater, None)
        return JSONResponse({"id": row_id, "rater": j.rater, "pair_id": j.pair_id,
                             "choice": j.choice, "created": created}, status_code=201)

    @app.get("/api/progress")
    def api_progress():
        c = counts()
        raters = db().execute("SELECT COUNT(DISTINCT rater) FROM judgments").fetchone()[0]
        below = [pid for pid, k in c.items() if k < min_judgments]
        return {"pairs": c, "min_judgments": min_judgments, "below_min": below,
                "complete": not below, "total_judgments": sum(c.values()), "raters": raters,
                "n_pairs": len(c)}

    return app


def serve(package_dir, host: str = "127.0.0.1", port: int = 8000, **kwargs) -> None:
    """Run the rating app with uvicorn (blocking). Extra keyword arguments go to create_app."""
    import uvicorn

    # bounded: idle keep-alive connections close after 5 s, at most 64 connections at once (more
    # get 503); a body must arrive within BODY_READ_TIMEOUT_S (408). uvicorn has no timeout for
    # slow headers: on an open network, run it behind a reverse proxy that has one (README).
    uvicorn.run(create_app(package_dir, **kwargs), host=host, port=port, log_level="info",
                timeout_keep_alive=5, limit_concurrency=64)


if __name__ == "__main__":  # python -m vqvp_core.human_eval.server STUDY_DIR [--port 8000]
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package_dir")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    a = ap.parse_args()
    serve(a.package_dir, a.host, a.port)
