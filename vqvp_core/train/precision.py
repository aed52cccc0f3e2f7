"""Which precision a training run uses: bf16 only where the device runs it natively, fp32 elsewhere.

`TrainConfig.precision` is one of:

* ``auto`` (the default in every preset and stage): bf16 autocast where the device has native
  bf16 arithmetic, fp32 elsewhere. Native means a CUDA device that runs bf16 in hardware
  (``torch.cuda.is_bf16_supported(including_emulation=False)``: compute capability 8.0+, or
  ROCm), or a CPU with AMX-BF16 or AVX512-BF16 (x86) or the BF16 extension (ARM64), as
  ``torch.cpu.get_capabilities()`` reports them.
* ``fp32``: always fp32.
* ``bf16``: bf16 autocast, and refused (`PrecisionError`) on a device without native bf16: on an
  AVX2 CPU autocast would be emulated, 50x+ slower than fp32, and a run sized for a budget would
  never finish. The refusal comes before any work (the stages check it before touching data;
  `Trainer.__init__` checks it again), as a bad-params failure.

The hardware probes (`torch_cpu_capability`, `cpu_features`, `cuda_bf16_supported`) are
module-level functions so that tests can monkeypatch them.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from vqvp_core.train.config import TrainConfigError

# x86 and ARM64 features (names as torch.cpu.get_capabilities() spells them) that run bf16
# matmuls / convolutions natively; any one is enough
NATIVE_BF16_FEATURES = ("amx_bf16", "avx512_bf16", "bf16", "sve_bf16")
_FEATURE_LABELS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16", "bf16": "BF16", "sve_bf16": "SVE-BF16"}


class PrecisionError(TrainConfigError):
    """bf16 was asked for on a device that has no native bf16."""


# ------------------------------------------------------------------------- probes (monkeypatchable)
def torch_cpu_capability() -> str:
    """ATen's vector dispatch level: 'AVX2', 'AVX512', 'SVE256', 'DEFAULT', ..."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - a probe never stops a run
        return "unknown"


def cpu_features() -> Mapping[str, Any]:
    """The CPU's features as torch sees them (torch.cpu.get_capabilities()); on a torch without
    it, the private probes older releases had (AMX tile, AVX512-BF16)."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        try:
            return dict(get())
        except Exception:  # noqa: BLE001
            pass
    out: dict[str, Any] = {}
    for name, probe in (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported")):
        fn = getattr(torch.cpu, probe, None)
        if fn is not None:
            try:
                out[name] = bool(fn())
            except Exception:  # noqa: BLE001
                pass
    return out


def cuda_bf16_supported(device: torch.device) -> bool:
    """Whether this CUDA device runs bf16 in hardware (not emulated)."""
    if not torch.cuda.is_available():
        return False
    with torch.cuda.device(device):
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # a torch without the argument
            return bool(torch.cuda.is_bf16_supported())


# ------------------------------------------------------------------------------------ decision
def cpu_bf16_features() -> tuple[str, ...]:
    """The native-bf16 features this CPU has, as labels ('AMX-BF16', 'AVX512-BF16', ...)."""
    feats = cpu_features()
    return tuple(_FEATURE_LABELS[f] for f in NATIVE_BF16_FEATURES if feats.get(f))


def cpu_capability() -> str:
    """The CPU as the metrics record it: ATen's dispatch level plus any native-bf16 features,
    e.g. 'AVX2' or 'AVX512+AMX-BF16+AVX512-BF16'."""
    return "+".join((torch_cpu_capability(), *cpu_bf16_features()))


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` runs bf16 natively (see the module doc)."""
    device = torch.device(device)
    if device.type == "cuda":
        return cuda_bf16_supported(device)
    if device.type == "cpu":
        return bool(cpu_bf16_features())
    return False


def _missing(device: torch.device) -> str:
    if device.type == "cpu":
        arm = str(cpu_features().get("architecture", "")).lower() in ("arm64", "aarch64")
        lacks = "no BF16 extension" if arm else "no AMX or AVX512-BF16"
        return (f"this CPU (capability {torch_cpu_capability()}, {lacks}) has no native bf16: "
                "autocast would be emulated, 50x+ slower")
    if device.type == "cuda":
        try:
            major, minor = torch.cuda.get_device_capability(device)
            what = f"compute capability {major}.{minor}, bf16 needs 8.0+"
        except Exception:  # noqa: BLE001
            what = "no native bf16"
        return f"this GPU ({device}, {what}) has no native bf16: autocast would be emulated or fail"
    return f"device {device} has no native bf16 autocast here"


def resolve_precision(requested: str, device: torch.device | str, key: str = "TrainConfig.precision") -> str:
    """'bf16' or 'fp32' for `requested` ('auto', 'fp32' or 'bf16') on `device`.

    Raises PrecisionError (naming `key`, the value and the hardware found) for 'bf16' on a device
    without native bf16, and TrainConfigError for an unknown value."""
    device = torch.device(device)
    if requested == "fp32":
        return "fp32"
    if requested == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if requested == "bf16":
        if not native_bf16(device):
            raise PrecisionError(f"{key} = 'bf16' but {_missing(device)}; use precision: auto or fp32")
        return "bf16"
    raise TrainConfigError(f"{key} = {requested!r} is invalid: expected one of ['auto', 'fp32', 'bf16']")


def amp_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None: no autocast)."""
    return torch.bfloat16 if precision == "bf16" else None


__all__ = ["PrecisionError", "NATIVE_BF16_FEATURES", "torch_cpu_capability", "cpu_features",
           "cuda_bf16_supported", "cpu_bf16_features", "cpu_capability", "native_bf16",
           "resolve_precision", "amp_dtype"]
