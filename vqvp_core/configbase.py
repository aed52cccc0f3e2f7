"""`CoreConfig`: the base of every library config (a model's, the training loop's, the synthetic
source's) — pydantic models, as the params schema is, so one validation serves both.

- A config is immutable and built from keyword arguments or a plain dict (`from_dict`); unknown
  keys are errors, and a bad value raises the class's `error` (a ValueError) naming
  `Class.field`, the value and what was expected.
- `to_dict()` is what checkpoints store beside the weights, and what `from_dict` reads back.
- Inside `vqvp_core.config.Params` the same classes are the sections' `model` / `train` fields:
  there a bad value is reported with its params key (`vqvae.model.channels = 0: ...`).

Types are strict where a coercion would hide a mistake: an int field refuses `True` and `3.5`,
a bool field refuses `1` and `"yes"`, a float field takes ints but not bools.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

Int = Annotated[int, Strict()]
PositiveInt = Annotated[int, Strict(), Field(ge=1)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Bool = Annotated[bool, Strict()]

C = TypeVar("C", bound="CoreConfig")


class ConfigValueError(ValueError):
    """A config value is unknown, missing, of the wrong type or out of range."""


def odd_kernel(value: int, name: str) -> None:
    """Kernels are centred on their pixel: an odd size >= 3."""
    if value % 2 == 0 or value < 3:
        raise ValueError(f"{name} = {value}: expected an odd size >= 3")


def describe(exc: ValidationError, owner: str) -> str:
    """pydantic's errors as one line each: `Owner.field = value: what was expected`."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        key = f"{owner}.{field}" if field else owner
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown {owner} key {field!r} (value {err['input']!r})")
        elif err["type"] == "missing":
            lines.append(f"{key}: missing")
        elif field:
            lines.append(f"{key} = {err['input']!r}: {msg}")
        else:
            lines.append(f"{owner}: {msg}")
    return "; ".join(lines)


class CoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
    error: ClassVar[type[ValueError]] = ConfigValueError

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise self.error(describe(exc, type(self).__name__)) from None

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise cls.error(f"{cls.__name__}: expected a mapping of fields, got {type(data).__name__}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def replace(self: C, **changes: Any) -> C:
        """A copy with `changes`, validated like a new config."""
        return type(self)(**{**self.to_dict(), **changes})
