"""Atomic file writes: a reader never sees a half-written artifact."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cft.errors import CftError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = path.name.encode()[:200].decode(errors="ignore")  # room for the random part in a 255-byte name
    fd, tmp = tempfile.mkstemp(prefix=f".{start}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def remove_orphans(folder: str | Path) -> list[Path]:
    """Delete the temporary files `atomic_path` leaves in `folder` when a process is killed mid-write (call it
    only where no other process is writing); returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in chunks (a checkpoint of several hundred MB is never held whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_text(obj: object, indent: int | None = None, sort_keys: bool = False) -> str:
    """`obj` as strict JSON, which has no NaN or infinity: a non-finite float (an interval from one seed, a score
    of no images) is written as null, so that every JSON reader (jq, JavaScript, ...) reads cft's files."""
    return json.dumps(_finite_or_null(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json_atomic(path: str | Path, obj: object) -> Path:
    return write_bytes_atomic(path, (json_text(obj, indent=2, sort_keys=True) + "\n").encode())


def _finite_or_null(obj: object) -> object:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite_or_null(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(value) for value in obj]
    return obj


def check_writable(folder: str | Path, what: str = "--out") -> Path:
    """Make `folder` (and its parents) and prove a file can be written in it, before any work starts: a read-only
    folder, a file where a folder should be, or a full disk is a CftError naming the path, not a traceback after
    the work is done."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CftError(f"{what} {folder} is a file; it must be a folder (or a path that does not exist yet)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".cft-write-check.", dir=folder) as probe:
            probe.write(b"x")
            probe.flush()
    except OSError as err:
        raise CftError(f"{what} {folder} cannot be written: {err.strerror or err}") from None
    return folder


LOCK_FILE = ".cft.lock"  # the OS lock (flock): the kernel drops it when its process dies, however it dies
HOLDER_FILE = ".cft.lock.json"  # who holds it: pid, host, command, since


@contextlib.contextmanager
def exclusive_folder(folder: str | Path, what: str = "--out") -> Iterator[Path]:
    """Check that `folder` can be written, then hold its lock while the block writes it: a second process that
    writes the same folder gets a CftError naming the folder and the holder. A lock left by a killed process
    is free (the kernel releases it), so a rerun is never blocked."""
    from filelock import FileLock, Timeout

    created = not Path(folder).exists()
    folder = check_writable(folder, what)
    lock = FileLock(str(folder / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise CftError(
            f"{what} {folder} is being written by another process ({_holder(folder)}); wait for it to finish, "
            "or choose another folder"
        ) from None
    try:
        since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv), "since": since}
        write_json_atomic(folder / HOLDER_FILE, holder)
        yield folder
    finally:
        with contextlib.suppress(OSError):
            (folder / HOLDER_FILE).unlink(missing_ok=True)
        lock.release()
        if created and {p.name for p in folder.iterdir()} <= {LOCK_FILE}:  # a run that wrote nothing leaves nothing
            with contextlib.suppress(OSError):
                (folder / LOCK_FILE).unlink(missing_ok=True)
                folder.rmdir()


def _holder(folder: Path) -> str:
    try:
        holder = json.loads((folder / HOLDER_FILE).read_text())
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}: {holder['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """A file output: not a folder, and its folder writable (made if needed), checked before the work starts."""
    path = Path(path)
    if path.is_dir():
        raise CftError(f"{what} {path} is a folder; it must name a file")
    check_writable(path.parent, f"the folder of {what} {path}")
    return path


NAME_MAX = 255  # bytes in one path component on the common file systems (ext4, xfs, apfs, ntfs)
_HASHED = re.compile(r"\.~[0-9a-f]{16}$")


def fitting_name(name: str, suffix: str = "") -> str:
    """`name + suffix` when it fits one path component; else the name cut short with a hash of the whole name
    (`<start>.~<16 hex>`), so any legal input name gives a legal, distinct output name."""
    if len((name + suffix).encode()) <= NAME_MAX:
        return name + suffix
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    room = NAME_MAX - len(suffix.encode()) - len(digest) - 2
    start = name.encode()[:room].decode(errors="ignore")
    return f"{start}.~{digest}{suffix}"


def is_fitted(stem: str) -> bool:
    """Whether a name came out of `fitting_name` shortened (its original is recorded elsewhere)."""
    return bool(_HASHED.search(stem))
