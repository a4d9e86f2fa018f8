"""Avro block codecs (null, deflate, zstandard): round trips, the Zstandard frame header, refusals,
and frames from an independent encoder (the ``zstd`` command line tool)."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import fastavro
import pytest
from archive_support import DAY1_MS, cut_chunks, read_archives, streams_from_archives, write_sinks
from hypothesis import given
from hypothesis import strategies as st

from headrace._block_codecs import CODECS, compress_block, decompress_block, zstd_content_size
from headrace.batch._archive import run_archive
from headrace.batch._config import ArchiveConfig

ZSTD_CLI = shutil.which("zstd")
needs_zstd_cli = pytest.mark.skipif(ZSTD_CLI is None, reason="the zstd command line tool is not installed")


@given(payload=st.binary(max_size=5000), codec=st.sampled_from(CODECS), level=st.integers(1, 9))
def test_every_codec_round_trips(payload: bytes, codec: str, level: int) -> None:
    assert decompress_block(codec, compress_block(codec, payload, level)) == payload


def _header(fcs_flag: int, single: int, dict_flag: int, content: int) -> bytes:
    """A Zstandard frame header laid out by RFC 8878 3.1.1.1 (the parser is checked against the spec)."""
    out = bytearray(b"\x28\xb5\x2f\xfd")
    out.append(fcs_flag << 6 | single << 5 | dict_flag)
    if not single:
        out.append(0x48)  # window descriptor
    out += b"\x07" * (0, 1, 2, 4)[dict_flag]  # dictionary id
    size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    out += (content - 256 if size == 2 else content).to_bytes(size, "little") if size else b""
    return bytes(out)


@given(
    fcs_flag=st.integers(0, 3),
    single=st.integers(0, 1),
    dict_flag=st.integers(0, 3),
    content=st.integers(0, (1 << 32) - 1),
)
def test_frame_header_content_size_follows_rfc_8878(fcs_flag: int, single: int, dict_flag: int, content: int) -> None:
    size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if size == 0:
        assert zstd_content_size(_header(fcs_flag, single, dict_flag, 0)) is None
        return
    content = content % (1 << 8 * size) if size != 2 else 256 + content % (1 << 16)
    assert zstd_content_size(_header(fcs_flag, single, dict_flag, content)) == content


def test_bad_blocks_are_refused_with_a_reason() -> None:
    good = compress_block("zstandard", b"line\n" * 1000, 3)
    with pytest.raises(ValueError, match="not a Zstandard frame"):
        decompress_block("zstandard", b"garbage" + good)
    with pytest.raises(ValueError, match="corrupt zstandard block"):
        decompress_block("zstandard", good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupt deflate block"):
        decompress_block("deflate", b"\xff\xff\xff")
    with pytest.raises(ValueError, match=r"unsupported Avro codec 'snappy'.*null, deflate, zstandard"):
        decompress_block("snappy", good)
    with pytest.raises(ValueError, match="unsupported Avro codec"):
        compress_block("lz4", b"x", 1)


@needs_zstd_cli
def test_frames_from_the_zstd_tool_decode_and_streamed_ones_are_refused(tmp_path: Path) -> None:
    payload = b"".join(f"10.0.0.{i % 250} - - [10/Oct/2026:13:55:36 +0000] GET /{i}\n".encode() for i in range(5000))
    (tmp_path / "p").write_bytes(payload)
    subprocess.run([str(ZSTD_CLI), "-q", "-19", str(tmp_path / "p"), "-o", str(tmp_path / "p.zst")], check=True)
    assert decompress_block("zstandard", (tmp_path / "p.zst").read_bytes()) == payload
    # from a pipe the tool does not know the size: its frame has no content size, which is refused
    streamed = subprocess.run([str(ZSTD_CLI), "-q", "-c"], input=payload, capture_output=True, check=True).stdout
    assert zstd_content_size(streamed) is None
    with pytest.raises(ValueError, match="without a content size"):
        decompress_block("zstandard", streamed)
    # and headrace's own frames decode with the tool
    (tmp_path / "h.zst").write_bytes(compress_block("zstandard", payload, 3))
    out = subprocess.run([str(ZSTD_CLI), "-q", "-d", "-c", str(tmp_path / "h.zst")], capture_output=True, check=True)
    assert out.stdout == payload


def test_changing_the_archive_codec_rewrites_parts_and_keeps_every_byte(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = [f"line {i}\n".encode() for i in range(3000)]
    chunks = cut_chunks("h", "s.log", "app", lines, rng)
    done = tmp_path / "sink" / "done"
    cfg = {"sink_dir": str(tmp_path / "sink"), "archive_dir": str(tmp_path / "archive")}
    write_sinks(done, chunks[: len(chunks) // 2], 10, DAY1_MS, rng)
    assert run_archive(ArchiveConfig(**cfg, codec="deflate")).ok
    write_sinks(done, chunks[len(chunks) // 2 :], 10, DAY1_MS, rng)
    assert run_archive(ArchiveConfig(**cfg, codec="zstandard")).ok
    assert streams_from_archives(tmp_path / "archive") == {("h", "s.log"): b"".join(lines)}
    ((_, _, name),) = read_archives(tmp_path / "archive")
    with open(next((tmp_path / "archive").rglob(name)), "rb") as f:
        assert fastavro.reader(f).codec == "zstandard", "the grown part is written with the configured codec"
