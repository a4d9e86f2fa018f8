"""One way to name storage: a local path or a ``s3://`` / ``hdfs://`` / ``file://`` URI, through ``pyarrow.fs``.

``resolve(location)`` turns a configured location into ``(FileSystem, base path)``; every reader and
writer of the log path (archive, demux, load) goes through it, so local disk, S3 and HDFS behave alike.

S3 options go in the URI's query string, as pyarrow reads them, for example
``s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1``; credentials come
from the usual AWS environment variables or profile. HDFS: ``hdfs://namenode:8020/path`` (needs
``libhdfs`` and ``CLASSPATH`` set up as pyarrow documents).

Atomic writes (:func:`write_atomic`): on a local filesystem a temporary file is written, fsynced and
renamed (``headrace._atomic``). On an object store a PUT is already all-or-nothing — a reader sees the
old object or the new one, never half of one — so the bytes are written to the final key directly;
on HDFS (and any other filesystem) a temporary name is written and then moved, which is an atomic
rename there. The result in every case: a reader never sees a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs

from . import _atomic
from .errors import UsageError

__all__ = ["Store", "resolve"]


def _is_uri(location: str) -> bool:
    head, sep, _ = location.partition("://")
    return bool(sep) and head.isalnum()


@dataclass(frozen=True)
class Store:
    """A filesystem and a base path inside it, with the few operations the log path needs."""

    fs: pafs.FileSystem
    base: str
    location: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def is_object_store(self) -> bool:
        return self.fs.type_name in {"s3", "gcs"}

    def path(self, *parts: str) -> str:
        """The full path of ``parts`` under the base (``/``-separated, as pyarrow wants)."""
        return posixpath.join(self.base, *parts) if parts else self.base

    def uri(self, *parts: str) -> str:
        """A human-readable name of ``parts`` under the configured location, for messages."""
        return posixpath.join(self.location, *parts)

    def makedirs(self, path: str) -> None:
        if not self.is_object_store:
            self.fs.create_dir(path, recursive=True)

    def exists(self, path: str) -> bool:
        return bool(self.fs.get_file_info(path).type != pafs.FileType.NotFound)

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return bytes(f.read())

    def write_atomic(self, path: str, data: bytes) -> None:
        """Write ``data`` so that ``path`` holds either its old content or all of ``data``."""
        parent = posixpath.dirname(path)
        if self.is_local:
            os.makedirs(parent, exist_ok=True)
            _atomic.write_atomic(path, data)
            return
        self.makedirs(parent)
        if self.is_object_store:
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.tmp-{uuid.uuid4().hex}")
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(path)

    def delete_dir(self, path: str) -> None:
        """Delete the folder ``path`` and everything under it (on S3: the prefix and its marker)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_dir(path)

    def _infos(self, sel: pafs.FileSelector) -> list[pafs.FileInfo]:
        try:
            return list(self.fs.get_file_info(sel))
        except FileNotFoundError:  # the folder went (or was not yet there) while it was listed: empty
            return []

    def list_files(self, path: str, recursive: bool = False) -> list[str]:
        """Paths of the files under ``path`` (none if it does not exist), sorted."""
        sel = pafs.FileSelector(path, allow_not_found=True, recursive=recursive)
        return sorted(i.path for i in self._infos(sel) if i.type == pafs.FileType.File)

    def list_dirs(self, path: str) -> list[str]:
        """Names (not paths) of the folders directly under ``path``, sorted."""
        sel = pafs.FileSelector(path, allow_not_found=True)
        return sorted(posixpath.basename(i.path) for i in self._infos(sel) if i.type == pafs.FileType.Directory)


def resolve(location: str) -> Store:
    """Resolve a local path or a URI into a :class:`Store`; a bad URI is a :class:`UsageError`."""
    if not location:
        raise UsageError("an empty storage location; give a local path or a URI such as s3://bucket/prefix")
    try:
        if _is_uri(location):
            fs, path = pafs.FileSystem.from_uri(location)
        else:
            fs, path = pafs.LocalFileSystem(), os.path.abspath(location)
    except (ValueError, OSError) as exc:
        raise UsageError(f"cannot open storage {location!r}: {exc}") from exc
    return Store(fs=fs, base=path.rstrip("/") or "/", location=location.split("?", 1)[0].rstrip("/"))
