"""zstd on the wire: compressing a chunk batch, and decompressing one with a bound (sans-io).

The codec is the ``zstandard`` package (python-zstandard, libzstd bindings). It was chosen over
pyarrow's bundled codec because ``pyarrow.decompress`` needs the decompressed size up front from
the caller (a receiver would have to trust it) and returns the whole output at once; and over
``backports.zstd`` because that is a backport of a Python 3.14 stdlib module the rest of the code
does not use at run time. ``zstandard`` writes self-describing frames (the frame header carries
the content size). The receiver reads that size from the header before anything is decompressed,
refuses it above its limit, and then decompresses the whole frame in one call into a buffer of
exactly that size (libzstd stops with an error rather than write past it). An earlier version
decompressed piece by piece as the body streamed in, through a Python callback that copied every
128 KiB into a growing buffer; the one call avoids that copy and the callbacks (the streaming
version is kept in ``tests/wire_zstd_reference.py`` as the reference the tests compare against).

Wire rules (a body sent with ``Content-Encoding: zstd``):

* exactly one zstd frame whose header declares its content size (``zstd`` CLI on a file,
  ``ZstdCompressor().compress``, and every one-shot compressor write it); a frame without it is
  refused (400 ``bad_encoding``), as is one whose declared size is larger than the receiver's
  ``max_body_bytes`` (413 ``body_too_large``, decided from the frame header before decompressing);
* the output may not pass the declared size (the decompressor stops there: a "zstd bomb" that lies
  about its size costs at most the declared size of memory) and must reach it exactly (a cut
  frame is refused); nothing may follow the frame (not even an empty or a skippable frame).
"""

from __future__ import annotations

import zstandard

from .errors import InvalidInput

__all__ = ["ZSTD", "BoundedZstdDecoder", "compress"]

#: The ``Content-Encoding`` token.
ZSTD = "zstd"
#: Largest back-reference window accepted (libzstd's own default limit is 128 MiB).
_MAX_WINDOW = 1 << 27
#: Bytes of body needed to read any frame header.
_FRAME_HEADER_MAX = 18


def compress(body: bytes, level: int) -> bytes:
    """``body`` as one zstd frame at ``level``, its content size in the frame header."""
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(body)


class BoundedZstdDecoder:
    """Decompresses a zstd body fed piece by piece, never holding more than ``max_bytes`` of output.

    :meth:`feed` each piece of the body as it arrives (the frame header is checked as soon as it is
    in), then :meth:`finish` for the decompressed body. Both raise
    :class:`~headrace.errors.InvalidInput`: ``body_too_large`` when the declared size is above
    ``max_bytes``, ``bad_encoding`` for anything that is not one whole zstd frame of the size it
    declares. The compressed pieces are held until :meth:`finish` (the caller bounds them).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self._declared: int | None = None

    @property
    def declared(self) -> int | None:
        """The content size the frame declares, once its header was fed (the most :meth:`finish` returns)."""
        return self._declared

    def _start(self) -> None:
        head = b"".join(self._parts)
        self._parts = [head]
        try:
            params = zstandard.get_frame_parameters(head)
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

    def feed(self, data: bytes) -> None:
        """Take the next piece of the body."""
        if data:
            self._parts.append(bytes(data))
            self._size += len(data)
        if self._declared is None and self._size >= _FRAME_HEADER_MAX:
            self._start()

    def finish(self) -> bytes:
        """The whole decompressed body, once the last piece was fed (made in one buffer of the declared size)."""
        if self._declared is None:
            if not self._size:
                raise InvalidInput("bad_encoding", "Content-Encoding zstd with an empty body")
            self._start()
        assert self._declared is not None
        body = b"".join(self._parts) if len(self._parts) != 1 else self._parts[0]
        self._parts = []
        if self._declared == 0:  # libzstd's one-shot call cannot tell an empty frame from an unknown size
            return _finish_empty(body)
        dctx = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW)
        try:
            out = dctx.decompress(body, max_output_size=self._declared, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise InvalidInput("bad_encoding", f"corrupt zstd body: {exc}") from None
        if len(out) != self._declared:
            raise InvalidInput(
                "bad_encoding", f"the zstd body ends after {len(out)} of the {self._declared} bytes it declares"
            )
        return out


def _finish_empty(body: bytes) -> bytes:
    """A frame declaring 0 bytes: it must hold no data and be the whole body."""
    dobj = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW).decompressobj()
    try:
        out = dobj.decompress(body)
    except zstandard.ZstdError as exc:
        raise InvalidInput("bad_encoding", f"corrupt zstd body: {exc}") from None
    if out:
        raise InvalidInput("bad_encoding", "the zstd body decompresses to more than the 0 bytes it declares")
    if not dobj.eof or dobj.unused_data:
        raise InvalidInput("bad_encoding", "the zstd body is not one whole frame of the 0 bytes it declares")
    return b""
