"""Deterministic zip writing and bounded, hostile-input-safe zip reading.

Writing: entries sorted, stored uncompressed, dated 1980-01-01, mode 0644, so the same
entries give the same bytes on every machine (deflate output differs between zlib builds,
which would change the digest). Reading never extracts: it streams each entry through a
hash and a byte budget, keeping in memory only the entries the caller asks for.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Final

from core.errors import PackageError

MiB: Final = 1 << 20
GiB: Final = 1 << 30
_EPOCH: Final = (1980, 1, 1, 0, 0, 0)
_MODE: Final = stat.S_IFREG | 0o644
_UNIX: Final = 3
_CHUNK: Final = MiB
# zipfile's ways of saying an archive is broken or uses features it does not implement.
_ZIP_ERRORS: Final = (zipfile.BadZipFile, NotImplementedError, EOFError, OSError, ValueError)
_EOCD: Final = b"PK\x05\x06"
_EOCD_SIZE: Final = 22
_ZIP64_LOCATOR: Final = b"PK\x06\x07"
_ZIP64_EOCD: Final = b"PK\x06\x06"
_BYTES_PER_ENTRY: Final = 1024
"""Central directory bytes allowed per entry: a 46-byte record, a long name and extras."""
# General-purpose flag bits a package may use: deflate options, data descriptor, UTF-8 names.
_KNOWN_FLAGS: Final = 0x2 | 0x4 | 0x8 | 0x800

Source = str | os.PathLike[str] | bytes | BinaryIO
"""A package as a path, its bytes, or a binary file object open for reading."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what a reader accepts; the defaults fit any model ONNX can hold (2 GiB)."""

    max_package_bytes: int = 4 * GiB
    max_entries: int = 10_000
    max_entry_bytes: int = 2 * GiB
    max_total_bytes: int = 4 * GiB
    max_ratio: float = 100.0
    """Largest uncompressed/compressed size ratio of one entry (zip bombs reach 1000+)."""
    ratio_min_bytes: int = MiB
    """Entries smaller than this are too small to be a bomb; their ratio is not checked."""
    max_manifest_bytes: int = MiB


@dataclass(frozen=True)
class Entry:
    """One archive entry as read: its true size, sha256 and, when kept, its bytes."""

    name: str
    size: int
    sha256: str
    data: bytes | None


def write_archive(target: BinaryIO, entries: Mapping[str, bytes | Path]) -> None:
    """Write ``entries`` (bytes, or a file to copy) as a deterministic zip into ``target``."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in sorted(entries):
            check_entry_name(name)
            _write_entry(archive, _fixed_info(name), entries[name])


def _fixed_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = _UNIX
    info.external_attr = _MODE << 16
    return info


def _write_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, data: bytes | Path) -> None:
    if isinstance(data, bytes):
        archive.writestr(info, data)
        return
    # The size is set first so the zip64 decision, hence the bytes, depend only on the content.
    info.file_size = data.stat().st_size
    with data.open("rb") as src, archive.open(info, "w") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)


def check_entry_name(name: str) -> None:
    """Refuse names that could address anything outside a folder they were extracted to."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise PackageError(f"entry {name!r} escapes the package (absolute path)")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise PackageError(f"entry {name!r} escapes the package ('..' in its path)")
    if not name or "\\" in name or any(ord(char) < 32 for char in name):
        raise PackageError(f"entry name {name!r} is not allowed (empty, backslash or control character)")
    if "." in name.split("/") or "" in name.rstrip("/").split("/"):
        raise PackageError(f"entry name {name!r} is not allowed (empty or '.' path component)")


def package_size(source: Source) -> int:
    """The size in bytes of a package source, without reading it."""
    if isinstance(source, bytes):
        return len(source)
    if isinstance(source, str | os.PathLike):
        return os.stat(source).st_size
    position = source.tell()
    size = source.seek(0, io.SEEK_END)
    source.seek(position)
    return size


def sha256_of(source: Source) -> str:
    """The sha256 of a package source's bytes: the package digest."""
    digest = hashlib.sha256()
    if isinstance(source, bytes):
        digest.update(source)
        return digest.hexdigest()
    with _binary(source) as stream:
        stream.seek(0)
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _binary(source: Source) -> Iterator[BinaryIO]:
    if isinstance(source, bytes):
        yield io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        with open(source, "rb") as stream:
            yield stream
    else:
        yield source


@contextmanager
def open_archive(source: Source, limits: Limits, what: str = "package") -> Iterator[zipfile.ZipFile]:
    """Open a zip after checking its size; a non-zip or broken zip is a PackageError."""
    size = package_size(source)
    if size > limits.max_package_bytes:
        raise PackageError(f"{what} is {size} bytes; the limit is {limits.max_package_bytes}")
    with _binary(source) as stream:
        _check_directory_size(stream, limits, what)
        with _zip(stream, what) as archive:
            yield archive


def _check_directory_size(stream: BinaryIO, limits: Limits, what: str) -> None:
    """Bound the central directory before zipfile turns every record in it into an object."""
    size = _central_directory_size(stream)
    stream.seek(0)
    if size is not None and size > limits.max_entries * _BYTES_PER_ENTRY:
        raise PackageError(
            f"{what} has a {size}-byte directory, too large for the limit of {limits.max_entries} entries"
        )


