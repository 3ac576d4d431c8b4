"""A watcher hands a file on only once it has stopped changing."""

from __future__ import annotations

from pathlib import Path

from services.settling import SettlingFiles


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_file_settles_after_it_stops_changing(tmp_path: Path) -> None:
    clock = Clock()
    settling = SettlingFiles(2.0, clock=clock)
    growing = tmp_path / "upload.jpg"
    growing.write_bytes(b"half")
    settling.changed(str(growing))
    clock.now += 1.5
    assert settling.settled() == []
    growing.write_bytes(b"half and the rest")  # still being written: the wait starts over
    clock.now += 1.5
    assert settling.settled() == []
    clock.now += 2.0
    assert settling.settled() == [str(growing)]
    assert len(settling) == 0 and settling.settled() == []  # handed out once


def test_vanished_and_non_files_are_dropped(tmp_path: Path) -> None:
    clock = Clock()
    settling = SettlingFiles(1.0, clock=clock)
    temporary = tmp_path / "tmp.jpg"
    temporary.write_bytes(b"x")
    settling.changed(str(temporary))
    settling.changed(str(tmp_path))  # a folder is not a file to ingest
    settling.changed(str(tmp_path / "never-existed.jpg"))
    temporary.unlink()
    clock.now += 5
    assert settling.settled() == [] and len(settling) == 0
