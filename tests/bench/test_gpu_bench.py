"""bench/gpu.py, the checks for a lent GPU, known to work before one is lent: the whole script on CPU
at the tiny preset's shapes (a subprocess, --steps 1, --json), its time guards and watchdog, and the
parts that only a GPU reaches (the batch search by doubling until out of memory, the datasheet
peaks) driven directly."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vqvp_core.train.precision import resolve_precision

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu.py"

_spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
gpu = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = gpu  # its dataclasses look their module up while it loads
_spec.loader.exec_module(gpu)


def _run(tmp_path: Path, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--preset", "tiny",
                           "--json", str(out), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    data = json.loads(out.read_text()) if out.exists() else {}
    return proc, data


@pytest.mark.slow
def test_cpu_tiny_run_has_every_figure(tmp_path):
    # batch 1: the same code path as batch 2 (the CPU default), half the time on a shared machine
    proc, data = _run(tmp_path, "--steps", "1", "--max-batch", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert data["ok"] is True and data["errors"] == [] and data["skipped"] == []
    assert data["peak"]["measured"] > 0 and data["peak"]["datasheet"] is None
    assert set(data["train"]) == {"vqvae", "top", "bottom"}
    for m, r in data["train"].items():
        assert r["batch"] == 1 and r["steps_timed"] == 1, m
        assert r["step_s"] > 0 and r["flops_per_step"] > 0 and r["samples_per_s"] > 0, m
        assert 0 < r["mfu_measured"] and r["mfu_datasheet"] is None, m
        assert r["precision"] == resolve_precision("auto", "cpu"), m   # fp32 without native bf16
        assert r["grad_clip"] == 1.0 and r["batch_limited_by"] == "fixed (CPU)", m
    assert data["train"]["top"]["codes_per_step"] == 3 * 8 * 8            # top grid 4x8x8, 3 predicted
    assert data["train"]["bottom"]["codes_per_step"] == 6 * 16 * 16       # bottom 8x16x16, 6 predicted
    pred = data["predict"]
    assert pred["size"] == 64 and pred["codes"] == 192 + 1536
    assert pred["seconds"] > 0 and pred["codes_per_s"] > 0 and pred["top_s"] > 0 and pred["bottom_s"] > 0
    assert pred["frames_shape"] == [1, 16, 64, 64, 3]
    check = data["check"]
    assert check["passed"] is True and check["top_equal"] and check["bottom_equal"]
    assert check["reduced_grid"] is True and check["top_grid"] == [3, 4, 4] and check["bottom_slices"] == 2
    assert "cached == naive: PASS" in proc.stdout


@pytest.mark.slow
def test_out_of_time_parts_are_skipped_with_a_message(tmp_path):
    proc, data = _run(tmp_path, "--budget-s", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    skipped = [s["what"] for s in data["skipped"]]
    assert skipped == ["training VQ-VAE", "training top prior", "training bottom prior", "the prediction",
                       "the cached == naive check"]
    assert data["train"] == {} and "predict" not in data and "check" not in data
    assert proc.stdout.count("SKIPPED") == 5


@pytest.mark.slow
def test_watchdog_aborts_and_writes_what_was_done(tmp_path):
    proc, data = _run(tmp_path, "--budget-s", "0", "--grace-s", "0", timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "WATCHDOG" in proc.stdout and data["aborted"].startswith("watchdog at 0 s")


# ----------------------------------------------------------------------------- the GPU-only logic


class FakeGPU:
    """try_batch for find_batch: a step takes 0.1 s per sample, more than ``fits`` samples run out
    of memory (as torch.cuda.OutOfMemoryError)."""

    def __init__(self, fits: int):
        self.fits, self.tried, self.freed = fits, [], 0

    def __call__(self, b: int) -> float:
        self.tried.append(b)
        if b > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return 0.1 * b

    def on_oom(self):
        self.freed += 1


def _find(fake, cap, deadline=1e9, now=lambda: 0.0):
    return gpu.find_batch(fake, cap, deadline, 8, fake.on_oom, say=lambda msg: None, now=now)


def test_find_batch_doubles_until_out_of_memory():
    fake = FakeGPU(fits=12)
    r = _find(fake, cap=512)
    assert fake.tried == [1, 2, 4, 8, 16] and fake.freed == 1
    assert r["batch"] == 8 and r["step_s"] == pytest.approx(0.8) and r["limited_by"] == "memory"
    assert [t["fit"] for t in r["trials"]] == [True, True, True, True, False]


def test_find_batch_stops_at_the_cap_even_between_powers_of_two():
    fake = FakeGPU(fits=100)
    r = _find(fake, cap=16)
    assert fake.tried == [1, 2, 4, 8, 16] and r["batch"] == 16 and r["limited_by"] == "cap"
    fake = FakeGPU(fits=100)
    assert _find(fake, cap=6)["batch"] == 6 and fake.tried == [1, 2, 4, 6]
    fake = FakeGPU(fits=0)
    r = _find(fake, cap=16)
    assert r["batch"] is None and r["limited_by"] == "memory" and fake.tried == [1]


def test_find_batch_stops_when_the_next_batch_would_not_fit_the_time():
    # batch 4 takes 0.4 s/step; batch 8 would cost ~0.8 s x (2 trial + 8 measured steps) = 8 s
    fake = FakeGPU(fits=100)
    r = _find(fake, cap=512, deadline=7.0)
    assert fake.tried == [1, 2, 4] and r["batch"] == 4 and r["limited_by"] == "time"


def test_find_batch_counts_the_first_steps_overhead():
    # (first, steady): 5 s of autotuning at every new shape; batch 2 would need 5 + 0.2 x 10 = 7 s
    def autotuned(b):
        return 5.0 + 0.1 * b, 0.1 * b
    r = gpu.find_batch(autotuned, 512, 6.0, 8, lambda: None, say=lambda msg: None, now=lambda: 0.0)
    assert r["batch"] == 1 and r["limited_by"] == "time" and r["step_s"] == pytest.approx(0.1)
    r = gpu.find_batch(autotuned, 4, 8.0, 8, lambda: None, say=lambda msg: None, now=lambda: 0.0)
    assert r["batch"] == 2 and r["limited_by"] == "time"


def test_find_batch_reraises_other_errors():
    def broken(b):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    with pytest.raises(RuntimeError, match="illegal memory access"):
        gpu.find_batch(broken, 16, 1e9, 8, lambda: None, say=lambda msg: None)
    assert gpu.is_oom(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not gpu.is_oom(ValueError("out of memory"))


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100 80GB PCIe", 312e12), ("NVIDIA H100 NVL", None),
    ("NVIDIA L4", None),
])
def test_datasheet_peaks(name, peak):
    assert gpu.datasheet_bf16_peak(name)[0] == peak


def test_max_batch_caps():
    defaults = {"vqvae": 16, "top": 512, "bottom": 32}
    assert gpu.parse_caps(None, defaults) == defaults
    assert gpu.parse_caps("4", defaults) == {"vqvae": 4, "top": 4, "bottom": 4}
    assert gpu.parse_caps("top=64,bottom_prior=8", defaults) == {"vqvae": 16, "top": 64, "bottom": 8}
    with pytest.raises(SystemExit, match="unknown model"):
        gpu.parse_caps("prior=4", defaults)


def test_paper_preset_is_the_papers():
    p = gpu.load_preset("paper")
    assert p.caps == {"vqvae": 16, "top": 512, "bottom": 32}
    assert (p.vqvae, p.top, p.bottom) == (gpu.VQVAEConfig.paper(), gpu.TopPriorConfig.paper(),
                                           gpu.BottomPriorConfig.paper())
    assert p.vqvae.latent_shapes() == ((4, 32, 32), (8, 64, 64)) and p.vqvae.size == 256
    assert gpu.n_predicted(p.vqvae, 256) == (3072, 24576)
    assert all(t.grad_clip == 1.0 for t in p.train.values())


@pytest.mark.skipif(resolve_precision("auto", "cpu") == "bf16", reason="this CPU runs bf16 natively")
def test_bf16_refused_on_a_cpu_without_native_bf16(capsys):
    with pytest.raises(SystemExit) as exc:
        gpu.main(["--device", "cpu", "--preset", "tiny", "--precision", "bf16"])
    assert exc.value.code == 2 and "no native bf16" in capsys.readouterr().err
