"""Serve a study folder (see :mod:`vqvp_core.human_eval.package`) to invited raters and store every judgment.

``create_app(package_dir)`` returns a FastAPI app; ``serve(package_dir)`` runs it with uvicorn.
Judgments go to the study's SQLite database beside its folder (``store.judgments_path``; or ``db_path``),
in WAL mode with ``synchronous=FULL``; each judgment is committed before the response is sent,
so a crash or restart loses nothing that a rater saw acknowledged.

Endpoints (the OpenAPI document at ``/openapi.json`` describes each, errors included)::

    GET  /                     the rating page (page.html; it reads the token from its #fragment)
    GET  /videos/{name}        a video of the study (only names listed in pairs.json)
    GET  /api/study            what the page needs: title, n_pairs, fps, min_view_seconds, ...
    GET  /api/next             the next pair for the token's rater, or {"done": true}     [token]
    POST /api/judgments        {"pair_id", "choice": left|right|cant_tell [, "elapsed_ms"]} -> 201  [token]
    GET  /api/progress         judgments per pair, pairs below min_judgments, raters

Raters: ``[token]`` routes need ``Authorization: Bearer TOKEN``, a token issued by
``store.invite`` (``vqvp human-eval invite``); the rater is the one the token names, never a
field of the request. No or an unknown or revoked token -> 401 (and costs the client
FAILED_AUTH_COST of its rate tokens, so guessing is slow as well as hopeless at 256 bits).

Writes: only JSON (else 415) from the study's own origin (``guard.cross_site_reason``; else 403).
Every client (by address) has a token bucket (``rate_per_s``, ``burst``; else 429 with Retry-After).

Assignment (``/api/next``): a pair this rater has not judged, the one with the fewest
judgments (counting pairs handed out to *other* raters in the last ``reserve_seconds`` and
not yet answered, so raters working at the same time spread over the pairs); ties are broken
by a fixed per-rater shuffle (a hash of rater and pair id), so raters see the pairs in
different orders. A rater can judge every pair once; when none is left the answer is done.

Errors (nothing is stored for any of them): body over ``max_body_bytes`` -> 413; not JSON ->
400; missing/invalid fields -> 422 (``{"detail": [{"loc", "msg", "type"}]}``, FastAPI's shape);
unknown pair -> 404; the same rater judging the same pair twice -> 409 (a UNIQUE constraint).
The names of the systems and key.json are never served.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from vqvp_core.human_eval.api import Judgment, Next, Progress, Stored, Study, responses
from vqvp_core.human_eval.guard import RateLimiter, client_key, cross_site_reason, origin_of, with_header_timeout
from vqvp_core.human_eval.state import StudyState
from vqvp_core.human_eval.store import LEGACY_NAME as DB_NAME
from vqvp_core.human_eval.store import open_db, rater_for_token

__all__ = ["create_app", "serve", "open_db", "DB_NAME"]

BODY_READ_TIMEOUT_S = 10.0  # a client that sends its (<= 4 KB) body slower than this gets 408
HEADER_TIMEOUT_S = 10.0  # ... and its request line and headers slower than this: connection closed
FAILED_AUTH_COST = 10.0  # a request with a wrong token spends this many of the client's rate tokens


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
PAGE_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data:; object-src 'none'; frame-ancestors 'none'")


def _error(status: int, detail, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _invalid(errors, prefix: tuple = ()) -> JSONResponse:
    """422 in FastAPI's documented shape, from pydantic-style errors (dicts with loc, msg, type)."""
    return _error(422, [{"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in errors])


def _client(request: Request) -> str:
    return client_key(request.client.host if request.client else None)


def _retry_after(wait: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(wait)))}


async def read_json_object(request: Request, max_bytes: int, timeout_s: float) -> dict | JSONResponse:
    """The request's body as a JSON object, or the error response: 413 (over ``max_bytes``, by
    Content-Length or as it streams), 408 (not received within ``timeout_s``), 400 (not JSON,
    NaN/Infinity, lone surrogates, nested too deeply), 422 (not an object)."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > max_bytes:
                return _error(413, f"body larger than {max_bytes} bytes")
        except ValueError:
            return _error(400, "bad Content-Length")
    body = bytearray()

    async def read() -> bool:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > max_bytes:
                return False
        return True

    try:
        if not await asyncio.wait_for(read(), timeout_s):
            return _error(413, f"body larger than {max_bytes} bytes")
    except asyncio.TimeoutError:
        return _error(408, f"body not received within {timeout_s:g} s")
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
        return _invalid([{"loc": ["body"], "msg": "body must be a JSON object", "type": "model_type"}])
    return data


def _guards(state: StudyState, limiter: RateLimiter, own_origin: str | None):
    """The dependencies of the rater routes: (the token's rater or 401, JSON-from-our-page or 403/415)."""
    bearer = HTTPBearer(auto_error=False, description="the token of the rater's invitation link "
                                                      "(`vqvp human-eval invite`)")

    def rater_of(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        """The invited rater this request's bearer token belongs to; 401 otherwise."""
        rater = rater_for_token(state.db(), creds.credentials if creds else None)
        if rater is None:
            wait = limiter.take(_client(request), FAILED_AUTH_COST)  # guessing tokens is rate-limited hard
            if wait:
                raise HTTPException(429, "too many requests", headers=_retry_after(wait))
            raise HTTPException(401, "a rater token is needed: open your invitation link",
                                headers={"WWW-Authenticate": "Bearer"})
        return rater

    def same_origin_json(request: Request) -> None:
        """Writes only as JSON from the study's own page: checked before the token, so a
        cross-site request is refused as such whatever it carries."""
        why = cross_site_reason(request.headers, request.url.scheme, own_origin)
        if why:
            raise HTTPException(403, f"writes only from the study's own page ({why})")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise HTTPException(415, "a judgment must be sent as application/json")

    return rater_of, same_origin_json


def create_app(package_dir, *, db_path=None, max_body_bytes: int = 4096,
               reserve_seconds: float = 600.0, rate_per_s: float = 10.0, burst: float = 60.0,
               public_origin: str | None = None, body_timeout_s: float = BODY_READ_TIMEOUT_S) -> FastAPI:
    """The rating app for the study folder ``package_dir`` (see the module doc).

    rate_per_s, burst: each client's token bucket (requests per second on average, and at once);
    public_origin: the ``scheme://host[:port]`` raters load the page from, when it is not the
    address the server sees (behind a reverse proxy); writes from any other origin are 403.
    """
    state = StudyState(package_dir, db_path, reserve_seconds)
    limiter = RateLimiter(rate_per_s, burst)
    rater_of, same_origin_json = _guards(state, limiter, origin_of(public_origin) if public_origin else None)

    app = FastAPI(title="vqvp human evaluation", version="2", docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    app.state.package_dir = state.package_dir
    app.state.db_path = state.db_file

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _invalid(exc.errors())

    @app.middleware("http")
    async def guard(request: Request, call_next):
        wait = limiter.take(_client(request))
        response = _error(429, "too many requests", _retry_after(wait)) if wait else await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/videos/{name}", response_class=FileResponse, responses={
        200: {"content": {t: {} for t in _VIDEO_TYPES.values()}, "description": "the video"},
        **responses(404)})
    def video(name: str):
        path = state.video_path(name)
        if path is None:
            raise HTTPException(404, "no such video")
        return FileResponse(path, media_type=_VIDEO_TYPES.get(path.suffix, "application/octet-stream"),
                            headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/study", response_model=Study, responses=responses())
    def api_study():
        return {k: state.study.get(k) for k in Study.model_fields}

    @app.get("/api/next", response_model=Next, responses=responses(401))
    def api_next(rater: str = Depends(rater_of)):
        return state.next_for(rater)

    @app.post("/api/judgments", status_code=201, response_model=Stored,
              responses=responses(400, 401, 403, 404, 408, 409, 413, 415, 422),
              dependencies=[Depends(same_origin_json)],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": Judgment.model_json_schema()}}}})
    async def api_judgments(request: Request, rater: str = Depends(rater_of)):
        data = await read_json_object(request, max_body_bytes, body_timeout_s)
        if isinstance(data, JSONResponse):
            return data
        try:
            j = Judgment.model_validate(data)
        except ValidationError as e:
            return _invalid(e.errors(include_url=False), prefix=("body",))
        if j.pair_id not in state.pairs:
            return _error(404, f"unknown pair {j.pair_id!r}")
        try:
            stored = await run_in_threadpool(state.record, rater, j.pair_id, j.choice, j.elapsed_ms)
        except sqlite3.IntegrityError:
            return _error(409, f"rater {rater!r} has already judged pair {j.pair_id!r}")
        return JSONResponse(stored, status_code=201)

    @app.get("/api/progress", response_model=Progress, responses=responses())
    def api_progress():
        return state.progress()

    return app


def serve(package_dir, host: str = "127.0.0.1", port: int = 8000, *,
          forwarded_allow_ips: str | None = None, header_timeout: float = HEADER_TIMEOUT_S,
          max_per_client: int | None = None, **kwargs) -> None:
    """Run the rating app with uvicorn (blocking). Extra keyword arguments go to create_app.

    Bounded: request line and headers within ``header_timeout`` s (else the connection closes), a
    body within BODY_READ_TIMEOUT_S (408), idle keep-alive connections close after 5 s, at most 64
    connections at once (more get 503), at most ``max_per_client`` (16) from one client.
    ``forwarded_allow_ips``: the reverse proxy's address, whose X-Forwarded-For then names the
    client for the rate limit (default: trust no proxy); with a proxy every connection comes from
    it, so the per-client connection cap is off unless given: the proxy must cap them.
    """
    if max_per_client is None:
        max_per_client = 0 if forwarded_allow_ips else 16
    import uvicorn

    uvicorn.run(create_app(package_dir, **kwargs), host=host, port=port, log_level="info",
                http=with_header_timeout(header_timeout, max_per_client), timeout_keep_alive=5, limit_concurrency=64,
                proxy_headers=forwarded_allow_ips is not None,
                forwarded_allow_ips=forwarded_allow_ips or "127.0.0.1", server_header=False)


if __name__ == "__main__":  # python -m vqvp_core.human_eval.server STUDY_DIR [--port 8000]
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package_dir")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--db", default=None)
    a = ap.parse_args()
    serve(a.package_dir, a.host, a.port, db_path=a.db)
