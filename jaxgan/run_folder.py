"""Run-folder files (see jaxgan.trainer for the layout): reading the config, atomic writes, the
lock that keeps a second training out."""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
from typing import Iterator

import ml_collections
from absl import logging

from jaxgan import atomic, locks


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run was trained with."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: --workdir must be a run folder written by '
                            'experiments.train')
  return ml_collections.ConfigDict(read_config_json(path))


def read_config_json(path: str) -> dict:
  """A run's config.json as written by experiments.train (refused, naming the file, if not)."""
  with open(path) as f:
    try:
      config = json.load(f)
    except ValueError as error:
      problem = f'not JSON: {error}'
    else:
      # Sections every config.json has held; the scripts that read a run need all of them.
      sections = ('model', 'data', 'loss', 'optimizer', 'schedule')
      missing = [name for name in sections if not (isinstance(config, dict)
                                                   and isinstance(config.get(name), dict))]
      if not missing:
        return config
      named = ' and '.join([', '.join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing)
      problem = f'JSON without its {named} section{"s" if len(missing) > 1 else ""}'
  raise ValueError(f'{path} is not the config experiments.train writes ({problem}): restore it '
                   'from a copy of the run folder')


def latent_scale(config: ml_collections.ConfigDict, override: float | None = None) -> float:
  """The scale a run's latents are drawn at (see `generate.latents`): `override` (a script's
  --latent_scale) when given, else the run's `sample_latent_scale` (1 in runs older than it)."""
  return float(override if override is not None else config.get('sample_latent_scale', 1.0))


def write_json_atomic(obj, path: str) -> None:
  """Write next to `path` (its folder made if missing), then rename: a killed process never
  leaves half a file."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic.replacing(path) as tmp, open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write('\n')


# The longest path a training writes below its run folder, in bytes: a checkpoint save's
# `checkpoints/STEP.orbax-checkpoint-tmp/default.orbax-checkpoint-tmp/ocdbt.process_0/d/HASH`
# is 116 at step 16 (strace); room for longer steps and `best/`.
_DEEPEST_WRITE = 160


def path_problem(workdir: str, *, training: bool) -> str | None:
  """Why the checkpoint library could not use files below `workdir`, or None: a name that is not
  UTF-8 text (bytes a non-UTF-8 locale's file-name encoding cannot decode, which TensorStore
  cannot take), and for a training a path so near the file system's limit that the first
  checkpoint save, after an epoch's work, would pass it."""
  path = os.path.abspath(workdir)
  try:
    as_utf8 = path.encode('utf-8')
  except UnicodeEncodeError:  # bytes the file-name encoding could not decode
    as_utf8 = None
  if as_utf8 != os.fsencode(path):  # TensorStore would write to another name, or fail
    encoding = sys.getfilesystemencoding()
    fix = ('rename it (or name another folder) in UTF-8' if encoding == 'utf-8' else
           'run with PYTHONUTF8=1 or in a UTF-8 locale (LC_ALL=C.UTF-8)')
    return (f'its name is not UTF-8 text in this process\'s file-name encoding ({encoding}), '
            f'and the checkpoint library takes UTF-8 names only: {fix}')
  pathconf = getattr(os, 'pathconf', None)  # none on Windows
  if not training or pathconf is None:
    return None
  try:
    limit = pathconf(atomic.nearest_existing_parent(path), 'PC_PATH_MAX')
  except (OSError, ValueError):  # the system does not say
    return None
  length = len(os.fsencode(path))
  if limit <= 0 or length + _DEEPEST_WRITE <= limit:  # -1: no limit
    return None
  return (f'its path is {length} bytes long and checkpoints write up to {_DEEPEST_WRITE} bytes '
          f'deeper, past the file system\'s limit of {limit} bytes for a path: use a shorter '
          '--workdir')


LOCK_FILE = 'training.lock'


def check_not_training(workdir: str) -> None:
  """Raises `training_lock`'s BlockingIOError if another process trains `workdir` now, without
  taking the lock. Each process of a multi-process run asks before they join one another (only
  process 0 takes the lock, after), so that every one refuses a folder in training; a shared
  lock, so that the run's processes asking at once do not refuse one another."""
  try:
    f = open(os.path.join(workdir, LOCK_FILE), encoding='utf-8')
  except (FileNotFoundError, NotADirectoryError):  # a new run folder
    return
  with f:
    try:
      locks.lock(f, wait=False, shared=True)
    except BlockingIOError:
      raise _being_trained(workdir, f) from None


def _being_trained(workdir: str, lock_file) -> BlockingIOError:
  """The refusal of a run folder that another process trains; `lock_file` names it. An OSError,
  as flock's own: the scripts report it as a one-line error."""
  holder = lock_file.read().strip() or 'starting'
  return BlockingIOError(
      f'{workdir} is being trained by another process ({holder}): two trainings of one folder '
      'would mix their checkpoints and metrics; wait for it to end or stop it, or use a new '
      '--workdir')


@contextlib.contextmanager
def training_lock(workdir: str) -> Iterator[None]:
  """Held while a process trains the run in `workdir` (which must exist): a second training there
  at the same time is refused, naming the first, before it writes anything. The operating system
  lets go of the lock when its process ends, however it ends (SIGKILL, a lost machine), so a
  killed training never blocks the next; the file stays, emptied by a holder that ends
  normally. Where there are no locks (Windows, some file systems): a warning, no guard."""
  path = os.path.join(workdir, LOCK_FILE)
  with open(path, 'a+') as f:
    try:
      unlockable = locks.lock(f, wait=False)
    except BlockingIOError:
      f.seek(0)
      raise _being_trained(workdir, f) from None
    if unlockable:
      logging.warning('%s cannot be locked (%s): a second training of %s at the same time '
                      'would not be refused', path, unlockable, workdir)
      yield
      return
    with atomic.naming(path):
      f.seek(0)
      f.truncate()
      f.write(f'pid {os.getpid()} on {socket.gethostname()} since '
              f'{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}\n')
      f.flush()
    try:
      yield
    finally:
      f.truncate(0)  # closing the file then lets go of the lock
