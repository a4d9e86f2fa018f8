"""Finding files: globs, stream names, and filesystem events as wake-ups.

Filesystem events (watchdog, inotify on Linux) are only hints: an event marks the paths it names as
worth a look and wakes the reader; the reader then trusts nothing but ``stat``. A rescan globs every
source and looks at every stream again. While the events can be trusted (:meth:`Watcher.reliable`:
the observer runs and every folder the globs need is watched) rescans are a slow safety net
(``verify_seconds``), so an idle agent does not touch its files; otherwise (a folder that does not
exist yet or could not be watched, the observer down) they run every ``rescan_seconds``. Lost events
(an overflowing inotify queue, a watched folder deleted, the observer restarted) ask for a rescan at
once (``on_lost``). A filesystem whose changes inotify does not see (NFS written by other hosts)
needs a short ``verify_seconds``.

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

import watchdog.events
from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

#: watchdog >= 7 says when the kernel's event queue overflowed (older versions say nothing)
_EventsLost: type[FileSystemEvent] | None = getattr(watchdog.events, "EventsLostEvent", None)

__all__ = ["Watcher", "expand", "stream_name", "watch_root"]

_BAD = re.compile(r"[^A-Za-z0-9_.\-=@+/]")
#: the events the agent acts on. Without a filter inotify also reports every open, read and close,
#: the agent's own reads included: a quarter of a busy agent's samples went to dispatching those.
_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent, FileClosedEvent,
    DirCreatedEvent, DirModifiedEvent, DirMovedEvent, DirDeletedEvent,
    FileAttribEvent, DirAttribEvent,  # chmod: a file that could not be opened may be readable now
    *([_EventsLost] if _EventsLost is not None else []),
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


class _Observer(Observer):  # type: ignore[valid-type,misc]
    """watchdog's observer, saying when its thread ends (so nothing has to poll ``is_alive``)."""

    def __init__(self, on_exit: Callable[[], None]) -> None:
        super().__init__()
        self.daemon = True
        self.ended = False
        self._on_exit = on_exit

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.ended = True
            self._on_exit()


class _Handler(FileSystemEventHandler):
    def __init__(
        self,
        on_paths: Callable[[list[str]], None],
        on_moved: Callable[[str, str], None] | None,
        on_lost: Callable[[], None],
        on_dir_gone: Callable[[str], None],
    ) -> None:
        self.on_paths = on_paths
        self.moved_cb = on_moved
        self.lost_cb = on_lost
        self.dir_gone_cb = on_dir_gone

    def on_any_event(self, event: FileSystemEvent) -> None:
        if _EventsLost is not None and isinstance(event, _EventsLost):
            self.lost_cb()
            return
        paths = [os.fsdecode(event.src_path)]
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.append(os.fsdecode(dest))
            if self.moved_cb is not None and event.event_type == "moved" and not event.is_directory:
                self.moved_cb(paths[0], paths[1])
        if event.is_directory and event.event_type in ("deleted", "moved"):
            self.dir_gone_cb(paths[0])  # a watched folder itself may be gone, and its watch with it
        self.on_paths(paths)


class Watcher:
    """Watches the folders of the source globs; calls ``on_paths`` with the paths an event names.

    ``on_moved(src, dest)`` hears of renames, so a file renamed away from a watched path before the
    reader looked at it (two fast rotations) can still be found and read. ``on_lost()`` is called when
    events may have been missed (the reader rescans); ``on_exit()`` when the observer thread ends.
    """

    def __init__(
        self,
        on_paths: Callable[[list[str]], None],
        on_moved: Callable[[str, str], None] | None = None,
        *,
        on_lost: Callable[[], None] | None = None,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self._on_lost = on_lost or (lambda: None)
        self._on_exit = on_exit or (lambda: None)
        self._handler = _Handler(on_paths, on_moved, self._on_lost_now, self._dir_gone)
        self._observer = _Observer(self._exited)
        self._watches: dict[tuple[str, bool], object] = {}
        self._wanted: set[tuple[str, bool]] = set()
        self._lock = threading.Lock()

    def _exited(self) -> None:
        self._on_lost()
        self._on_exit()

    def _on_lost_now(self) -> None:
        self._on_lost()

    def _dir_gone(self, path: str) -> None:
        """A folder was deleted or renamed away: if it was a watched root, its watch ended with it."""
        with self._lock:
            gone = [k for k in self._watches if k[0] == path and not os.path.isdir(path)]
            for key in gone:  # watched again once the folder is back (reliable() tries)
                with contextlib.suppress(Exception):
                    self._observer.unschedule(self._watches[key])
                del self._watches[key]
        if gone:
            self._on_lost()

    def start(self) -> None:
        self._observer.start()

    def alive(self) -> bool:
        """Whether the observer thread still runs (it ends if a handler raises)."""
        return self._observer.is_alive() and not self._observer.ended

    def reliable(self) -> bool:
        """True while events can be trusted: the observer runs and every wanted folder is watched.

        Folders not watched yet (they did not exist, or inotify refused) are tried again here.
        """
        with self._lock:
            if self._wanted - set(self._watches):
                self._schedule_missing()
            return self.alive() and not (self._wanted - set(self._watches))

    def restart(self) -> None:
        """Replace a dead observer with a new one watching the same roots (events missed meanwhile
        are caught by the rescan that ``on_lost`` asks for)."""
        with self._lock:
            with contextlib.suppress(Exception):
                self._observer.stop()
            self._observer = _Observer(self._exited)
            self._watches = {}
            self._observer.start()
            self._schedule_missing()
        self._on_lost()

    def set_patterns(self, patterns: list[str]) -> None:
        """Watch exactly the roots these globs need (folders that do not exist yet are watched once
        they do: :meth:`reliable`, called before each rescan, tries again)."""
        with self._lock:
            self._wanted = {watch_root(p) for p in patterns}
            for key in list(self._watches):
                if key not in self._wanted:
                    with contextlib.suppress(Exception):
                        self._observer.unschedule(self._watches[key])
                    del self._watches[key]
            self._schedule_missing()

    def _schedule_missing(self) -> None:
        for key in self._wanted - set(self._watches):
            root, recursive = key
            if os.path.isdir(root):
                with contextlib.suppress(OSError):  # inotify limits: rescans still find everything
                    self._watches[key] = self._observer.schedule(
                        self._handler, root, recursive=recursive, event_filter=_EVENTS
                    )

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(5)
