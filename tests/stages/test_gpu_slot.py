"""GPU slots are OS locks held by the stage process: a killed holder never keeps its slot."""
import os
import signal
import subprocess
import sys
import time

import pytest

from stages import gpu_slot

HOLD = """
import sys, time
from stages.gpu_slot import acquire
with acquire(sys.argv[1], say=lambda m: None) as s:
    print(s, flush=True)
    time.sleep(600)
"""


def hold(stage: str) -> subprocess.Popen:
    """A process that holds a slot (printing its index) until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, stage], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert proc.stdout.readline().strip().isdigit()
    return proc


def test_a_killed_holder_frees_its_slot_at_once():
    holder = hold("train_vqvae")
    try:
        (h,) = gpu_slot.holders()
        assert h["stage"] == "train_vqvae" and h["pid"] == holder.pid
        said: list[str] = []
        t0 = time.monotonic()
        killer = subprocess.Popen([sys.executable, "-c", f"import os,time; time.sleep(1.5); os.kill({holder.pid}, 9)"])
        with gpu_slot.acquire("sample", say=said.append, poll_s=0.05, report_every_s=0.5) as slot:
            waited = time.monotonic() - t0
        killer.wait()
    finally:
        holder.kill()
        holder.wait()
    assert slot == 0 and 1.0 < waited < 10.0
    assert "waiting for a GPU slot" in said[0] and f"pid {holder.pid}" in said[0] and "train_vqvae" in said[0]
    assert said[-1].startswith("sample: got GPU slot 0 after")
    assert gpu_slot.holders() == []


def test_slots_bound_how_many_hold_at_once():
    gpu_slot.set_slots(2)
    a, b = hold("a"), hold("b")
    try:
        assert sorted(h["stage"] for h in gpu_slot.holders()) == ["a", "b"]
        said: list[str] = []
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
        proc.wait()
        os.kill(a.pid, signal.SIGTERM)  # an ordinary end frees the slot as well
        with gpu_slot.acquire("c", say=said.append, poll_s=0.05) as slot:
            assert slot in (0, 1)
    finally:
        for p in (a, b):
            p.kill()
            p.wait()


def test_children_of_a_holder_share_its_slot(monkeypatch):
    with gpu_slot.acquire("train_vqvae") as slot:
        assert os.environ[gpu_slot.ENV_HELD] == str(slot)
        with gpu_slot.acquire("train_vqvae") as inner:  # e.g. a torchrun worker of the holding stage
            assert inner is None
    assert gpu_slot.ENV_HELD not in os.environ


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_slot_counts_are_refused(bad):
    with pytest.raises(ValueError, match="gpu_slots"):
        gpu_slot.set_slots(bad)


def test_slot_count_persists_and_defaults_to_one():
    assert gpu_slot.slots() == 1
    gpu_slot.set_slots(3)
    assert gpu_slot.slots() == 3
    (gpu_slot.lock_dir() / gpu_slot.SLOTS_FILE).write_text("garbage")
    assert gpu_slot.slots() == 1
