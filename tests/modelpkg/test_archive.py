"""The writer's zips depend only on their entries; the reader streams within bounds."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from core.errors import PackageError
from modelpkg.archive import Limits, read_all, write_archive


def _written(entries: dict[str, bytes | Path]) -> bytes:
    buffer = io.BytesIO()
    write_archive(buffer, entries)
    return buffer.getvalue()


def test_entries_are_sorted_dated_1980_mode_0644_and_stored(tmp_path: Path) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(b"w" * 100)
    data = _written({"z.txt": b"z", "MANIFEST.json": b"{}", "source/weights.bin": source})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    assert [info.filename for info in infos] == ["MANIFEST.json", "source/weights.bin", "z.txt"]
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.external_attr >> 16 == stat.S_IFREG | 0o644
        assert info.compress_type == zipfile.ZIP_STORED


def test_same_entries_give_the_same_bytes_whatever_their_order(tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(b"a" * 10)
    first = _written({"b": b"2", "a": source})
    assert _written({"a": b"a" * 10, "b": b"2"}) == first


def test_unsafe_names_are_never_written() -> None:
    with pytest.raises(PackageError, match="escapes the package"):
        _written({"../x": b""})


def test_read_all_keeps_only_the_entries_asked_for() -> None:
    entries = read_all(_written({"keep": b"k", "skip": b"s"}), Limits(), keep=lambda name: name == "keep")
    assert entries["keep"].data == b"k"
    assert entries["skip"].data is None
    assert entries["skip"].size == 1
    assert entries["skip"].sha256 == "043a718774c572bd8a25adbeb1bfcd5c0256ae11cecf9f9c3f925d0e52beaf89"


def test_packages_over_the_size_limit_are_refused_before_reading() -> None:
    with pytest.raises(PackageError, match=r"package is \d+ bytes; the limit is 10"):
        read_all(_written({"a": b"a"}), Limits(max_package_bytes=10), keep=lambda _: True, what="package")
