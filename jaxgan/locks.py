"""Advisory locks on open files (flock), where the system and its file system take them."""
from __future__ import annotations

try:
  import fcntl
except ImportError:  # Windows
  fcntl = None


def lock(f, *, wait: bool, shared: bool = False) -> str | None:
  """Locks the open file `f` for this process, waiting for another holder if `wait`, else
  raising BlockingIOError. Returns None once locked, or why it cannot be locked here (no flock on
  Windows; some mounts take no locks: FUSE ones such as Colab's Drive, NFS without lockd), for
  the caller to go on unguarded. `shared`: a lock that only an exclusive one excludes. Closing
  the file lets go, and so does the process's end, however it ends."""
  if fcntl is None:
    return 'this system has no flock'
  kind = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
  try:
    fcntl.flock(f, kind if wait else kind | fcntl.LOCK_NB)
  except BlockingIOError:
    raise
  except OSError as error:
    return str(error)
  return None
