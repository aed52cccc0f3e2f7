"""The rating server's request and response bodies: the models its OpenAPI document is built from
(``GET /openapi.json``), and the one validation of each field."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

CHOICE = Literal["left", "right", "cant_tell"]


def _whole(v):
    """JSON Schema's integer includes 897.0; a strict int field would refuse it."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


class Judgment(BaseModel):
    """A vote. Who votes comes from the bearer token, never from the body."""
    model_config = ConfigDict(extra="forbid", strict=True)

    pair_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    choice: CHOICE
    elapsed_ms: Annotated[int, Field(ge=0, le=86_400_000), BeforeValidator(_whole)] | None = Field(
        default=None, description="how long the pair was shown before the answer, in ms")


class Stored(BaseModel):
    id: int
    rater: str
    pair_id: str
    choice: CHOICE
    created: str


class Study(BaseModel):
    title: str | None
    n_pairs: int
    fps: float
    size: list[int]
    n_frames: int
    n_given: int
    min_judgments: int
    min_view_seconds: float
    display_px: int
    formats: list[str]
    choices: list[str]


class Next(BaseModel):
    """The rater's next pair (``done`` false) or the end of their study (``done`` true)."""
    done: bool
    rater: str
    judged_by_you: int
    total_pairs: int
    pair_id: str | None = None
    left: dict[str, str] | None = None  # format -> /videos/NAME
    right: dict[str, str] | None = None
    remaining_for_you: int | None = None


class Progress(BaseModel):
    pairs: dict[str, int]
    min_judgments: int
    below_min: list[str]
    complete: bool
    total_judgments: int
    raters: int
    n_pairs: int


class Error(BaseModel):
    detail: str


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Invalid(BaseModel):
    """422: the shape FastAPI documents for validation errors."""
    detail: list[ErrorItem]


def responses(*codes: int) -> dict:
    """OpenAPI ``responses`` for these error codes (every route also documents 429)."""
    why = {400: "not JSON, or not valid Unicode, or nested too deeply", 401: "no or an unknown rater token",
           403: "a write from another origin", 404: "no such pair or video", 408: "body too slow",
           409: "this rater has judged this pair", 413: "body too large",
           415: "writes must be application/json", 422: "a field is missing or invalid",
           429: "too many requests from this client (see Retry-After)"}
    return {c: {"model": Invalid if c == 422 else Error, "description": why[c]} for c in (*codes, 429)}
