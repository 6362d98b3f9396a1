"""Files written whole or not at all: to a temporary name beside them, then renamed."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def replacing(path: str | os.PathLike, suffix: str = '') -> Iterator[str]:
  """Yields a temporary path beside `path` to write to (ending in `suffix`, for writers that
  pick the format from the name). When the block ends it is renamed onto `path`, so a reader,
  or a process killed mid-write, never sees half a file; if the block or the rename fails it is
  removed, and `path` keeps what it held."""
  path = os.fspath(path)
  tmp = f'{path}.tmp-{os.getpid()}{suffix}'
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    if os.path.isfile(tmp):
      os.remove(tmp)
    raise
