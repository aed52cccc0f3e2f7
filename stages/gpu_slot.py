"""GPU slots: at most N GPU stages run at once on one machine, and a crash never keeps a slot.

A slot is an advisory lock (``flock``) on a file in the machine's slot folder (``VQVP_GPU_LOCK_DIR``,
default ``<tmp>/vqvp-gpu-slots``). The stage process that does the GPU work holds it, so the
operating system releases it the moment that process ends, however it ends (exit, exception,
Ctrl-C, SIGTERM, SIGKILL, OOM kill): there is no lease to expire and nothing to clean up. Beside
each lock a small JSON file names its holder (pid, stage, workspace, flow run, since when), so a
stage that waits says what it waits for.

The slot count is a file in the same folder (``slots``): ``vqvp run --gpu-slots N`` writes it;
without it a machine has 1 slot. Why not Prefect's tag concurrency limit (which vqvp used
before): its slots are held by task runs in the API's database, and a run killed with its
ephemeral API never gives its slot back, so every later run on the machine waited forever
(issue 13). Containers on one host share slots when they mount the same folder
(infra/work-pools/docker-gpu.json does).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

ENV_LOCK_DIR = "VQVP_GPU_LOCK_DIR"
ENV_HELD = "VQVP_GPU_SLOT_HELD"  # set in a holder's environment: its children (torchrun workers) use its slot
SLOTS_FILE = "slots"
DEFAULT_SLOTS = 1
POLL_S = 0.5          # how often a waiting stage tries the locks again
REPORT_EVERY_S = 15.0  # how often it says that it is still waiting


def lock_dir() -> Path:
    d = Path(os.environ.get(ENV_LOCK_DIR) or Path(tempfile.gettempdir()) / "vqvp-gpu-slots")
    if not d.is_dir():
        d.mkdir(parents=True, exist_ok=True)
        _share(lambda: os.chmod(d, 0o1777))  # like /tmp: every user (and container uid) may lock
    return d


def _share(change) -> None:
    try:
        change()
    except PermissionError:  # another user's file: it was shared when it was made
        pass


def slots() -> int:
    """The machine's slot count (``slots`` in the lock folder; 1 if missing or unreadable)."""
    try:
        n = int((lock_dir() / SLOTS_FILE).read_text().strip())
    except (OSError, ValueError):
        return DEFAULT_SLOTS
    return n if n >= 1 else DEFAULT_SLOTS


def set_slots(n: int) -> int:
    """Set the machine's slot count (atomically); returns it."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"gpu_slots = {n!r}: expected a whole number >= 1")
    d = lock_dir()
    tmp = d / f".{SLOTS_FILE}.{os.getpid()}"
    tmp.write_text(f"{n}\n")
    os.replace(tmp, d / SLOTS_FILE)
    return n


def holders() -> list[dict]:
    """Who holds each slot now: one dict per held slot (slot, pid, stage, workspace, since, ...)."""
    out = []
    for i in range(slots()):
        fd = _open(i)
        try:
            if _try_lock(fd):
                fcntl.flock(fd, fcntl.LOCK_UN)
                continue
        finally:
            os.close(fd)
        out.append({"slot": i, **_read_holder(i)})
    return out


def _open(i: int) -> int:
    fd = os.open(lock_dir() / f"slot-{i}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    _share(lambda: os.fchmod(fd, 0o666))
    return fd


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


def _read_holder(i: int) -> dict:
    try:
        return json.loads((lock_dir() / f"slot-{i}.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_holder(i: int, info: dict) -> None:
    d = lock_dir()
    tmp = d / f".slot-{i}.json.{os.getpid()}"
    try:
        tmp.write_text(json.dumps(info))
        os.replace(tmp, d / f"slot-{i}.json")
    except OSError:  # who holds it is for the messages only: never a reason to fail the stage
        tmp.unlink(missing_ok=True)


def describe(h: dict, now: float | None = None) -> str:
    now = time.time() if now is None else now
    since = h.get("since")
    held = f" for {now - since:.0f} s" if isinstance(since, (int, float)) else ""
    return (f"slot {h['slot']} by pid {h.get('pid', '?')} (stage {h.get('stage', '?')} in "
            f"{h.get('workspace', '?')}{held})")


@contextmanager
def acquire(stage: str, say: Callable[[str], None] = print, poll_s: float = POLL_S,
             report_every_s: float = REPORT_EVERY_S) -> Iterator[int | None]:
    """Hold one of the machine's GPU slots for the block; waits (saying so) while all are held.

    Yields the slot index, or None inside a process whose parent already holds one (ENV_HELD)."""
    if os.environ.get(ENV_HELD):
        yield None
        return
    start, last_report, fd, slot = time.monotonic(), 0.0, None, None
    while fd is None:
        n = slots()
        for i in range(n):
            f = _open(i)
            if _try_lock(f):
                fd, slot = f, i
                break
            os.close(f)
        if fd is not None:
            break
        waited = time.monotonic() - start
        if last_report == 0.0 or waited - last_report >= report_every_s:
            held = "; ".join(describe(h) for h in holders()) or "(released just now)"
            say(f"{stage}: waiting for a GPU slot ({n} on this machine, {lock_dir()}), "
                f"waited {waited:.0f} s; held: {held}")
            last_report = max(waited, 1e-9)
        time.sleep(poll_s)
    if last_report:
        say(f"{stage}: got GPU slot {slot} after {time.monotonic() - start:.0f} s")
    _write_holder(slot, {"pid": os.getpid(), "stage": stage, "workspace": os.getcwd(), "since": time.time(),
                         "flow_run": os.environ.get("VQVP_FLOW_RUN_ID")})
    os.environ[ENV_HELD] = str(slot)
    try:
        yield slot
    finally:
        os.environ.pop(ENV_HELD, None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
