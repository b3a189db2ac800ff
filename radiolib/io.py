"""Small file helpers used everywhere: atomic writes, durable folders, leftovers, content hashes.

Every file the study writes goes through :func:`atomic_write` (a temporary file in the same
folder, flushed and fsync'd, then renamed over the target, and the folder fsync'd), so a run
killed at any moment, or a machine that loses power, leaves either the old file or the new one,
never half of one. Files and folders get the mode the user's umask gives an ordinary
``open()`` or ``mkdir()`` (``tempfile`` alone would leave 0600 files and 0700 folders that
colleagues of the same group cannot read).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from radiolib.errors import OutputError


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence second choice)
    os.umask(mask)
    return mask


def default_mode(folder: bool = False) -> int:
    """Permission bits of a new file (0666) or folder (0777) after the umask."""
    return (0o777 if folder else 0o666) & ~_umask()


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename or a new file in it) to the disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. a platform that cannot open folders
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on folders
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """fsync every file and folder under ``folder`` (before renaming it into place)."""
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(dirpath)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", previous: str | os.PathLike | None = None
) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success rename it to ``path``.

    The file gets ``path``'s current mode if it exists, else the umask's. With ``previous``,
    the file ``path`` replaces is kept under that name (:func:`_keep_as`, never copied).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        perm = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        perm = default_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, perm)
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if previous is not None and path.exists():
            _keep_as(path, Path(previous))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _keep_as(path: Path, previous: Path) -> None:
    """Give ``path``'s current file the name ``previous`` too: a hard link renamed over
    ``previous``, so ``path`` never goes missing; a rename where links are not supported."""
    link = previous.with_name(f".{previous.name}.{os.getpid()}.link")
    try:
        link.unlink(missing_ok=True)
        os.link(path, link)
        os.replace(link, previous)
    except OSError:
        link.unlink(missing_ok=True)
        os.replace(path, previous)


def make_temp_dir(parent: str | os.PathLike, prefix: str, suffix: str = ".tmp") -> Path:
    """A new uniquely named folder in ``parent`` with the umask's mode (not mkdtemp's 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    os.chmod(tmp, default_mode(folder=True))
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def leftovers(parent: str | os.PathLike, prefix: str) -> list[Path]:
    """``parent/<prefix><pid>`` files or folders whose process ``pid`` has ended, oldest first.

    Such names mark work in progress (``.curated.tmp-123``, ``_executed.staging-123``); a
    process killed midway leaves them behind. Those of live processes (another run writing
    now) and of this process are not listed.
    """
    found = []
    for p in Path(parent).glob(f"{prefix}*"):
        pid = p.name[len(prefix) :]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            found.append(p)
    return sorted(found, key=lambda p: p.lstat().st_mtime_ns)


def remove_leftovers(parent: str | os.PathLike, prefix: str) -> list[Path]:
    """Remove the :func:`leftovers` ``parent/<prefix><pid>``; returns what was removed."""
    removed = leftovers(parent, prefix)
    for p in removed:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return removed


def check_folder_path(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path; :class:`OutputError` if it exists and is not a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file; expected a folder (or a new name)")
    return path


@contextlib.contextmanager
def atomic_folder(out: str | os.PathLike, tmp: str | os.PathLike) -> Iterator[Path]:
    """Build a folder at ``tmp`` (next to ``out``, on the same file system); when the block
    ends without error, swap it into the place of ``out``. On any error ``tmp`` is removed and
    a previous ``out`` stays as it was, so ``out`` is always the old folder or the new one."""
    out, tmp = Path(out), Path(tmp)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    try:
        yield tmp
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as fh:
        return json.load(fh)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