def _central_directory_size(stream: BinaryIO) -> int | None:
    """The size the end-of-directory record declares; None if absent (zipfile will say why)."""
    end = stream.seek(0, io.SEEK_END)
    stream.seek(max(0, end - _EOCD_SIZE - 0xFFFF))  # the record ends with a comment of <= 64 KiB
    tail = stream.read()
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < _EOCD_SIZE:
        return None
    size = int.from_bytes(tail[at + 12 : at + 16], "little")
    if size != 0xFFFFFFFF:
        return size
    locator = tail[at - 20 : at] if at >= 20 else b""
    if not locator.startswith(_ZIP64_LOCATOR):
        return None
    stream.seek(int.from_bytes(locator[8:16], "little"))
    record = stream.read(56)
    return int.from_bytes(record[40:48], "little") if record.startswith(_ZIP64_EOCD) else None


def _zip(stream: BinaryIO, what: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(stream)
    except _ZIP_ERRORS as exc:
        raise PackageError(f"{what} is not a valid zip archive: {exc}") from None


def checked_entries(archive: zipfile.ZipFile, limits: Limits, what: str = "package") -> list[zipfile.ZipInfo]:
    """The archive's entries after every check that needs no decompression."""
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise PackageError(f"{what} has {len(infos)} entries; the limit is {limits.max_entries}")
    seen: set[str] = set()
    for info in infos:
        _check_info(info, limits)
        if info.filename in seen:
            raise PackageError(f"{what} has a duplicate entry {info.filename!r}")
        seen.add(info.filename)
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        raise PackageError(
            f"{what} unpacks to {total} bytes; the limit is {limits.max_total_bytes} (zip bomb?)"
        )
    # Many entries each under ratio_min_bytes escape the per-entry check; together they are one bomb.
    packed = max(sum(info.compress_size for info in infos), 1)
    if total >= limits.ratio_min_bytes and total / packed > limits.max_ratio:
        raise PackageError(
            f"{what} unpacks to {total} bytes from {packed}: compression ratio {total / packed:.0f}; "
            f"the limit is {limits.max_ratio:.0f} (zip bomb?)"
        )
    return infos


def _check_info(info: zipfile.ZipInfo, limits: Limits) -> None:
    name = info.filename
    if "\x00" in info.orig_filename:
        raise PackageError(f"entry name {info.orig_filename!r} is not allowed (NUL character)")
    check_entry_name(name)
    _check_file_type(info)
    if info.flag_bits & 0x1:
        raise PackageError(f"entry {name!r} is encrypted")
    if info.flag_bits & ~_KNOWN_FLAGS:
        raise PackageError(f"entry {name!r} uses unsupported zip features (flags {info.flag_bits:#06x})")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise PackageError(
            f"entry {name!r} uses compression method {info.compress_type}; use stored or deflate"
        )
    _check_size(info, limits)


def _check_file_type(info: zipfile.ZipInfo) -> None:
    if info.is_dir():
        raise PackageError(f"entry {info.filename!r} is a directory; packages hold files only")
    kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == _UNIX else 0
    if kind == stat.S_IFLNK:
        raise PackageError(f"entry {info.filename!r} is a symbolic link")
    if kind not in (0, stat.S_IFREG):
        raise PackageError(f"entry {info.filename!r} is not a regular file")


def _check_size(info: zipfile.ZipInfo, limits: Limits) -> None:
    if info.file_size > limits.max_entry_bytes:
        raise PackageError(
            f"entry {info.filename!r} is {info.file_size} bytes uncompressed; "
            f"the limit is {limits.max_entry_bytes}"
        )
    if info.file_size < limits.ratio_min_bytes:
        return
    ratio = info.file_size / max(info.compress_size, 1)
    if ratio > limits.max_ratio:
        raise PackageError(
            f"entry {info.filename!r} has compression ratio {ratio:.0f}; "
            f"the limit is {limits.max_ratio:.0f} (zip bomb?)"
        )


def read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, *, keep: bool) -> Entry:
    """Stream one entry through sha256 and a byte budget (headers may lie about sizes)."""
    digest = hashlib.sha256()
    kept = bytearray() if keep else None
    size = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PackageError(f"entry {info.filename!r} is over {limit} bytes uncompressed")
                digest.update(chunk)
                if kept is not None:
                    kept += chunk
    except _ZIP_ERRORS as exc:
        raise PackageError(f"entry {info.filename!r} cannot be read: {exc}") from None
    return Entry(info.filename, size, digest.hexdigest(), bytes(kept) if kept is not None else None)


def read_all(
    source: Source, limits: Limits, keep: Callable[[str], bool], what: str = "archive"
) -> dict[str, Entry]:
    """Check and read every entry of a zip, keeping the bytes of those ``keep`` names."""
    with open_archive(source, limits, what) as archive:
        return {
            info.filename: read_entry(archive, info, limits.max_entry_bytes, keep=keep(info.filename))
            for info in checked_entries(archive, limits, what)
        }
