"""The training loop in one process: learning, LR schedule, accumulation, NaN, resume checks,
atomic and pruned checkpoints, the sampler and the config validation."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from vqvp_core.train import checkpoint as ck
from vqvp_core.train.config import TrainConfig, TrainConfigError, TrainingError
from vqvp_core.train.loop import NonFiniteLossError, Trainer, lr_factor
from vqvp_core.train.sampler import ResumableSampler

_spec = importlib.util.spec_from_file_location("_train_script", Path(__file__).with_name("_train_script.py"))
ts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ts)


def _trainer(tmp: Path, model_kind: str = "noisy", model_config: dict | None = None, val: bool = True,
             step_fn=ts.step_fn, **cfg) -> tuple[Trainer, list]:
    torch.set_num_threads(1)
    model, config = ts.build(model_kind)
    logs: list = []
    # fp32: the same numbers on every machine (auto would be bf16 on an AMX CPU; test_precision.py)
    base = dict(steps=6, batch_size=8, lr=1e-2, log_every=1, ckpt_every=100, val_every=100, precision="fp32")
    trainer = Trainer(model, ts.make_data(), ts.make_data(12, seed=7) if val else None,
                      TrainConfig(**{**base, **cfg}), tmp / "ckpt", step_fn,
                      model_config=model_config or config, on_log=lambda s, m: logs.append((s, m)))
    return trainer, logs


def test_loss_decreases(tmp_path: Path) -> None:
    trainer, logs = _trainer(tmp_path, "plain", steps=60, lr=3e-2, batch_size=10, log_every=10, val_every=60)
    first = ts.step_fn(trainer.model.eval(), ts.make_data()[:])[0].item()
    out = trainer.fit()
    last = ts.step_fn(trainer.model.eval(), ts.make_data()[:])[0].item()
    assert last < 0.5 * first
    assert out["step"] == 60 and math.isfinite(out["val/loss"]) and out["train/samples_per_s"] > 0
    assert [s for s, _ in logs] == [10, 20, 30, 40, 50, 60]


def test_lr_schedule_values(tmp_path: Path) -> None:
    cos = TrainConfig(steps=110, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert [lr_factor(cos, s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(cos, 10) == pytest.approx(1.0)
    assert lr_factor(cos, 60) == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert lr_factor(cos, 110) == pytest.approx(0.1)
    lin = cos.replace(schedule="linear")
    assert lr_factor(lin, 60) == pytest.approx(0.55) and lr_factor(lin, 35) == pytest.approx(0.775)
    assert lr_factor(cos.replace(schedule="constant"), 100) == 1.0
    # The optimizer really uses it: the lr logged at step s is the one of step s (s-1 done).
    trainer, logs = _trainer(tmp_path, steps=8, warmup_steps=3, lr=0.2)
    trainer.fit()
    assert [m["lr"] for _, m in logs] == pytest.approx([0.2 * lr_factor(trainer.cfg, s - 1) for s, _ in logs])


def test_grad_accumulation_equals_one_big_batch(tmp_path: Path) -> None:
    finals = []
    for accum in (1, 4):
        trainer, _ = _trainer(tmp_path / str(accum), "plain", steps=7, grad_accum=accum, grad_clip=0.5,
                              weight_decay=0.1)
        trainer.fit()
        finals.append(trainer.model.state_dict())
    for k in finals[0]:
        torch.testing.assert_close(finals[0][k], finals[1][k], rtol=1e-5, atol=1e-6)


def test_nan_loss_raises_naming_the_step(tmp_path: Path) -> None:
    calls = []

    def nan_at_third(model, batch):
        calls.append(1)
        loss, m = ts.step_fn(model, batch)
        return (loss * float("nan") if len(calls) == 3 else loss), m

    trainer, _ = _trainer(tmp_path, step_fn=nan_at_third, ckpt_every=1)
    with pytest.raises(NonFiniteLossError, match=r"at step 3\b") as err:
        trainer.fit()
    assert isinstance(err.value, TrainingError)
    assert [s for s, _ in ck.list_checkpoints(tmp_path / "ckpt")][-1] == 2  # nothing NaN was saved


def test_resume_with_other_config_names_the_key(tmp_path: Path) -> None:
    _trainer(tmp_path, steps=2)[0].fit()
    _, config = ts.build("noisy")
    with pytest.raises(ck.ResumeMismatchError, match=r"'hidden' = 16.*'hidden' = 32.*start fresh"):
        _trainer(tmp_path, steps=2, model_config={**config, "hidden": 32})[0].fit()
    with pytest.raises(ck.ResumeMismatchError, match=r"'lr' = 0.01.*'lr' = 0.02"):
        _trainer(tmp_path, steps=2, lr=2e-2)[0].fit()
    # Execution-only settings may change; a finished run returns its stored metrics at once.
    trainer, logs = _trainer(tmp_path, steps=2, log_every=5, num_workers=0)
    out = trainer.fit()
    assert out["step"] == 2 and "train/loss" in out and "val/loss" in out and logs == []


def test_checkpoints_are_atomic_and_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "ckpt"
    trainer, _ = _trainer(tmp_path, steps=10, ckpt_every=2, keep_last=2)
    trainer.fit()
    assert sorted(p.name for p in d.iterdir()) == ["step_00000008.pt", "step_00000010.pt"]
    state = ck.load_checkpoint(d / "step_00000010.pt")
    assert set(state) >= {"config", "train_config", "state_dict", "optimizer", "scheduler", "step",
                          "sampler", "rng", "extra"}
    assert state["step"] == 10 and set(state["rng"]) >= {"torch", "numpy", "python"}
    latest = ck.load_checkpoint(ck.find_latest(d))
    assert latest["config"] == ts.build("noisy")[1]
    assert torch.equal(latest["state_dict"]["fc1.weight"], trainer.model.fc1.weight)

    # A crash in the middle of a write leaves the old checkpoints, and no temp file behind.
    def crash(obj, fh, *a, **k):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(d, 12, {"step": 12}, keep_last=2)
    monkeypatch.undo()
    assert sorted(p.name for p in d.iterdir()) == ["step_00000008.pt", "step_00000010.pt"]
    # A temp file left by a SIGKILL mid-write is never loaded, and the next save sweeps it.
    (d / ".step_00000012.pt.k1ll3d.tmp").write_bytes(b"\x80\x02partial")
    assert ck.find_latest(d) == d / "step_00000010.pt"
    assert _trainer(tmp_path, steps=10, ckpt_every=2, keep_last=2)[0].fit()["step"] == 10
    ck.save_checkpoint(d, 11, {"step": 11}, keep_last=2)
    assert sorted(p.name for p in d.iterdir()) == ["step_00000010.pt", "step_00000011.pt"]


def test_sampler_shards_and_resumes() -> None:
    full = ResumableSampler(21, global_batch=4, seed=3)
    epoch0 = list(full)
    assert len(epoch0) == 20 and len(set(epoch0)) == 20  # the tail (1 sample) is dropped
    assert epoch0 == list(ResumableSampler(21, 4, seed=3))  # deterministic
    full.next_epoch()
    assert list(full) != epoch0
    # Two ranks with micro-batches of 2: each global micro-batch is a contiguous slice of epoch0.
    r0, r1 = (ResumableSampler(21, 4, seed=3, rank=r, world_size=2) for r in (0, 1))
    a, b = list(r0), list(r1)
    assert all(sorted(a[i:i + 2] + b[i:i + 2]) == sorted(epoch0[2 * i:2 * i + 4]) for i in range(0, 10, 2))
    # Resume from a saved position sees exactly the remaining indices.
    r0.advance(8)
    again = ResumableSampler(21, 4, seed=3, rank=0, world_size=2)
    again.load_state_dict(r0.state_dict())
    assert list(again) == a[4:]
    with pytest.raises(ValueError, match="n=30"):
        ResumableSampler(30, 4, seed=3).load_state_dict(r0.state_dict())


@pytest.mark.parametrize("bad, match", [
    (dict(steps=0), r"steps = 0: .*greater than or equal to 1"),
    (dict(lr=-1.0), r"lr = -1.0"),
    (dict(schedule="step"), r"schedule = 'step'.*cosine"),
    (dict(precision="fp16"), r"precision"),
    (dict(betas=(0.9, 1.5)), r"betas"),
    (dict(batch_size=6, grad_accum=4), r"batch_size = 6.*grad_accum"),
    (dict(grad_clip=0.0), r"grad_clip = 0.0: .*greater than 0"),
    (dict(steps=True), r"steps = True: .*valid integer"),
    (dict(fused_optimizer=1), r"fused_optimizer = 1: .*valid boolean"),
])
def test_config_validation(bad: dict, match: str) -> None:
    with pytest.raises(TrainConfigError, match=match):
        TrainConfig(**bad)


def test_config_roundtrip() -> None:
    cfg = TrainConfig(betas=[0.5, 0.9], grad_clip=None, max_val_batches=2)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg and cfg.betas == (0.5, 0.9)
    with pytest.raises(TrainConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def test_workers_and_validation_do_not_change_the_trajectory(tmp_path: Path) -> None:
    """Loader workers and validation never draw from the training RNG streams."""
    runs = []
    for name, kw in (("base", dict(val_every=100)), ("w", dict(num_workers=1, val_every=2))):
        trainer, logs = _trainer(tmp_path / name, steps=7, **kw)  # 5 steps per epoch: crosses one
        trainer.fit()
        runs.append(([m["loss"] for _, m in logs], trainer.model.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(v, runs[1][1][k]) for k, v in runs[0][1].items())


def test_bf16_autocast_on_cpu_when_asked(tmp_path: Path, monkeypatch) -> None:
    from vqvp_core.train import precision

    monkeypatch.setattr(precision, "cpu_features", lambda: {"amx_bf16": True})  # a native-bf16 CPU
    seen = []

    def step_fn(model, batch):
        loss, m = ts.step_fn(model, batch)
        seen.append(model(batch[0]).dtype)
        return loss, m

    trainer, _ = _trainer(tmp_path, "plain", step_fn=step_fn, steps=2, precision="bf16")
    assert math.isfinite(trainer.fit()["train/loss"]) and seen[0] == torch.bfloat16
    assert trainer.model.fc1.weight.dtype == torch.float32  # the weights stay fp32
    assert trainer.precision == "bf16" and trainer.amp_dtype is torch.bfloat16


@pytest.mark.parametrize("native, requested, expected", [
    (False, "auto", "fp32"), (True, "auto", "bf16"), (True, "fp32", "fp32"), (False, "bf16", None)])
def test_trainer_precision_follows_the_cpu(tmp_path: Path, monkeypatch, native, requested, expected) -> None:
    from vqvp_core.train import precision

    monkeypatch.setattr(precision, "torch_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(precision, "cpu_features", lambda: {"avx2": True, "avx512_bf16": native})
    if expected is None:  # refused in __init__, before any step
        with pytest.raises(precision.PrecisionError, match=r"capability AVX2, no AMX or AVX512-BF16"):
            _trainer(tmp_path, "plain", precision=requested, device="cpu")
        return
    trainer, _ = _trainer(tmp_path, "plain", precision=requested, device="cpu")
    assert trainer.precision == expected
    assert trainer.amp_dtype is (torch.bfloat16 if expected == "bf16" else None)


@pytest.mark.parametrize("fused", [True, False])
def test_fused_optimizer_flag_gives_the_same_update(fused):
    """fused_optimizer picks AdamW's fused kernel or its per-tensor loop; with weight decay on the
    matrices (not the biases), the update is the same up to float rounding."""
    from torch import nn

    from vqvp_core.train.loop import build_optimizer

    torch.manual_seed(0)
    ref, model = nn.Linear(4, 3), nn.Linear(4, 3)
    model.load_state_dict(ref.state_dict())
    opts = [build_optimizer(m, TrainConfig(lr=1e-2, weight_decay=0.1, fused_optimizer=f))
            for m, f in ((ref, not fused), (model, fused))]
    assert bool(opts[1].defaults["fused"]) == fused
    x = torch.randn(8, 4)
    for m, opt in zip((ref, model), opts):
        for _ in range(3):
            opt.zero_grad()
            m(x).pow(2).mean().backward()
            opt.step()
    for a, b in zip(ref.parameters(), model.parameters()):
        torch.testing.assert_close(a, b)


def test_fused_optimizer_must_be_a_bool():
    with pytest.raises(TrainConfigError, match="fused_optimizer"):
        TrainConfig(fused_optimizer="yes")


# FLOPs of one step of NoisyMLP (6 -> 16 -> 1) on a batch of 8: forward 2*8*(6*16 + 16*1) = 1792;
# backward: both weight grads (1536 + 256) and fc2's input grad (256); fc1's input needs none.
MLP_STEP_FLOPS = 1792 + 1536 + 256 + 256


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_flops_per_step_counted_as_the_trainer_runs(tmp_path: Path, grad_accum: int) -> None:
    trainer, _ = _trainer(tmp_path, steps=3, grad_accum=grad_accum)
    out = trainer.fit()
    assert trainer.flops_per_step == MLP_STEP_FLOPS  # accumulation splits the batch, not the work
    assert out["train_flops_per_step"] == MLP_STEP_FLOPS and out["train_flops"] == 3 * MLP_STEP_FLOPS


def test_flops_survive_a_resume(tmp_path: Path) -> None:
    first, _ = _trainer(tmp_path, steps=4, ckpt_every=2)
    first.fit()
    again, _ = _trainer(tmp_path, steps=4, ckpt_every=2)  # finished: resumes at step 4, runs nothing
    out = again.fit()
    assert out["train_flops"] == 4 * MLP_STEP_FLOPS
