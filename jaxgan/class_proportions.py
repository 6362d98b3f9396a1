"""The mix of classes a conditional model's digits are drawn in (--class_proportions of the
sampling and scoring scripts): every class equally often, the real train split's class
frequencies, or weights given one per class. `generate.class_labels` turns the weights into
labels."""
from __future__ import annotations

import math

import numpy as np
from absl import flags

from jaxgan import data

BALANCED = 'balanced'
TRAIN = 'train'


def define_flag(where: str = '') -> flags.FlagHolder:
  """--class_proportions; `where` qualifies the help, e.g. ' (--workdir only)'."""
  return flags.DEFINE_string(
      'class_proportions', BALANCED, f'Conditional models: the classes of the digits drawn'
      f'{where}. {BALANCED}: every class equally often; {TRAIN}: in the real train split\'s '
      'class frequencies (which the real reference, a random draw of train digits, follows; '
      'MNIST: 11.2% ones, 9.0% fives), so that fcd compares like with like; or one weight per '
      'class, e.g. 2,1,1,1,1,1,1,1,1,1. Counts by largest remainder, classes interleaved.')


def parse(spec: str, num_classes: int, name: str = '--class_proportions') -> str | np.ndarray:
  """`BALANCED`, `TRAIN` or the weights (C,) that `name`=`spec` names, checked against a model
  of `num_classes` classes (0: unconditional, which takes only the default)."""
  if num_classes == 0:
    if spec != BALANCED:
      raise ValueError(f'{name}={spec} needs a conditional model, but this run\'s model is '
                       'unconditional (model.num_classes = 0): drop it')
    return BALANCED
  if spec in (BALANCED, TRAIN):
    return spec
  usage = (f'give {BALANCED}, {TRAIN} or {num_classes} weights >= 0, one per class, e.g. '
           f'{",".join(["2"] + ["1"] * (num_classes - 1))}')
  try:
    weights = np.array([float(value) for value in spec.split(',')])
  except ValueError:
    raise ValueError(f'{name}={spec}: {usage}') from None
  if len(weights) != num_classes:
    raise ValueError(f'{name}={spec} has {len(weights)} weights but the model has '
                     f'{num_classes} classes: {usage}')
  if not all(0 <= w < math.inf for w in weights) or not weights.sum() > 0:
    raise ValueError(f'{name}={spec}: weights must be finite and >= 0, and not all 0: '
                     f'{usage}')
  return weights


def weights(spec: str, num_classes: int, dataset: str, *, manual_dir: str = '',
            data_dir: str = '') -> np.ndarray:
  """The class weights (C,) --class_proportions=`spec` names (`parse`); `TRAIN` counts the
  labels of `dataset`'s train split, read from `manual_dir`/`data_dir` as the run's data is."""
  parsed = parse(spec, num_classes)
  if isinstance(parsed, np.ndarray):
    return parsed
  if parsed == BALANCED:
    return np.ones(num_classes)
  _, labels = data.load_split(dataset, 'train', data_dir=data_dir or None,
                              manual_dir=manual_dir or None)
  return np.bincount(labels, minlength=num_classes).astype(np.float64)
