"""Evaluation end to end: the real data, the real reference, the results table, and the
periodic evaluation a training run can call.

Every number is reported next to the same number for real data at the same sample size: a
fixed random subset of the real train split (outside the class-balanced subsets that
`augmentation_gain` starts from), scored against the same real test split as the samples.
"""
from __future__ import annotations

from typing import Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxgan import class_proportions, data, generate, run_folder
from jaxgan.evaluation import metrics, weights
from jaxgan.evaluation.metrics import RealData, ScoredImages, Settings

# The periodic evaluation's latents: stream 3 of the run's seed (the trainer uses 0-2).
EVAL_LATENT_STREAM = 3
_REFERENCE_SEED = 0
# The periodic evaluation compares with this many train digits (all if the split is shorter).
PERIODIC_REFERENCE_SIZE = 10_000
PERIODIC_REFERENCE = 'train'  # recorded with the figures (before 2026-12-07: 'test')


def load_real_data(dataset: str, params, *, data_dir: str | None = None,
                   manual_dir: str | None = None) -> RealData:
  """The scored real test split, the labelled train split and the dataset's further test
  splits (Kannada-MNIST's Dig-MNIST), which cas and augmentation_gain also score."""
  logging.info('loading and classifying the real %s test split', dataset)
  test_images, test_labels = data.load_split(dataset, 'test', data_dir=data_dir,
                                             manual_dir=manual_dir)
  test = metrics.score_images(params, test_images, test_labels, name='real test images')
  logging.info('loading the real %s train split', dataset)
  train_images, train_labels = data.load_split(dataset, 'train', data_dir=data_dir,
                                               manual_dir=manual_dir)
  extra_tests = {split: data.load_split(dataset, split, data_dir=data_dir, manual_dir=manual_dir)
                 for split in data.builders.TEST_SPLITS[dataset] if split != 'test'}
  return RealData(test, train_images, train_labels, extra_tests)


def reference_pool(real: RealData, settings: Settings) -> np.ndarray:
  """The train rows outside the augmentation subsets, from which the real reference is drawn."""
  held = max(settings.augmentation_sizes)
  return np.setdiff1d(np.arange(len(real.train_labels)), real.augmentation_rows(held))


def reference_rows(real: RealData, num: int, settings: Settings) -> np.ndarray:
  """`num` train rows (fewer if the split is short) drawn with a fixed seed from those outside
  the augmentation subsets, so the real reference never repeats an image it is added to."""
  held = max(settings.augmentation_sizes)
  pool = reference_pool(real, settings)
  if not len(pool):
    raise ValueError(f'the real train split holds {len(real.train_labels):,} digits, all kept '
                     f'for augmentation_gain\'s subsets of up to {held:,}, and the real reference '
                     f'is drawn from the others: score against a train split of more than '
                     f'{held:,} digits (the whole dataset: README, Data)')
  if num > len(pool):
    logging.warning('the real reference has %d images, not %d: the train split holds no more '
                    'outside the augmentation subsets', len(pool), num)
  chosen = np.random.default_rng(_REFERENCE_SEED).permutation(pool)[:num]
  return np.sort(chosen)


def real_reference(params, real: RealData, num: int, settings: Settings) -> ScoredImages:
  rows = reference_rows(real, num, settings)
  logging.info('classifying the real reference: %d train images', len(rows))
  return metrics.score_images(params, real.train_images[rows], real.train_labels[rows],
                              name='real reference images')


def resolve_metric_names(requested: list[str] | None, has_labels: bool,
                         num_samples: int | None = None) -> tuple[str, ...]:
  """The metrics to run: `requested` (checked), or by default every one the samples allow.
  `precision` and `recall` are accepted for `precision_recall`. With `num_samples`, refuses
  fewer digits than the metrics need, before they are generated."""
  if not requested:
    names = metrics.DEFAULT_METRICS + (metrics.LABEL_METRICS if has_labels else ())
  else:
    aliases = {'precision': 'precision_recall', 'recall': 'precision_recall'}
    names = metrics.check_names(dict.fromkeys(aliases.get(name, name) for name in requested))
  label_only = [name for name in names if name in metrics.LABEL_METRICS]
  if label_only and not has_labels:
    raise ValueError(f'{", ".join(label_only)} can only score labelled samples: score a '
                     'conditional run (cgan_*, acgan_* configs) or, with experiments.evaluate, '
                     '--samples holding a labels array; or drop them from --metrics')
  if num_samples is not None and num_samples < min_samples(names):
    raise ValueError(f'{num_samples} digits are too few for {", ".join(names)}: score at least '
                     f'{min_samples(names)}')
  return names


