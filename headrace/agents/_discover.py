"""Finding files: globs, stream names, and filesystem events as wake-ups.

Filesystem events (watchdog, inotify on Linux) are only hints: an event marks the paths it names as
worth a look and wakes the reader; the reader then trusts nothing but ``stat``. A periodic rescan
(``rescan_seconds``) globs every source and looks at every stream again, so an overflowing inotify
queue, a missed event or a filesystem without events (NFS) delays data but never loses it.

A stream is named after the absolute path it was found at (``/var/log/app/web.log`` →
``var/log/app/web.log``; characters a stream name may not hold become ``_``), so every file that
ever holds that path (after a rotation, a truncation, a re-creation) belongs to the same stream.
A path longer than 1,000 characters is named after its last 1,000.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import threading
from collections.abc import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

__all__ = ["Watcher", "expand", "stream_name", "watch_root"]

_BAD = re.compile(r"[^A-Za-z0-9_.\-=@+/]")
#: the events the agent acts on. Without a filter inotify also reports every open, read and close,
#: the agent's own reads included: a quarter of a busy agent's samples went to dispatching those.
_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent, FileClosedEvent,
    DirCreatedEvent, DirModifiedEvent, DirMovedEvent, DirDeletedEvent,
]  # fmt: skip


def stream_name(path: str) -> str:
    """The stream name of a watched path (see the module docstring)."""
    name = _BAD.sub("_", os.path.abspath(path).lstrip("/"))
    parts = [("_" + p if p[:1] in ".-=@+" else p) for p in name.split("/") if p]
    # A long path keeps its last 1,000 characters; the cut may land before a character a name
    # may not start with, so the first part is fixed up again (a name valid before stays the same).
    name = "/".join(parts)[-1000:].lstrip("/") or "_"
    return "_" + name if name[:1] in ".-=@+" else name


def expand(pattern: str) -> list[str]:
    """Absolute paths of the regular files that match ``pattern`` now (``**`` recurses)."""
    return sorted(
        os.path.abspath(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p)
    )


def watch_root(pattern: str) -> tuple[str, bool]:
    """The deepest folder without wildcards above ``pattern``, and whether to watch it recursively."""
    parts = os.path.abspath(os.path.expanduser(pattern)).split(os.sep)
    fixed: list[str] = []
    for p in parts[:-1]:
        if glob.has_magic(p):
            return os.sep.join(fixed) or os.sep, True
        fixed.append(p)
    return os.sep.join(fixed) or os.sep, False


class _Handler(FileSystemEventHandler):
    def __init__(self, on_paths: Callable[[list[str]], None], on_moved: Callable[[str, str], None] | None) -> None:
        self.on_paths = on_paths
        self.moved_cb = on_moved

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [os.fsdecode(event.src_path)]
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.append(os.fsdecode(dest))
            if self.moved_cb is not None and event.event_type == "moved" and not event.is_directory:
                self.moved_cb(paths[0], paths[1])
        self.on_paths(paths)


class Watcher:
    """Watches the folders of the source globs; calls ``on_paths`` with the paths an event names.

    ``on_moved(src, dest)`` hears of renames, so a file renamed away from a watched path before the
    reader looked at it (two fast rotations) can still be found and read.
    """

    def __init__(
        self, on_paths: Callable[[list[str]], None], on_moved: Callable[[str, str], None] | None = None
    ) -> None:
        self._observer = Observer()
        self._handler = _Handler(on_paths, on_moved)
        self._watches: dict[tuple[str, bool], object] = {}
        self._lock = threading.Lock()
        self._observer.daemon = True

    def start(self) -> None:
        self._observer.start()

    def alive(self) -> bool:
        """Whether the observer thread still runs (it ends if a handler raises)."""
        return self._observer.is_alive()

    def restart(self) -> None:
        """Replace a dead observer with a new one watching the same roots (events missed meanwhile
        are caught by the periodic rescan)."""
        with self._lock:
            keys = list(self._watches)
            with contextlib.suppress(Exception):
                self._observer.stop()
            self._observer = Observer()
            self._observer.daemon = True
            self._watches = {}
            self._observer.start()
            for root, recursive in keys:
                if os.path.isdir(root):
                    with contextlib.suppress(OSError):
                        self._watches[(root, recursive)] = self._observer.schedule(
                            self._handler, root, recursive=recursive, event_filter=_EVENTS
                        )

    def set_patterns(self, patterns: list[str]) -> None:
        """Watch exactly the roots these globs need (folders that do not exist yet are picked up by rescans)."""
        with self._lock:
            wanted = {watch_root(p) for p in patterns}
            for key in list(self._watches):
                if key not in wanted:
                    self._observer.unschedule(self._watches.pop(key))  # type: ignore[arg-type]
            for key in wanted - set(self._watches):
                root, recursive = key
                if os.path.isdir(root):
                    with contextlib.suppress(OSError):  # inotify limits: rescans still find everything
                        self._watches[key] = self._observer.schedule(
                            self._handler, root, recursive=recursive, event_filter=_EVENTS
                        )

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(5)
