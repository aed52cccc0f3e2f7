"""Opening a video source (a path, an fsspec URL or a binary file object) with every failure
that comes from the input turned into a :class:`VideoError` with a stable ``reason``; see
:mod:`vqvp_core.video.io` for the reasons' meanings and the readers built on this."""
from __future__ import annotations

import io
import os
import stat
from contextlib import contextmanager
from typing import BinaryIO, Union

import av
import av.error

__all__ = ["REASONS", "Source", "VideoError", "describe", "open_container", "video_stream"]

REASONS = (
    "empty_file",
    "not_a_video",
    "corrupt",
    "no_video_stream",
    "unsupported_codec",
    "decode_error",
    "too_short",
    "unreadable",
)

Source = Union[str, os.PathLike, BinaryIO]


class VideoError(Exception):
    """An input that cannot be turned into frames.

    ``reason``: one of :data:`REASONS` (stable, for counting and for ``rejected.csv``);
    ``message``: what happened, for humans; ``source``: the path / URL / file name.
    """

    def __init__(self, reason: str, message: str, source: str | None = None):
        if reason not in REASONS:
            raise ValueError(f"unknown VideoError reason {reason!r}")
        self.reason = reason
        self.message = message
        self.source = source
        super().__init__(f"{reason}: {message}" + (f" ({source})" if source else ""))

    def __reduce__(self):  # picklable across process pools
        return (type(self), (self.reason, self.message, self.source))


# --------------------------------------------------------------------------- opening

# Signatures of containers FFmpeg reads: if one of these fails to open, the file is a
# damaged video ("corrupt"), not something else ("not_a_video").
_HEAD_BYTES = 512
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp", b"moof")


def _looks_like_video_container(head: bytes | None) -> bool:
    """Whether the first bytes carry the signature of a container format FFmpeg reads."""
    if not head:
        return False
    if len(head) >= 8 and head[4:8] in _ISO_BOXES:
        return True  # mp4 / mov / 3gp / m4v
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return True  # Matroska / WebM (EBML)
    if head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"AVIX"):
        return True
    if head.startswith((b"FLV", b"OggS", b"GIF87a", b"GIF89a", b"\x00\x00\x01\xba",
                        b"\x00\x00\x01\xb3", b"\x30\x26\xb2\x75\x8e\x66\xcf\x11")):
        return True  # flv, ogg, gif, mpeg-ps, mpeg-es, asf/wmv
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return True  # mpeg-ts: a sync byte every 188 bytes
    return False


def describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(os.fspath(source))
    name = getattr(source, "path", None) or getattr(source, "name", None)
    return str(name) if name else repr(source)


def _is_url(s: str) -> bool:
    return "://" in s and not os.path.exists(s)


def _rewind_and_size(f) -> int | None:
    """Rewind a seekable file object to 0 and return its size (None if not seekable)."""
    try:
        if hasattr(f, "seekable") and not f.seekable():
            return None
        size = f.seek(0, io.SEEK_END)
        f.seek(0)
        return size
    except (OSError, ValueError, AttributeError):
        return None


def _read_head(path: str | None, f) -> bytes | None:
    try:
        if path is not None:
            with open(path, "rb") as fh:
                return fh.read(_HEAD_BYTES)
        if _rewind_and_size(f) is None:
            return None
        head = f.read(_HEAD_BYTES)
        f.seek(0)
        return head
    except (OSError, ValueError):
        return None


@contextmanager
def open_container(source: Source):
    """``av.open`` with every failure turned into a :class:`VideoError`.

    Yields ``(container, name)``.
    """
    name = describe(source)
    path: str | None = None
    fileobj = None
    owned = None
    if isinstance(source, (str, os.PathLike)):
        s = os.fsdecode(os.fspath(source))
        if _is_url(s):
            import fsspec

            try:
                owned = fsspec.open(s, "rb").open()
            except (OSError, ValueError) as e:  # missing key, no credentials, bad protocol
                raise VideoError("unreadable", f"cannot open {s}: {e}", name) from e
            fileobj = owned
        else:
            path = s
            try:
                st = os.stat(path)
            except OSError as e:
                raise VideoError("unreadable", f"{type(e).__name__}: {e.strerror or e}",
                                 name) from e
            if stat.S_ISDIR(st.st_mode):
                raise VideoError("unreadable", "is a directory", name)
            if st.st_size == 0:
                raise VideoError("empty_file", "the file has 0 bytes", name)
    else:
        fileobj = source
        if not hasattr(fileobj, "read"):
            raise TypeError("source must be a path, a URL or a binary file object, "
                            f"not {type(source)!r}")
    try:
        if fileobj is not None:
            if _rewind_and_size(fileobj) == 0:
                raise VideoError("empty_file", "the file has 0 bytes", name)
        try:
            container = av.open(path if path is not None else fileobj, "r",
                                metadata_errors="replace")
        except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
            raise VideoError("unreadable", f"{type(e).__name__}: {e}", name) from e
        except av.error.FFmpegError as e:
            if _looks_like_video_container(_read_head(path, fileobj)):
                raise VideoError("corrupt", f"a video container that FFmpeg cannot parse: {e}",
                                 name) from e
            raise VideoError("not_a_video", f"FFmpeg recognises no video format: {e}", name) from e
        except OSError as e:  # I/O error raised by the file object (network, remote store)
            raise VideoError("unreadable", f"{type(e).__name__}: {e}", name) from e
        try:
            yield container, name
        finally:
            container.close()
    finally:
        if owned is not None:
            owned.close()


def video_stream(container, name: str):
    candidates = [s for s in container.streams.video
                  if not (int(s.disposition) & int(av.stream.Disposition.attached_pic))]
    if not candidates:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise VideoError("no_video_stream", f"no video track (streams: {kinds})", name)
    stream = candidates[0]
    if stream.codec_context is None:
        raise VideoError("unsupported_codec", "FFmpeg has no decoder for the video track", name)
    return stream
