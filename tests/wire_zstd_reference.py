"""The streaming zstd decoder headrace used before ``headrace._wire_zstd`` decompressed in one call:
the reference tests/test_wire_zstd_decoder.py compares the new decoder against (kept as it was).

Original docstring: zstd on the wire: compressing a chunk batch, and decompressing one with a bound (sans-io).

The codec is the ``zstandard`` package (python-zstandard, libzstd bindings). It was chosen over
pyarrow's bundled codec because ``pyarrow.decompress`` needs the decompressed size up front and
returns the whole output at once, so a receiver could bound nothing while decompressing; and over
``backports.zstd`` because that is a backport of a Python 3.14 stdlib module the rest of the code
does not use at run time. ``zstandard`` writes self-describing frames (the frame header carries
the content size) and has a streaming decompressor that writes its output through a callback, in
pieces of at most :data:`_WRITE_SIZE` bytes, so the output can be counted as it is produced.

Wire rules (a body sent with ``Content-Encoding: zstd``):

* exactly one zstd frame whose header declares its content size (``zstd`` CLI on a file,
  ``ZstdCompressor().compress``, and every one-shot compressor write it); a frame without it is
  refused (400 ``bad_encoding``), as is one whose declared size is larger than the receiver's
  ``max_body_bytes`` (413 ``body_too_large``, decided from the frame header before decompressing);
* the output may not pass the declared size (the decompressor stops there: a "zstd bomb" that lies
  about its size costs at most the declared size of memory) and must reach it exactly (a cut
  frame is refused); nothing may follow the frame.
"""

from __future__ import annotations

from typing import IO, cast

import zstandard

from headrace.errors import InvalidInput

__all__ = ["BoundedZstdDecoder"]

#: The ``Content-Encoding`` token.
ZSTD = "zstd"
#: Largest piece the decompressor hands over at once.
_WRITE_SIZE = 1 << 17
#: Largest back-reference window accepted (libzstd's own default limit is 128 MiB).
_MAX_WINDOW = 1 << 27
#: Bytes of body needed to read any frame header.
_FRAME_HEADER_MAX = 18


def compress(body: bytes, level: int) -> bytes:
    """``body`` as one zstd frame at ``level``, its content size in the frame header."""
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(body)


class _TooMuch(Exception):
    pass


class _Sink:
    """Collects the decompressor's output; raises once it would pass ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        if len(self.buf) + len(data) > self.limit:
            raise _TooMuch
        self.buf += data
        return len(data)


class BoundedZstdDecoder:
    """Decompresses a zstd body fed piece by piece, never holding more than ``max_bytes`` of output.

    :meth:`feed` each piece of the body as it arrives, then :meth:`finish` for the decompressed
    body. Both raise :class:`~headrace.errors.InvalidInput`: ``body_too_large`` when the declared
    size is above ``max_bytes``, ``bad_encoding`` for anything that is not one whole zstd frame of
    the size it declares.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._head = bytearray()
        self._sink: _Sink | None = None
        self._writer: zstandard.ZstdDecompressionWriter | None = None
        self._declared = 0

    @property
    def declared(self) -> int | None:
        """The content size the frame declares, once its header was fed (the most :meth:`finish` returns)."""
        return self._declared if self._writer is not None else None

    def _start(self) -> None:
        try:
            params = zstandard.get_frame_parameters(bytes(self._head))
        except zstandard.ZstdError as exc:
            raise InvalidInput("bad_encoding", f"Content-Encoding zstd, but not a zstd frame: {exc}") from None
        size = params.content_size
        if size == zstandard.CONTENTSIZE_UNKNOWN or size == zstandard.CONTENTSIZE_ERROR:
            raise InvalidInput(
                "bad_encoding", "the zstd frame does not declare its content size; compress the body in one go"
            )
        if size > self.max_bytes:
            raise InvalidInput("body_too_large", f"zstd frame declares {size} bytes > max_body_bytes {self.max_bytes}")
        self._declared = size
        self._sink = _Sink(size)
        dctx = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW)
        self._writer = dctx.stream_writer(cast(IO[bytes], self._sink), write_size=_WRITE_SIZE, write_return_read=True)
        data = bytes(self._head)
        self._head.clear()
        self._write(data)

    def _write(self, data: bytes) -> None:
        assert self._writer is not None
        try:
            self._writer.write(data)
        except _TooMuch:
            raise InvalidInput(
                "bad_encoding", f"the zstd body decompresses to more than the {self._declared} bytes it declares"
            ) from None
        except zstandard.ZstdError as exc:
            raise InvalidInput("bad_encoding", f"corrupt zstd body: {exc}") from None

    def feed(self, data: bytes) -> None:
        """Decompress the next piece of the body."""
        if self._writer is None:
            self._head += data
            if len(self._head) >= _FRAME_HEADER_MAX:
                self._start()
            return
        self._write(data)

    def finish(self) -> bytearray:
        """The whole decompressed body, once the last piece was fed (not copied: no second buffer)."""
        if self._writer is None:
            if not self._head:
                raise InvalidInput("bad_encoding", "Content-Encoding zstd with an empty body")
            self._start()
        assert self._writer is not None and self._sink is not None
        try:
            self._writer.flush()  # type: ignore[no-untyped-call]
        except _TooMuch:
            raise InvalidInput(
                "bad_encoding", f"the zstd body decompresses to more than the {self._declared} bytes it declares"
            ) from None
        except zstandard.ZstdError as exc:
            raise InvalidInput("bad_encoding", f"corrupt zstd body: {exc}") from None
        if len(self._sink.buf) != self._declared:
            raise InvalidInput(
                "bad_encoding",
                f"the zstd body ends after {len(self._sink.buf)} of the {self._declared} bytes it declares",
            )
        return self._sink.buf
