"""Shared by bench/gpu.py and bench/gpu_sampling.py: the run's clock, printing and formatting,
device helpers, and the preset's model and training configs.

Import it before anything heavy: its clock starts at import, so the budget counts the imports
(torch, CUDA initialisation) too.
"""
from __future__ import annotations

import time

T0 = time.monotonic()

import gc  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import torch  # noqa: E402

from vqvp_core.config import preset_dict  # noqa: E402
from vqvp_core.models.bottom_prior import BottomPriorConfig  # noqa: E402
from vqvp_core.models.top_prior import TopPriorConfig  # noqa: E402
from vqvp_core.models.vqvae import VQVAEConfig  # noqa: E402
from vqvp_core.train.config import TrainConfig  # noqa: E402
from vqvp_core.train.precision import resolve_precision  # noqa: E402

MODELS = ("vqvae", "top", "bottom")
SECTION = {"vqvae": "vqvae", "top": "top_prior", "bottom": "bottom_prior"}


def timed(fn, device: torch.device) -> tuple[object, float]:
    """(fn(), its seconds), the device synchronised on both sides."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def log(msg: str = "", stamp: bool = False) -> None:
    """Print now; ``stamp``: prefixed with the seconds since the start."""
    print(f"[{elapsed():5.1f} s] {msg}" if stamp else msg, flush=True)


def elapsed() -> float:
    return time.monotonic() - T0


def fmt_flops(x: float | None, per_s: bool = False) -> str:
    if x is None:
        return "n/a"
    unit = "FLOP/s" if per_s else "FLOP"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


def fmt_bytes(x: int | None) -> str:
    return "n/a" if x is None else f"{x / 2 ** 30:.2f} GiB"


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def datasheet_bf16_peak(name: str) -> tuple[float | None, str | None]:
    """The vendor's dense bf16 tensor-core peak (FLOP/s) for a torch.cuda.get_device_name(), or
    (None, None) for a device not in the table."""
    n = name.upper()
    if "H200" in n:                       # "NVIDIA H200", "NVIDIA GH200 ..." (an H100-class die)
        return 989e12, "H200 / H100 SXM"
    if "H100" in n:
        if "PCIE" in n:                   # "NVIDIA H100 PCIe"
            return 756e12, "H100 PCIe"
        if "NVL" in n:                    # H100 NVL: not in the table
            return None, None
        return 989e12, "H100 SXM"         # "NVIDIA H100 80GB HBM3"
    if "A100" in n:                       # SXM4 and PCIe alike
        return 312e12, "A100"
    return None, None


def resolve_amp(requested: str, device: torch.device) -> str:
    """'bf16' or 'fp32', by the trainer's rule (vqvp_core.train.precision): auto is bf16 where the
    device runs it natively (CUDA from compute capability 8.0; a CPU with AMX / AVX512-BF16), else
    fp32; an explicit bf16 on a device without it raises PrecisionError."""
    return resolve_precision(requested, device, key="--precision")


def autocast(device: torch.device, amp: str):
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp == "bf16" else nullcontext()


def is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "ALLOC_FAILED" in msg)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse_caps(text: str | None, defaults: dict[str, int]) -> dict[str, int]:
    """'8' -> every model capped at 8; 'vqvae=16,top=512' -> those two; None -> defaults."""
    caps = dict(defaults)
    if not text:
        return caps
    if "=" not in text:
        return {m: int(text) for m in caps}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = {"top_prior": "top", "bottom_prior": "bottom"}.get(key.strip(), key.strip())
        if key not in caps:
            raise SystemExit(f"--max-batch: unknown model {key!r}; expected some of {list(caps)}")
        caps[key] = int(value)
    return caps


class Clock:
    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.deadline = T0 + budget_s

    def left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass
class Preset:
    name: str
    vqvae: VQVAEConfig
    top: TopPriorConfig
    bottom: BottomPriorConfig
    train: dict[str, TrainConfig]  # the preset's TrainConfig per model (the trainer's optimizer)
    caps: dict[str, int]           # the preset's per-GPU batch per model

    @property
    def top_side(self) -> int:     # top grid height = width
        return self.vqvae.size // 8


def load_preset(name: str) -> Preset:
    params = preset_dict(name)
    cfgs = {"tiny": (VQVAEConfig.tiny(), TopPriorConfig.tiny(), BottomPriorConfig.tiny()),
            "paper": (VQVAEConfig.paper(), TopPriorConfig.paper(), BottomPriorConfig.paper())}[name]
    train = {m: TrainConfig.from_dict(params[SECTION[m]]["train"]) for m in MODELS}
    caps = {m: train[m].batch_size for m in MODELS}
    return Preset(name, *cfgs, train=train, caps=caps)

