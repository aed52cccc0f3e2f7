"""The presets, as data: one YAML file each in this folder (vqvp_core/config.py reads them).
Nothing is imported here, so `vqvp -h` lists them without loading the params schema."""
from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).parent


def names(directory: Path = DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))
