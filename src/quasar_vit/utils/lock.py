"""One writer per output directory.

Two ``train --out DIR`` (or two searches, or two exports to one folder) would interleave their
checkpoints and logs and leave a run that resumes neither.  The first writer takes an exclusive
``flock`` on ``DIR/.lock``; the second gets one error naming the holder.

Why ``flock`` and not a pid file: the kernel releases the lock when its holder dies, however it
dies (``kill -9``, OOM killer, power loss of a node that comes back), so a crashed owner never
leaves a stale lock behind and nobody has to decide whether a recorded pid is still the same
process.  The file records its holder for the error message.  A holder that ends normally deletes it
(while still holding it); a crash leaves it, unlocked, and the next writer takes it over.  On file
systems without ``flock`` (some NFS set-ups) the lock is skipped with a warning, and on Windows it is
skipped: it protects against a mistake, it is not needed for correctness.
"""

from __future__ import annotations

import functools
import inspect
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar, cast

from quasar_vit.errors import BusyError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    # typeshed types the name as the module; None marks "no POSIX locks here" (checked before use)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
F = TypeVar("F", bound=Callable[..., Any])


def is_main_process() -> bool:
    """Rank 0, or not under torchrun: the process that writes (other ranks share its directory)."""
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def output_lock(
    directory: str | Path, what: str, lock_name: str = LOCK_NAME, enabled: bool | None = None
) -> Iterator[None]:
    """Hold the exclusive lock ``directory/lock_name`` for the ``with`` body.

    ``what`` names the job in the holder record ("train", "search", ...).  ``enabled`` defaults to
    :func:`is_main_process`.  A directory this call had to create is removed again when the body
    fails before writing anything else into it, so a refused start leaves nothing behind.
    """
    if enabled is None:
        enabled = is_main_process()
    if not enabled or fcntl is None:
        yield
        return
    directory = Path(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    lock_file = directory / lock_name
    fd = _acquire(lock_file, directory)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{what} pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield
    finally:
        lock_file.unlink(missing_ok=True)  # removed while still held (see _acquire), so no file stays behind
        os.close(fd)  # closing releases the lock
        if created and not any(directory.iterdir()):
            directory.rmdir()


def _acquire(lock_file: Path, directory: Path) -> int:
    """Open and lock ``lock_file``; returns its descriptor.

    The holder deletes the file before releasing it, so a process that opened the file just before
    that may lock an inode no longer in the directory: it checks that the path still names the inode
    it locked, and otherwise starts again on the new file.
    """
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise BusyError(
                f"{directory} is in use by {holder}; wait for it to finish or choose another --out"
            ) from None
        except OSError as exc:  # ENOLCK / EOPNOTSUPP: a file system without flock
            print(
                f"warning: cannot lock {directory} ({exc.strerror}); not protected against a second writer",
                file=sys.stderr,
            )
            return fd
        try:
            if os.fstat(fd).st_ino == os.stat(lock_file).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the previous holder removed it between our open and our lock: retry


def locks_output(what: str, param: str, sibling: bool = False) -> Callable[[F], F]:
    """Decorate a job so it holds the lock of the directory passed as its argument ``param``.

    ``sibling=True`` is for a job that replaces the directory as a whole (an export): the lock is
    then ``.NAME.lock`` beside it, since a lock inside would be renamed away with the old folder.
    """

    def wrap(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            out = Path(sig.bind(*args, **kwargs).arguments[param])
            where, name = (out.parent, f".{out.name}.lock") if sibling else (out, LOCK_NAME)
            with output_lock(where, what, lock_name=name):
                return fn(*args, **kwargs)

        return cast(F, locked)  # functools.wraps keeps fn's signature; mypy cannot see that

    return wrap
