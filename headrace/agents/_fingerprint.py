"""Which file is this? A fingerprint of a file's first bytes, beside its device and inode.

Device and inode name a file only while it exists: once it is deleted, the inode may be reused by
another file. So a cursor also records the fingerprint of the file's first ``fpl`` bytes (``fpl`` is
at most the agent's ``fingerprint_bytes``, fewer while the file is shorter), and a file is taken for
the one at a cursor only when its identity *and* the fingerprint of its first ``fpl`` bytes match.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["Fingerprint", "fingerprint", "fingerprint_of", "fingerprint_path"]

#: (number of bytes hashed, hash of them)
Fingerprint = tuple[int, str]


def fingerprint_of(data: bytes) -> Fingerprint:
    """The fingerprint of ``data`` (a file's first bytes): its length and an 8-byte BLAKE2b hash."""
    return len(data), hashlib.blake2b(data, digest_size=8).hexdigest()


def fingerprint(fd: int, nbytes: int) -> Fingerprint:
    """(length, hash) of the first ``nbytes`` of an open file (fewer if the file is shorter)."""
    return fingerprint_of(os.pread(fd, nbytes, 0))


def fingerprint_path(path: str, nbytes: int) -> Fingerprint | None:
    """The fingerprint of the first ``nbytes`` of the file at ``path``, or None if it cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        return fingerprint(fd, nbytes)
    except OSError:
        return None
    finally:
        os.close(fd)