def min_samples(names) -> int:
  """The fewest digits `names` can score: precision_recall's k nearest neighbours need k + 1,
  a covariance (fcd) 2."""
  return metrics.Settings().nearest_k + 1 if 'precision_recall' in names else 2


def evaluate(names, samples: ScoredImages, real: RealData, reference: ScoredImages | None,
             settings: Settings = Settings(), *, reference_results: dict | None = None) -> dict:
  """{'model': results, 'real': results for the real reference}, metric by metric.
  `reference_results`: the reference's results from an earlier call with the same names,
  settings and reference size, returned as they are instead of computed again."""
  if reference is None and reference_results is None:
    raise ValueError('the real reference is needed unless its results are given: pass '
                     'real_reference(...) or reference_results=')
  results = {'model': {}, 'real': {} if reference_results is None else reference_results}
  for name in names:
    logging.info('computing %s', name)
    results['model'].update(metrics.compute([name], samples, real, settings))
    if reference_results is None:
      results['real'].update(metrics.compute([name], reference, real, settings))
  return results


def _format(value) -> str:
  if isinstance(value, list):
    return ' '.join(f'{100 * share:.1f}' for share in value) + ' (%)'
  return f'{value:.4f}'


def format_table(results: dict) -> str:
  """A text table: metric | model | real reference."""
  rows = [('metric', 'model', 'real reference')]
  rows += [(key, _format(value), _format(results['real'][key]))
           for key, value in results['model'].items()]
  widths = [max(len(row[column]) for row in rows) for column in range(3)]
  lines = [' | '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
           for row in rows]
  lines.insert(1, '-+-'.join('-' * width for width in widths))
  return '\n'.join(lines)


def make_periodic_evaluator(config: ml_collections.ConfigDict, gan
                            ) -> Callable[..., dict[str, float]]:
  """What a training run calls every `config.eval_every` steps: (generator variables, step) ->
  {fcd, classifier_score, precision, recall, coverage_entropy, coverage_min_share} (and
  label_accuracy for a conditional GAN, whose classes follow `config.eval_class_proportions`).

  The figures compare with PERIODIC_REFERENCE_SIZE digits of the train split (a fixed random
  subset), scored once, here, not with the test split: they choose the run's best checkpoint,
  and the test split that experiments.evaluate reports on must play no part in that choice.
  Each call generates `config.eval_num_samples` digits from the same latents (stream
  EVAL_LATENT_STREAM of `config.seed`), so successive figures differ only through the
  generator.
  """
  params, _ = weights.load_shipped(config.data.name)
  logging.info('loading and classifying the periodic evaluation\'s real train digits')
  images, labels = data.load_split(config.data.name, 'train',
                                   data_dir=config.data.data_dir or None,
                                   manual_dir=config.data.manual_dir or None)
  rows = np.sort(np.random.default_rng(_REFERENCE_SEED).permutation(len(images))
                 [:PERIODIC_REFERENCE_SIZE])
  # In RealData's place of the test split: the metrics compare the samples with its digits.
  real = RealData(metrics.score_images(params, images[rows], labels[rows],
                                       name='real train digits'), images[:0], labels[:0])
  z = generate.latents(jax.random.fold_in(jax.random.key(config.seed), EVAL_LATENT_STREAM),
                       config.eval_num_samples, gan.latent_dim,
                       scale=run_folder.latent_scale(config))
  labels = None
  if gan.num_classes:
    labels = generate.class_labels(config.eval_num_samples, class_proportions.weights(
        config.get('eval_class_proportions', class_proportions.BALANCED), gan.num_classes,
        config.data.name, manual_dir=config.data.manual_dir, data_dir=config.data.data_dir))

  def evaluate_generator(g_variables: dict, step=None) -> dict[str, float]:
    # step: a progressive generator's growth
    images = generate.generate(gan, g_variables, z, labels, step=step)
    samples = metrics.score_images(params, images, labels, name='generated digits')
    names = metrics.DEFAULT_METRICS + (('label_accuracy',) if gan.num_classes else ())
    results = metrics.compute(names, samples, real)
    return {key: value for key, value in results.items() if isinstance(value, float)}

  return evaluate_generator
