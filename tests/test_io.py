"""File helpers: the umask's modes, fsync of file and folder around the rename, leftovers, a
folder replaced whole or not at all."""

import os
import stat
from pathlib import Path

import pytest

from radiolib.io import atomic_folder, atomic_write, make_temp_dir, remove_leftovers


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_modes_follow_the_umask_and_an_existing_mode_is_kept(tmp_path, umask_027):
    target = tmp_path / "manifest.json"
    with atomic_write(target, "w") as fh:
        fh.write("1")
    assert _mode(target) == 0o640  # not mkstemp's 0600
    os.chmod(target, 0o604)
    with atomic_write(target, "w") as fh:
        fh.write("2")
    assert _mode(target) == 0o604 and target.read_text() == "2"
    assert _mode(make_temp_dir(tmp_path, ".patient.")) == 0o750  # not mkdtemp's 0700


def test_file_synced_before_and_folder_after_the_rename(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd):
        events.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        fsync(fd)

    def recording_replace(src, dst):
        events.append(("replace", Path(dst).name))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    (tmp_path / "checkpoint.pt").write_text("old")
    with atomic_write(tmp_path / "checkpoint.pt", "w", previous=tmp_path / "prev.pt") as fh:
        fh.write("new")
    assert events == [
        ("fsync", "file"),
        ("replace", "prev.pt"),  # a second name of the file replaced: never copied, never gone
        ("replace", "checkpoint.pt"),
        ("fsync", "folder"),
    ]
    assert (tmp_path / "prev.pt").read_text() == "old"
    assert (tmp_path / "checkpoint.pt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "prev.pt"]


def test_only_leftovers_of_ended_processes_are_removed(tmp_path):
    dead = tmp_path / ".curated.tmp-99999999"  # above any pid_max: no such process
    dead.mkdir()
    (dead / "arrays.npz").write_bytes(b"half")
    (tmp_path / ".curated.tmp-99999998").write_bytes(b"a file")
    keep = [f".curated.tmp-{os.getppid()}", f".curated.tmp-{os.getpid()}", ".curated.tmp-x"]
    for name in keep:
        (tmp_path / name).mkdir()
    removed = remove_leftovers(tmp_path, ".curated.tmp-")
    assert sorted(p.name for p in removed) == [".curated.tmp-99999998", ".curated.tmp-99999999"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_atomic_folder_swaps_on_success_and_keeps_the_old_one_on_error(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old")

    tmp = tmp_path / ".out.tmp"
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_folder(out, tmp) as folder:
            folder.mkdir()
            (folder / "a.txt").write_text("new")
            raise RuntimeError("half way")
    assert (out / "a.txt").read_text() == "old" and not tmp.exists()

    with atomic_folder(out, tmp) as folder:
        folder.mkdir()
        (folder / "b.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left

    fresh = tmp_path / "fresh"
    with atomic_folder(fresh, tmp_path / ".fresh.tmp") as folder:
        folder.mkdir()
    assert fresh.is_dir()
