"""Evaluation during training: every `config.eval_every` steps the trainer scores its
generator, appends the figures to metrics.jsonl and keeps the state with the lowest fcd so far
in `<run>/best/<step>/`, described by `<run>/best.json`.

Every process evaluates (the generator is replicated, the figures deterministic), so all agree
on when the best checkpoint is saved, which orbax needs on several hosts; only the writer
(process 0) writes files.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Callable

from absl import logging

from jaxgan import class_proportions, run_folder
from jaxgan.checkpoint import BEST, CheckpointStore
from jaxgan.evaluation import suite

BEST_METRIC = 'fcd'  # lower is better
BEST_JSON = 'best.json'


def read_best(workdir: str) -> dict | None:
  """best.json of a run folder ({step, fcd, metrics}), or None before the first evaluation."""
  path = os.path.join(workdir, BEST_JSON)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    try:
      best, problem = json.load(f), 'no step'
    except ValueError as error:
      best, problem = None, f'not JSON: {error}'
  if isinstance(best, dict) and isinstance(best.get('step'), int):
    return best
  raise ValueError(f'{path} is damaged ({problem}): restore it from a copy of the run folder, or '
                   f'move it and {os.path.join(workdir, BEST)} away to track the best state anew '
                   'from the next evaluation')


class TrainingEvaluator:
  """Called by the trainer at evaluation steps with the generator variables (host arrays)
  and the state as checkpointed; returns the record it appended to metrics.jsonl."""

  def __init__(self, config, gan, workdir: str, *, append: Callable[[dict], None],
               is_writer: bool):
    self._evaluate_generator = suite.make_periodic_evaluator(config, gan)
    self._workdir, self._append, self._is_writer = workdir, append, is_writer
    # What the figures were measured on: a best.json measured otherwise is not comparable.
    # sample_latent_scale may change on resume, as eval_num_samples and the class mix may.
    self._drawn = dict(eval_num_samples=config.eval_num_samples,
                       eval_latent_scale=run_folder.latent_scale(config),
                       eval_reference=suite.PERIODIC_REFERENCE)
    if gan.num_classes:
      self._drawn['eval_class_proportions'] = config.get('eval_class_proportions',
                                                         class_proportions.BALANCED)
    self._store = CheckpointStore(workdir, keep=1, folder=BEST)
    best = read_best(workdir)
    self._best = math.inf
    if best:
      # Records from before the class mix was recorded were drawn balanced; those from before
      # the latent scale was recorded are taken to be at this run's; those from before the
      # reference was recorded compared with the test split.
      recorded = {'eval_class_proportions': class_proportions.BALANCED,
                  'eval_latent_scale': self._drawn['eval_latent_scale'],
                  'eval_reference': 'test', **best}
      best_drawn = {key: recorded.get(key) for key in self._drawn}
      if self._store.latest_step() != best['step']:  # killed between saving one and the other
        logging.warning('%s names step %d but %s holds %s: the next evaluation replaces both',
                        BEST_JSON, best['step'], self._store.directory,
                        self._store.latest_step())
      elif best_drawn == self._drawn:
        self._best = best[BEST_METRIC]
      else:
        logging.warning('%s was measured on %s, this run evaluates %s: the next evaluation '
                        'replaces it', BEST_JSON, best_drawn, self._drawn)

  def __call__(self, step: int, epoch: float, g_variables: dict, checkpoint_state) -> dict:
    start = time.perf_counter()
    figures = self._evaluate_generator(g_variables, step)
    record = dict(step=step, epoch=epoch, **self._drawn,
                  eval_seconds=round(time.perf_counter() - start, 1),
                  **{f'eval_{name}': value for name, value in figures.items()})
    improved = figures[BEST_METRIC] < self._best
    logging.info('evaluation at step %d: fcd %.3f, precision %.3f, recall %.3f (%d samples, '
                 '%.1f s)%s', step, figures['fcd'], figures['precision'], figures['recall'],
                 self._drawn['eval_num_samples'], record['eval_seconds'],
                 '  new best' if improved else '')
    if improved:
      self._best = figures[BEST_METRIC]
      self._store.save(checkpoint_state)
      self._store.wait()  # on disk before best.json names it
      if self._is_writer:
        run_folder.write_json_atomic(
            dict(step=step, epoch=epoch, metric=BEST_METRIC, **self._drawn,
                 **{BEST_METRIC: figures[BEST_METRIC]}, metrics=figures),
            os.path.join(self._workdir, BEST_JSON))
    if self._is_writer:
      self._append(record)
    return record

  def close(self) -> None:
    self._store.wait()
    self._store.close()
