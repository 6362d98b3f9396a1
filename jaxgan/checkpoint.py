"""Checkpoints of the GAN state with orbax: atomic (written to a temporary folder, then
renamed, so a run killed mid-save keeps its previous checkpoint) and pruned to the last few."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
from typing import Iterator

import jax
import orbax.checkpoint as ocp

from jaxgan import run_folder
from jaxgan.state import GANState


LATEST, BEST = 'checkpoints', 'best'  # the run folder's two checkpoint folders
_PRUNED_TRIES = 3
_STEP_METADATA = '_CHECKPOINT_METADATA'  # orbax's; in every complete checkpoint's step folder


class _UnreadableCheckpoint(ValueError):
  """A checkpoint whose files cannot be read."""


class CheckpointStore:
  """`<workdir>/<folder>/<step>/`, keeping the newest `keep`. `folder`: LATEST (the training
  checkpoints) or BEST (the state with the best periodic evaluation, see jaxgan.trainer)."""

  def __init__(self, workdir: str, *, keep: int = 3, folder: str = LATEST,
               create: bool = True):
    """`create=False` for a store only read from (sampling, evaluating): a run folder without
    that checkpoint folder is left without it. A store that writes (a training, which holds the
    run folder's lock) removes what a killed run left unfinished: the temporary folders of
    saves and the old checkpoints it was pruning; one that reads must not: a training may be
    writing or pruning them."""
    if folder not in (LATEST, BEST):
      raise ValueError(f'checkpoint folder must be {LATEST!r} or {BEST!r}, got {folder!r}')
    problem = run_folder.path_problem(workdir, training=False)
    if problem:
      raise ValueError(f'run folder {workdir}: {problem}')
    self.directory = os.path.join(os.path.abspath(workdir), folder)
    _silence_closed_event_loop_callbacks()
    if create and jax.process_index() == 0:  # the host that saves and prunes, as orbax's
      _remove_partly_pruned(self.directory)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=create, cleanup_tmp_directories=create),
        item_handlers=ocp.StandardCheckpointHandler())  # known before a save: item_metadata

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, state: GANState) -> None:
    step = int(state.step)
    latest = self._manager.latest_step()
    if step == latest:
      return
    if latest is not None and step < latest:
      # orbax saves nothing at or below its newest step: a best state found again after a
      # resume from before the newest replaces the newer ones instead of being dropped.
      for newer in sorted(s for s in self._manager.all_steps() if s > step):
        self._manager.delete(newer)
    with self._disk_full_named():  # a save also waits for the one before it
      self._manager.save(step, args=ocp.args.StandardSave(state))

  def restore(self, abstract_state: GANState) -> GANState:
    """The newest state, laid out as `abstract_state` (shapes, shardings)."""
    for _ in range(_PRUNED_TRIES):
      step = self._manager.latest_step()
      if step is None:
        hint = ('train first (python -m experiments.train --workdir=...)'
                if os.path.basename(self.directory) == LATEST else
                'train with --config.eval_every=N (> 0) to keep the best checkpoint')
        raise FileNotFoundError(f'no checkpoint in {self.directory}: {hint}')
      try:
        return self._restore_step(abstract_state, step)
      except _UnreadableCheckpoint:
        if os.path.isdir(os.path.join(self.directory, str(step))):
          raise
        # A training of the run pruned it (keep_checkpoints) while this process read it: the
        # newest is a later one now.
        self._manager.reload()
    raise OSError(f'the newest checkpoint in {self.directory} was removed {_PRUNED_TRIES} '
                  'times while being read (a training saving and pruning faster than it can be '
                  'read): run the command again')

  def _restore_step(self, abstract_state: GANState, step: int) -> GANState:
    # Checkpoints written before a field was added (d_state, g_ema_params) lack it: restore the
    # fields they hold, and take the others, which must have no arrays, from `abstract_state`.
    try:
      metadata = dict(self._manager.item_metadata(step))
    except Exception as error:  # pylint: disable=broad-except  # orbax's, tensorstore's, json's
      raise self._unreadable(step, error) from None
    saved = set(metadata)
    fields = {f.name: getattr(abstract_state, f.name) for f in dataclasses.fields(abstract_state)}
    # Networks other than the config's (a config.json copied from another run) fail the restore
    # in orbax's words, which read as damage and led to moving good checkpoints away.
    for name in ('g_params', 'd_params'):
      difference = _first_difference(metadata.get(name), fields[name])
      if difference:
        raise ValueError(f'the checkpoint at step {step} in {self.directory} holds other networks '
                         f'than the run\'s config.json describes ({name}{difference}): the '
                         'config.json is not the one the run trained with (restore it from a '
                         'copy of the run folder), or another jaxgan version wrote the '
                         'checkpoint (use that version)')
    missing = {name: value for name, value in fields.items() if name not in saved}
    needed = sorted(name for name, value in missing.items() if jax.tree.leaves(value))
    if needed:
      raise ValueError(f'the checkpoint at step {step} in {self.directory} has no '
                       f'{", ".join(needed)}, which this config needs: it was written by '
                       'another experiment; use a new --workdir')
    target = {name: value for name, value in fields.items() if name not in missing}
    try:
      restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as error:  # pylint: disable=broad-except
      raise self._unreadable(step, error) from None
    return type(abstract_state)(**restored, **missing)

  def _unreadable(self, step: int, error: Exception) -> ValueError:
    """One line for a checkpoint whose files are damaged (a disk filled up, a copy cut short)."""
    cause = (str(error).strip().splitlines() or [''])[0]
    cause = cause.split(' See full TensorStore details')[0][:200]  # then a pybind repr
    return _UnreadableCheckpoint(
        f'the checkpoint at step {step} in {self.directory} cannot be read '
        f'({type(error).__name__}: {cause}): it is damaged; move '
        f'{os.path.join(self.directory, str(step))} away to use the checkpoint before it')

  def wait(self) -> None:
    """Block until background writes are on disk."""
    with self._disk_full_named():
      self._manager.wait_until_finished()

  @contextlib.contextmanager
  def _disk_full_named(self) -> Iterator[None]:
    """Orbax reports a full disk as TensorStore's RESOURCE_EXHAUSTED error (a ValueError, its
    cause at the end of a long line): say it and what to do in one."""
    try:
      yield
    except Exception as error:  # pylint: disable=broad-except  # orbax's and TensorStore's
      if 'No space left on device' not in str(error):
        raise
      raise OSError(f'no space left on the disk holding {self.directory} to save '
                    'a checkpoint: free some, then run the same command again; the run resumes '
                    'from its newest complete checkpoint, if any') from None

  def close(self) -> None:
    self._manager.close()


def _remove_partly_pruned(directory: str) -> None:
  """Orbax prunes an old checkpoint with a recursive delete: a run killed during it leaves a
  step folder without some of its files, which the next save's pruning removes, but a finished
  run never saves again and every command warned about it. A complete checkpoint holds
  `_CHECKPOINT_METADATA` (written before the folder gets its step's name): a step folder
  without it, older than one with it, is such a leftover."""
  if not os.path.isdir(directory):
    return
  steps = {int(name): os.path.isfile(os.path.join(directory, name, _STEP_METADATA))
           for name in os.listdir(directory) if name.isdigit()}
  newest_complete = max((step for step, complete in steps.items() if complete), default=None)
  for step, complete in steps.items():
    if not complete and newest_complete is not None and step < newest_complete:
      shutil.rmtree(os.path.join(directory, str(step)))


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _first_difference(saved, expected) -> str | None:
  """Where two networks' parameters first differ in name or shape: ' PATH: saved S, the config
  E' (None: they agree, or the checkpoint holds no such field)."""
  if saved is None:
    return None
  saved, expected = _shapes(saved), _shapes(expected)
  for path in sorted(saved.keys() | expected.keys()):
    if saved.get(path) != expected.get(path):
      describe = lambda shape: 'none' if shape is None else str(shape)
      return (f'{path}: saved {describe(saved.get(path))}, the config '
              f'{describe(expected.get(path))}')
  return None


def _silence_closed_event_loop_callbacks() -> None:
  """After a failed restore or save (a damaged checkpoint, a full disk) orbax closes its event
  loop while TensorStore still completes the other reads or writes; each of their callbacks
  then finds the loop closed, and Python printed every one as an unraisable RuntimeError
  (dozens of lines around the one-line error). Those alone are dropped (the hook is installed
  once per process, by the first CheckpointStore); any other unraisable exception is reported
  as before."""
  previous = sys.unraisablehook
  if getattr(previous, 'drops_closed_event_loop', False):
    return

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == 'Event loop is closed'):
      previous(unraisable)

  hook.drops_closed_event_loop = True
  sys.unraisablehook = hook
