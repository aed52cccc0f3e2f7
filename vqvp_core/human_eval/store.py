"""Where a rating study's judgments live: one place, used by the package builder, the server, the
analysis and the CLI.

The judgments database is a SQLite file BESIDE the study folder, named after the study's content:
``<study>.judgments-<digest>.sqlite``. Outside the folder, so rebuilding the study (``dvc repro``
replaces the DVC out whole) never deletes a judgment; named by a digest of the study's key, so a
rebuilt study with the same pairs and sides keeps its judgments, and one with other pairs gets a
fresh file instead of mixing judgments of different videos.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

LEGACY_NAME = "judgments.sqlite"  # inside the study folder, where vqvp put it before issue 13


def study_digest(folder) -> str:
    """12 hex digits of sha256 over the study's key.json: its pairs, sides and clips, not the
    video file names (random on every build), so a rebuild of the same study keeps its judgments."""
    folder = Path(folder)
    if not (folder / "key.json").is_file():
        raise ValueError(f"{folder} is not a rating study (key.json missing); build one with "
                         "`vqvp stage package_human_eval`")
    return hashlib.sha256((folder / "key.json").read_bytes()).hexdigest()[:12]


def judgments_path(folder) -> Path:
    """The judgments database of the study in ``folder``."""
    folder = Path(folder)
    return folder.with_name(f"{folder.name}.judgments-{study_digest(folder)}.sqlite")
