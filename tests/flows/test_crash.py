"""A killed `vqvp run` never blocks the next one: real processes, the ephemeral Prefect API, real DVC."""
import os
import signal
import subprocess
import time

import pytest

from stages import gpu_slot
from tests.conftest import BIN, FAST

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# train_vqvae long enough to be killed in the middle of it
LONG = FAST + ["vqvae.train.steps=5000", "vqvae.train.ckpt_every=5000", "vqvae.train.val_every=5000"]


def vqvp_run(repo, overrides, tmp_path, log_name, *extra):
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"))
    env.pop("PREFECT_API_URL", None)  # the ephemeral API, as a new user runs it
    args = [str(BIN / "vqvp"), "run", "--preset", "tiny", *extra] + [a for o in overrides for a in ("-S", o)]
    log = open(tmp_path / log_name, "w")
    # its own session: the test can clean up what a SIGKILL leaves behind (the ephemeral server)
    return subprocess.Popen(args, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(predicate, timeout, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stage_running(stage):
    return any(h.get("stage") == stage for h in gpu_slot.holders())


def pids_alive(pids):
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return alive


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_run_killed_in_a_gpu_stage_does_not_block_the_next(repo, tmp_path, sig):
    first = vqvp_run(repo, LONG, tmp_path, "first.log")
    try:
        wait_for(lambda: stage_running("train_vqvae"), 240, "train_vqvae to hold the GPU slot")
        (holder,) = gpu_slot.holders()
        os.kill(first.pid, sig)
        if sig == signal.SIGTERM:  # stops its stages and exits within seconds
            assert first.wait(timeout=30) == 130
        # SIGKILL cannot be handled: the stage sees its run is gone and stops itself
        wait_for(lambda: not pids_alive([holder["pid"]]), 30, "the orphaned stage to stop")
        assert gpu_slot.holders() == []
    finally:
        with_group_killed(first)
    if sig == signal.SIGTERM:  # the run after it is the SIGKILL case's (the harder one): CI time
        return
    # the next run goes through the GPU stage the killed one held (the later stages' runs are the
    # flow tests': CI time)
    second = vqvp_run(repo, FAST, tmp_path, "second.log", "--gpu-slots", "2", "--stages", "train_vqvae", "ingest")
    try:
        assert second.wait(timeout=420) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        with_group_killed(second)
    log = (tmp_path / "second.log").read_text()
    assert "stages run: train_vqvae\n" in log and "waiting for a GPU slot" not in log  # ingest: up to date
    assert (repo / "models/vqvae/model.pt").exists() and not (repo / "data/latents").exists()  # --stages
    assert gpu_slot.slots() == 2  # --gpu-slots
    params = (repo / "params.yaml").read_text()
    assert "preset: tiny" in params and "n_videos: 6" in params  # --preset, then -S


def test_the_flow_commands_pass_every_option_on(monkeypatch):
    """vqvp run / rerun: each option reaches the flow (what the flow does with it is tested above
    and in test_pipeline.py)."""
    import flows.pipeline
    from flows.cli import main

    calls = []
    monkeypatch.setattr(flows.pipeline, "pipeline", lambda **kw: calls.append(("run", kw)) or [])
    monkeypatch.setattr(flows.pipeline, "rerun", lambda **kw: calls.append(("rerun", kw)) or [])
    assert main(["run", "--preset", "paper", "-S", "sample.count=3", "--gpu-slots", "3", "--dvc-remote",
                 "--repo", "/some/where", "--stages", "sample", "ingest"]) == 0
    assert main(["rerun", "evaluate", "--downstream", "--gpu-slots", "2"]) == 0
    assert calls == [("run", dict(preset="paper", overrides=["sample.count=3"], repo="/some/where", gpu_slots=3,
                                  remote=True, stages=["sample", "ingest"])),
                     ("rerun", dict(stage="evaluate", downstream=True, repo=".", gpu_slots=2, remote=False))]
    assert main(["run", "-S", "ingest.size=13"]) == 2  # -S is validated before any flow starts


def with_group_killed(proc):
    """What a SIGKILLed run leaves behind (its ephemeral API server) goes with its session."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def test_a_waiting_stage_names_what_holds_the_slot(repo):
    """A stage that finds the slot held says so, naming the holder, and runs once it is free."""
    from vqvp_core.config import apply_overrides, dump_params, preset_dict, validate

    (repo / "params.yaml").write_text(dump_params(validate(apply_overrides(preset_dict("tiny"), FAST))))
    holder = subprocess.Popen(
        [str(BIN / "python"), "-c", "import time\nfrom stages.gpu_slot import acquire\n"
         "with acquire('someone-else', say=lambda m: None):\n    print('held', flush=True); time.sleep(600)"],
        cwd=repo, stdout=subprocess.PIPE, text=True)
    out = []
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.Popen([str(BIN / "dvc"), "repro", "train_vqvae"], cwd=repo, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            out.append(line)
            if "waiting for a GPU slot" in line:
                break
        holder.kill()
        out += proc.stdout.readlines()
        assert proc.wait(timeout=300) == 0, "".join(out)
    finally:
        holder.kill()
        holder.wait()
    text = "".join(out)
    assert "train_vqvae: waiting for a GPU slot" in text and "someone-else" in text and f"pid {holder.pid}" in text
    assert "train_vqvae: got GPU slot 0 after" in text
