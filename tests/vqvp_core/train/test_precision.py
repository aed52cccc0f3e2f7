"""The precision rule (vqvp_core/train/precision.py) on simulated hardware: bf16 only where the
device runs it natively, fp32 elsewhere, an explicit bf16 without native support refused; the
probes are monkeypatched, so the results do not depend on this machine."""
from __future__ import annotations

import pytest
import torch

from vqvp_core.train import precision as P
from vqvp_core.train.config import TrainConfigError

X86 = {"architecture": "x86_64"}
CPUS = {  # name: (ATen dispatch level, torch.cpu.get_capabilities())
    "avx2": ("AVX2", {**X86, "avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_bf16": False}),
    "avx512": ("AVX512", {**X86, "avx2": True, "avx512_f": True, "avx512_bf16": False, "amx_bf16": False}),
    "avx512_bf16": ("AVX512", {**X86, "avx512_f": True, "avx512_bf16": True, "amx_bf16": False}),
    "amx": ("AVX512", {**X86, "avx512_f": True, "avx512_bf16": True, "amx_tile": True, "amx_bf16": True}),
    "arm_bf16": ("SVE256", {"architecture": "arm64", "sve": True, "bf16": True}),
    "arm_plain": ("DEFAULT", {"architecture": "arm64", "neon": True, "bf16": False}),
}
NATIVE = {"avx2": False, "avx512": False, "avx512_bf16": True, "amx": True, "arm_bf16": True, "arm_plain": False}
CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.fixture
def hardware(monkeypatch):
    """hardware(cpu_name, cuda_bf16=None): make the probes report that machine."""

    def set_(cpu: str, cuda_bf16: bool | None = None) -> None:
        level, feats = CPUS[cpu]
        monkeypatch.setattr(P, "torch_cpu_capability", lambda: level)
        monkeypatch.setattr(P, "cpu_features", lambda: feats)
        monkeypatch.setattr(P, "cuda_bf16_supported", lambda device: bool(cuda_bf16))

    return set_


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_auto_on_a_cpu_is_bf16_only_where_native(hardware, cpu):
    hardware(cpu)
    assert P.native_bf16(CPU) is NATIVE[cpu]
    assert P.resolve_precision("auto", CPU) == ("bf16" if NATIVE[cpu] else "fp32")


@pytest.mark.parametrize("cuda_bf16, expected", [(True, "bf16"), (False, "fp32")])
@pytest.mark.parametrize("cpu", ["avx2", "amx"])
def test_auto_on_cuda_follows_the_gpu_not_the_cpu(hardware, cpu, cuda_bf16, expected):
    hardware(cpu, cuda_bf16=cuda_bf16)
    assert P.resolve_precision("auto", CUDA) == expected


@pytest.mark.parametrize("device", [CPU, CUDA])
@pytest.mark.parametrize("cpu, cuda_bf16", [("avx2", False), ("amx", True)])
def test_explicit_fp32_is_always_fp32(hardware, cpu, cuda_bf16, device):
    hardware(cpu, cuda_bf16=cuda_bf16)
    assert P.resolve_precision("fp32", device) == "fp32"


@pytest.mark.parametrize("cpu", [c for c in sorted(CPUS) if NATIVE[c]])
def test_explicit_bf16_is_accepted_on_a_native_cpu(hardware, cpu):
    hardware(cpu)
    assert P.resolve_precision("bf16", CPU) == "bf16"
    assert P.amp_dtype("bf16") is torch.bfloat16 and P.amp_dtype("fp32") is None


@pytest.mark.parametrize("cpu, level, lacks", [
    ("avx2", "AVX2", "no AMX or AVX512-BF16"),
    ("avx512", "AVX512", "no AMX or AVX512-BF16"),
    ("arm_plain", "DEFAULT", "no BF16 extension"),
])
def test_explicit_bf16_is_refused_on_a_cpu_without_native_bf16(hardware, cpu, level, lacks):
    hardware(cpu)
    with pytest.raises(P.PrecisionError) as info:
        P.resolve_precision("bf16", CPU, key="vqvae.train.precision")
    msg = str(info.value)
    assert msg.startswith("vqvae.train.precision = 'bf16' but this CPU")
    assert f"(capability {level}, {lacks})" in msg and "emulated" in msg and "precision: auto or fp32" in msg
    assert isinstance(info.value, TrainConfigError)  # a config error, never a transient one


def test_explicit_bf16_is_refused_on_a_gpu_without_native_bf16(hardware, monkeypatch):
    hardware("amx", cuda_bf16=False)  # the CPU's bf16 says nothing about the GPU's
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    with pytest.raises(P.PrecisionError, match=r"compute capability 7\.5, bf16 needs 8\.0\+"):
        P.resolve_precision("bf16", CUDA)


def test_an_unknown_precision_is_a_config_error(hardware):
    hardware("amx")
    with pytest.raises(TrainConfigError, match="fp16"):
        P.resolve_precision("fp16", CPU)


@pytest.mark.parametrize("cpu, expected", [
    ("avx2", "AVX2"), ("avx512", "AVX512"), ("avx512_bf16", "AVX512+AVX512-BF16"),
    ("amx", "AVX512+AMX-BF16+AVX512-BF16"), ("arm_bf16", "SVE256+BF16"),
])
def test_cpu_capability_names_the_level_and_the_bf16_features(hardware, cpu, expected):
    hardware(cpu)
    assert P.cpu_capability() == expected


def test_the_real_probes_answer_on_this_machine():
    level = P.torch_cpu_capability()
    assert isinstance(level, str) and level and P.cpu_capability().startswith(level)
    assert isinstance(P.native_bf16(CPU), bool)
    assert P.resolve_precision("auto", CPU) in ("bf16", "fp32")
    if not torch.cuda.is_available():
        assert P.native_bf16(CUDA) is False
