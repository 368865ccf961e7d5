"""What every script shares and no other module owns: the one-line error exit and the one atomic file writer.

Torch-free, so that the data/*/prepare.py scripts can use it without importing torch.
"""

import os
import socket
import sys
from contextlib import contextmanager

ERROR_DETAIL_CHARS = 200 # how much of a library's error message goes into ours
TMP_MARK = '.tmp.' # a write in progress: <name>.tmp.<host>.<pid>; one whose process is gone was cut short by a crash


class UserError(ValueError):
    """Bad input from the user (a setting, a file): scripts print it as one line, no traceback."""


def _print_error(message):
    print(f"error: {message}", file=sys.stderr)


def error_exit(message):
    """The one way a script stops on bad input: 'error: message' as one line on stderr, exit status 1."""
    _print_error(message)
    sys.exit(1)


def exit_on_user_error():
    """Make an uncaught UserError end the script through error_exit, instead of a traceback."""
    default_hook = sys.excepthook
    def hook(exc_type, exc, tb):
        if issubclass(exc_type, UserError):
            _print_error(exc) # error_exit's line; the interpreter is already on its way out
        else:
            default_hook(exc_type, exc, tb)
    sys.excepthook = hook


def first_line(e):
    """The start of an exception's message for a one-line error: its first line, cut after a sentence if long."""
    lines = str(e).strip().splitlines()
    if not lines:
        return 'no message'
    line = lines[0]
    if len(line) > ERROR_DETAIL_CHARS:
        end = line.rfind('. ', 0, ERROR_DETAIL_CHARS)
        line = line[:end + 1] if end > 0 else line[:ERROR_DETAIL_CHARS] + '...'
    return line


def _fsync_dir(path):
    """Make a rename inside directory path durable (where the OS lets a directory be opened)."""
    try:
        fd = os.open(path or '.', os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path):
    """Where a write to path goes first: beside it, named after this host and process."""
    return f"{path}{TMP_MARK}{socket.gethostname()}.{os.getpid()}"


@contextmanager
def atomic_write(path):
    """
    with atomic_write(path) as tmp: write the whole file to tmp (by any means: open, torch.save, a memmap,
    os.link). When the block ends without an error, tmp is fsynced and renamed over path, so readers see
    the old file or the new one, never half of one; on an error tmp is removed and path is untouched.
    """
    tmp = temp_path(path)
    try:
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(path))
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_bytes_atomic(path, data):
    """atomic_write for a file whose bytes are all in memory."""
    with atomic_write(path) as tmp, open(tmp, 'wb') as f:
        f.write(data)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError: # it exists, under another user
        return True
    except OSError:
        return True # cannot tell: keep its file
    return True


def abandoned_temp_files(directory, suffix=''):
    """
    Names in directory of temp files (see temp_path) for files ending in suffix whose writer is gone: written on
    this host by a process that no longer runs. A temp file of a live process (another run writing to the same
    directory) or of another host is never listed.
    """
    host = socket.gethostname()
    found = []
    for name in os.listdir(directory):
        target, mark, owner = name.rpartition(TMP_MARK)
        if not mark or not target.endswith(suffix):
            continue
        owner_host, _, pid = owner.rpartition('.')
        if owner_host == host and pid.isdigit() and not _process_alive(int(pid)):
            found.append(name)
    return found
