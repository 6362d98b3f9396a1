"""Checkpoints of the GAN state with orbax: atomic (written to a temporary folder, then
renamed, so a run killed mid-save keeps its previous checkpoint) and pruned to the last few."""
from __future__ import annotations

import os

import orbax.checkpoint as ocp

from jaxgan.state import GANState


LATEST, BEST = 'checkpoints', 'best'  # the run folder's two checkpoint folders


class CheckpointStore:
  """`<workdir>/<folder>/<step>/`, keeping the newest `keep`. `folder`: LATEST (the training
  checkpoints) or BEST (the state with the best periodic evaluation, see jaxgan.trainer)."""

  def __init__(self, workdir: str, *, keep: int = 3, folder: str = LATEST):
    if folder not in (LATEST, BEST):
      raise ValueError(f'checkpoint folder must be {LATEST!r} or {BEST!r}, got {folder!r}')
    self.directory = os.path.join(os.path.abspath(workdir), folder)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, state: GANState) -> None:
    step = int(state.step)
    if step != self._manager.latest_step():
      self._manager.save(step, args=ocp.args.StandardSave(state))

  def restore(self, abstract_state: GANState, step: int | None = None) -> GANState:
    """The state at `step` (default: latest), laid out as `abstract_state` (shapes, shardings)."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      hint = ('train first (python -m experiments.train --workdir=...)'
              if os.path.basename(self.directory) == LATEST else
              'train with --config.eval_every=N (> 0) to keep the best checkpoint')
      raise FileNotFoundError(f'no checkpoint in {self.directory}: {hint}')
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def wait(self) -> None:
    """Block until background writes are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
