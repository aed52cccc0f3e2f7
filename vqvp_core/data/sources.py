"""Where raw videos come from: a folder tree (local or any fsspec URL such as s3://), a
Kinetics-style annotation CSV, or the embedded synthetic generator.

`list_videos` turns a source into a sorted list of `VideoItem`s (one per video) plus the
inputs it already knows it must skip (missing files, files that are not videos by name).
"""
from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from typing import Any

import fsspec
import pandas as pd

SYNTHETIC = "synthetic"
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
# Kinetics' CSVs call the validation split 'validate' or 'val'; vqvp's names are train/val/test.
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validate": "val", "validation": "val", "test": "test", "testing": "test"}


class SourceError(RuntimeError):
    """The source cannot be reached or read at all (as opposed to one bad video in it)."""


@dataclass(frozen=True)
class VideoItem:
    uri: str                  # what the decoder opens: a full fsspec URL/path, or 'synthetic://<index>'
    source_id: str            # the video's identity for splitting (relative path, youtube id, index)
    label: str = ""
    split: str | None = None  # fixed by the source (Kinetics CSV), else chosen by hash


@dataclass(frozen=True)
class Rejected:
    input: str
    reason: str
    detail: str = ""


def kind_of(source: str) -> str:
    if source == SYNTHETIC:
        return "synthetic"
    if source.lower().endswith(".csv"):
        return "kinetics_csv"
    return "folder"


def _fs(url: str, storage_options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
    except (ImportError, ValueError, TypeError) as exc:
        raise SourceError(f"source {url!r}: cannot open its filesystem ({exc})") from exc
    return fs, path


def _full_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def _find_files(fs: fsspec.AbstractFileSystem, root: str, url: str) -> list[str]:
    try:
        if not fs.exists(root):
            raise SourceError(f"source {url!r} does not exist or cannot be reached")
        if fs.isfile(root):
            return [root]
        return sorted(fs.find(root))
    except SourceError:
        raise
    except Exception as exc:  # network, permission, credentials: all mean 'cannot reach'
        raise SourceError(f"source {url!r} cannot be reached: {type(exc).__name__}: {exc}") from exc


def _is_hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def list_folder(url: str, extensions: list[str], storage_options: dict[str, Any]):
    """Every video under a folder; the label is the name of the folder holding it."""
    fs, root = _fs(url, storage_options)
    exts = {e.lower() for e in extensions}
    items, rejected = [], []
    for path in _find_files(fs, root, url):
        rel = posixpath.relpath(path, root) if path != root else posixpath.basename(path)
        if _is_hidden(rel):
            continue
        full = _full_url(fs, path)
        if posixpath.splitext(path)[1].lower() not in exts:
            rejected.append(Rejected(full, "not_a_video_extension",
                                     f"extension not in ingest.extensions {sorted(exts)}"))
            continue
        label = posixpath.basename(posixpath.dirname(rel)) if "/" in rel else ""
        items.append(VideoItem(uri=full, source_id=rel, label=label))
    return items, rejected


def kinetics_filename(youtube_id: str, time_start: float, time_end: float) -> str:
    """The name the public Kinetics download tools give a trimmed clip."""
    return f"{youtube_id}_{int(time_start):06d}_{int(time_end):06d}.mp4"


def list_kinetics_csv(url: str, video_root: str | None, storage_options: dict[str, Any]):
    """Videos named by a Kinetics annotation CSV, found anywhere under `video_root`
    (flat, or in split/label sub-folders, as the download tools lay them out)."""
    fs, csv_path = _fs(url, storage_options)
    try:
        with fs.open(csv_path, "rb") as fh:
            table = pd.read_csv(fh, dtype={"youtube_id": str, "label": str, "split": str})
    except FileNotFoundError as exc:
        raise SourceError(f"source {url!r}: annotation CSV not found") from exc
    except Exception as exc:
        raise SourceError(f"source {url!r}: cannot read the annotation CSV ({exc})") from exc
    missing = [c for c in KINETICS_COLUMNS if c not in table.columns]
    if missing:
        raise SourceError(f"source {url!r}: CSV lacks columns {missing}; expected {list(KINETICS_COLUMNS)}")
    root_url = video_root or _full_url(fs, posixpath.dirname(csv_path))
    root_fs, root = _fs(root_url, storage_options)
    by_name: dict[str, str] = {}
    for path in _find_files(root_fs, root, root_url):
        by_name.setdefault(posixpath.basename(path), path)
    items, rejected = [], []
    for row in table.itertuples(index=False):
        try:
            name = kinetics_filename(str(row.youtube_id), float(row.time_start), float(row.time_end))
        except (TypeError, ValueError):
            rejected.append(Rejected(f"{url}:{row.youtube_id}", "bad_annotation",
                                     f"time_start={row.time_start!r} time_end={row.time_end!r}"))
            continue
        split = _SPLIT_NAMES.get(str(row.split).strip().lower())
        path = by_name.get(name)
        if path is None:
            rejected.append(Rejected(posixpath.join(root_url, name), "missing_file",
                                     "listed in the CSV but not found under video_root"))
            continue
        items.append(VideoItem(uri=_full_url(root_fs, path), source_id=str(row.youtube_id),
                               label=str(row.label), split=split))
    return sorted(set(items), key=lambda it: it.uri), rejected


def list_synthetic(n_videos: int) -> list[VideoItem]:
    return [VideoItem(uri=f"synthetic://{i}", source_id=f"synthetic-{i:06d}") for i in range(n_videos)]


def list_videos(params) -> tuple[list[VideoItem], list[Rejected]]:
    """`params` is an `IngestParams`. Raises SourceError if the source cannot be read at all."""
    kind = kind_of(params.source)
    if kind == "synthetic":
        return list_synthetic(params.synthetic.n_videos), []
    if kind == "kinetics_csv":
        return list_kinetics_csv(params.source, params.video_root, params.storage_options)
    return list_folder(params.source, params.extensions, params.storage_options)


def assign_split(source_id: str, seed: int, train: float, val: float) -> str:
    """Deterministic split by video: a hash of (seed, id) mapped to [0, 1)."""
    digest = hashlib.sha256(f"{seed}:{source_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < train:
        return "train"
    return "val" if u < train + val else "test"
