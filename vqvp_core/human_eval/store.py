"""Where a rating study's judgments and invited raters live: one place, used by the package builder,
the server, the analysis and the CLI.

The database is a SQLite file BESIDE the study folder, named after the study's content:
``<study>.judgments-<digest>.sqlite``. Outside the folder, so rebuilding the study (``dvc repro``
replaces the DVC out whole) never deletes a judgment or an invitation; named by a digest of the
study's key, so a rebuilt study with the same pairs and sides keeps them, and one with other pairs
gets a fresh file instead of mixing judgments of different videos.

Two tables: ``judgments`` (one row per vote, UNIQUE per rater and pair) and ``raters`` (one row per
invitation: a random rater id, the SHA-256 of its token, an optional label for the study owner, when
it was created and, if so, revoked). Tokens themselves are never stored: whoever reads the database
cannot vote as anyone (see :func:`invite`).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import re
import secrets
import sqlite3
from pathlib import Path

LEGACY_NAME = "judgments.sqlite"  # inside the study folder, where vqvp put it before issue 13
TOKEN_BYTES = 32  # 256 bits from the OS's CSPRNG: not guessable, not derivable from anything served
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{20,128}")  # token_urlsafe's alphabet; anything else is refused unread

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
CREATE TABLE IF NOT EXISTS raters (
    rater        TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    label        TEXT,
    created      TEXT NOT NULL,
    revoked      TEXT
);
"""


def study_digest(folder) -> str:
    """12 hex digits of sha256 over the study's key.json: its pairs, sides and clips, not the
    video file names (random on every build), so a rebuild of the same study keeps its judgments."""
    folder = Path(folder)
    if not (folder / "key.json").is_file():
        raise ValueError(f"{folder} is not a rating study (key.json missing); build one with "
                         "`vqvp stage package_human_eval`")
    return hashlib.sha256((folder / "key.json").read_bytes()).hexdigest()[:12]


def judgments_path(folder) -> Path:
    """The judgments database of the study in ``folder``."""
    folder = Path(folder)
    return folder.with_name(f"{folder.name}.judgments-{study_digest(folder)}.sqlite")


def open_db(path) -> sqlite3.Connection:
    """A connection to the study database (created if missing), WAL + synchronous=FULL: a row is
    on disk when its transaction commits, so an acknowledged vote survives a crash."""
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.executescript(_SCHEMA)
    return conn


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def invite(db_path, n: int, label: str | None = None) -> list[tuple[str, str]]:
    """Issue ``n`` invitations: ``[(rater_id, token), ...]``. The token is returned once and only
    its SHA-256 is stored; the rater id (``r-`` + 8 random hex digits) is what the analysis and the
    owner's listings show. ``label`` (e.g. a batch name) stays in the database, never served."""
    if not isinstance(n, int) or not 1 <= n <= 10_000:
        raise ValueError(f"the number of invitations must be 1..10000, not {n!r}")
    if label is not None and (len(label) > 200 or not label.isprintable()):
        raise ValueError(f"label must be printable and at most 200 characters, not {label!r}")
    conn = open_db(db_path)
    try:
        out: list[tuple[str, str]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            taken = {r for (r,) in conn.execute("SELECT rater FROM raters")}
            while len(out) < n:
                rater, token = f"r-{secrets.token_hex(4)}", secrets.token_urlsafe(TOKEN_BYTES)
                if rater in taken:
                    continue
                taken.add(rater)
                conn.execute("INSERT INTO raters (rater, token_sha256, label, created) VALUES (?, ?, ?, ?)",
                             (rater, token_digest(token), label, _now()))
                out.append((rater, token))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return out
    finally:
        conn.close()


def revoke(db_path, rater: str) -> bool:
    """Revoke a rater's token (their judgments leave the analysis too). False if no such rater."""
    conn = open_db(db_path)
    try:
        cur = conn.execute("UPDATE raters SET revoked = ? WHERE rater = ? AND revoked IS NULL", (_now(), rater))
        return cur.rowcount == 1
    finally:
        conn.close()


def list_raters(db_path) -> list[dict]:
    """Every invitation with its judgment count: rater, label, created, revoked, judgments."""
    conn = open_db(db_path)
    try:
        rows = conn.execute(
            "SELECT r.rater, r.label, r.created, r.revoked, COUNT(j.id) FROM raters r "
            "LEFT JOIN judgments j ON j.rater = r.rater GROUP BY r.rater ORDER BY r.created, r.rater").fetchall()
    finally:
        conn.close()
    return [dict(zip(("rater", "label", "created", "revoked", "judgments"), r)) for r in rows]


def rater_for_token(conn: sqlite3.Connection, token: str | None) -> str | None:
    """The invited, unrevoked rater whose token this is, else None. The lookup is by the token's
    SHA-256, so its timing says nothing about how close a wrong token was."""
    if not isinstance(token, str) or TOKEN_RE.fullmatch(token) is None:
        return None
    row = conn.execute("SELECT rater FROM raters WHERE token_sha256 = ? AND revoked IS NULL",
                       (token_digest(token),)).fetchone()
    return row[0] if row else None
