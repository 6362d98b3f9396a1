"""Files written whole or not at all: to a temporary name beside them, then renamed."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
from typing import Iterator

from absl import logging


@contextlib.contextmanager
def replacing(path: str | os.PathLike, suffix: str = '') -> Iterator[str]:
  """Yields a temporary path beside `path` to write to (ending in `suffix`, for writers that
  pick the format from the name). When the block ends it is renamed onto `path`, so a reader,
  or a process killed mid-write, never sees half a file; if the block or the rename fails it is
  removed, and `path` keeps what it held (a full disk is named so). Temporaries of `path` that
  a killed writer on this machine left (SIGKILL runs no clean-up) are removed first."""
  path = os.fspath(path)
  host = socket.gethostname()
  _remove_orphans(path, host, suffix)
  tmp = os.path.join(os.path.dirname(path), f'{_temporary_prefix(path, host)}{os.getpid()}{suffix}')
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException as error:
    if os.path.isfile(tmp):
      os.remove(tmp)
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:  # errno's line names no file
      raise OSError(f'no space left on the disk to write {path}: free some, then run the '
                    'command again (the file is as it was)') from None
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
      raise OSError(f'cannot write {path} ({error.strerror.lower()}): write it to a folder '
                    'you can write') from None  # errno's line names the temporary
    raise


@contextlib.contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
  """Writes to a file already open fail with an OSError that names no file (open's name it):
  add `path` to it, so that its one line (a full disk) says which file."""
  try:
    yield
  except OSError as error:
    if error.filename is not None or error.errno is None:
      raise
    raise OSError(error.errno, error.strerror, os.fspath(path)) from None


def nearest_existing_parent(path: str | os.PathLike) -> str:
  """The folder that would hold `path` (a file or folder to make), or its nearest existing
  ancestor (which may be a file: then `path` cannot be made)."""
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  return parent


def unwritable_folder(path: str | os.PathLike) -> str | None:
  """`nearest_existing_parent(path)` if this process cannot write into it, else None: checked
  before long work, which would otherwise fail only when it writes."""
  parent = nearest_existing_parent(path)
  return None if os.access(parent, os.W_OK | os.X_OK) else parent


def _temporary_prefix(path: str, host: str) -> str:
  """`NAME.tmp-HOST-`, to which the writer's pid and the suffix are added; for a name too long
  to take them within the file system's 255 bytes, a digest of it stands in for NAME."""
  name = os.path.basename(path)
  if len(os.fsencode(name)) > 150:  # the rest takes up to 5 + 64 (a host name) + 1 + 20 bytes
    name = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
  return f'{name}.tmp-{host}-'


def _remove_orphans(path: str, host: str, suffix: str) -> None:
  """Removes `path`'s temporaries whose writer, a process of this host, has ended. Those of
  other hosts (a shared folder) are kept: whether their writer lives cannot be told here."""
  folder = os.path.dirname(path) or '.'
  if not os.path.isdir(folder):
    return  # the write itself will name the missing folder
  temporary = re.compile(re.escape(_temporary_prefix(path, host)) + r'(\d+)' + re.escape(suffix))
  for entry in os.listdir(folder):
    match = temporary.fullmatch(entry)
    if match and not _is_running(int(match.group(1))):
      os.remove(os.path.join(folder, entry))
      logging.warning('removed %s, left by a writer of %s that was killed', entry, path)


def _is_running(pid: int) -> bool:
  if os.name != 'posix':
    return True  # cannot ask: Windows's os.kill ends the process whatever the signal
  try:
    os.kill(pid, 0)  # signal 0: only asks whether the process exists
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's
    pass
  return True
