"""A run folder's generator scored by the metrics suite: digits from one of its checkpoints,
scored against the real data, as the record that experiments.evaluate writes to RUN/eval.json
(and experiments.sweep reads back)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxgan import class_proportions, generate, provenance, resampling, run_folder, trainer
from jaxgan.checkpoint import LATEST
from jaxgan.evaluation import metrics, suite, weights
from jaxgan.run_folder import load_run_config
from jaxgan.state import generator_variables


class ReusedReal(NamedTuple):
  """The real reference's figures of an earlier evaluation record, and where they came from:
  `origin` = {'path': the record, 'machine': the machine that scored them (None: unknown)}, as a
  record scored with them holds it under `real_from`; `counts`: the record's
  num_real_reference and num_real_test (None where it names none)."""
  figures: dict
  origin: dict
  counts: dict


class RunDigits(NamedTuple):
  step: int  # the generator's
  images: np.ndarray  # uint8 (N, 28, 28)
  labels: np.ndarray | None  # int32 (N,) for a conditional model
  resampling: dict | None  # `resampling.resample`'s statistics, when resampled


def generate_from_run(workdir: str, config: ml_collections.ConfigDict, num: int, seed: int,
                      checkpoint: str = LATEST, truncation: float = 0.0,
                      latent_scale: float = 1.0,
                      resample: resampling.Resampling | None = None, *, manual_dir: str = '',
                      data_dir: str = '', class_weights: np.ndarray | None = None) -> RunDigits:
  """`num` digits from the run's newest (or best) checkpoint; a conditional model generates
  classes 0, 1, ..., 0, 1, ... in turn, or in proportion to `class_weights` (C,) as
  `generate.class_labels` interleaves them. `truncation`, `latent_scale`: see
  `generate.latents`; `resample`: keep candidates by the run's density-ratio model
  (`resampling.resample_run`, trained from the run's data or `manual_dir`/`data_dir` the first
  time)."""
  components, state = trainer.restore_run_state(workdir, config, checkpoint)
  step = int(state.step)
  logging.info('generating %d digits from %s at step %d', num, workdir, step)
  gan = components.gan
  labels = None
  if gan.num_classes:
    labels = generate.class_labels(
        num, np.ones(gan.num_classes) if class_weights is None else class_weights)
  if resample is not None:
    digits, stats = resampling.resample_run(
        workdir, config, gan, generator_variables(state), step, labels, num, resample,
        seed=seed, latent_scale=latent_scale, truncation=truncation, manual_dir=manual_dir,
        data_dir=data_dir)
    return RunDigits(step, digits, labels, stats)
  z = generate.latents(jax.random.key(seed), num, gan.latent_dim, truncation, latent_scale)
  digits = generate.generate(gan, generator_variables(state), z, labels, step=state.step)
  return RunDigits(step, digits, labels, None)


def load_real(dataset: str, num_samples: int, *, manual_dir: str = '', data_dir: str = '',
              real_results: ReusedReal | None = None) -> metrics.RealData:
  """The real data that `num_samples` digits of `dataset` are scored against, its test split
  classified; reused real figures (`real_results`) checked to have counted these real digits."""
  params, _ = weights.load_shipped(dataset)
  real = suite.load_real_data(dataset, params, data_dir=data_dir or None,
                              manual_dir=manual_dir or None)
  if real_results is not None:
    check_same_real_data(real_results, reused_reference_size(real, num_samples),
                         len(real.test.images))
  return real


def reused_reference_size(real: metrics.RealData, num_samples: int) -> int:
  """How many real reference digits reused figures of `num_samples` digits were scored on."""
  return min(num_samples, len(suite.reference_pool(real, metrics.Settings())))


def score_digits(images: np.ndarray, labels: np.ndarray | None, dataset: str,
                 names: list[str] | None, *, manual_dir: str = '', data_dir: str = '',
                 real_results: ReusedReal | None = None,
                 real: metrics.RealData | None = None) -> dict:
  """The evaluation record of uint8 digits (N, 28, 28): `names` (None: all that the digits
  allow) for the digits ('model') and for as many real train digits ('real'), with what they
  were measured against and the machine that measured them (`provenance.host_record`: cas_cnn
  and augmentation_gain train classifiers, whose floats depend on it). `real_results`: the
  'real' of an earlier record of as many digits with the same names, reused instead of scoring
  the real reference again; the record names it under `real_from`. `real`: `load_real`'s for
  these digits and `real_results`, loaded here when None."""
  start = time.perf_counter()
  names = suite.resolve_metric_names(names, has_labels=labels is not None,
                                     num_samples=len(images))
  if real is None:
    real = load_real(dataset, len(images), manual_dir=manual_dir, data_dir=data_dir,
                     real_results=real_results)
  params, manifest = weights.load_shipped(dataset)
  settings = metrics.Settings()
  logging.info('classifying %d samples', len(images))
  samples = metrics.score_images(params, images, labels, name='samples')
  if real_results is None:
    reference = suite.real_reference(params, real, len(samples.images), settings)
    num_reference = len(reference.images)
  else:  # no reference digits drawn: their figures are known
    reference = None
    num_reference = reused_reference_size(real, len(samples.images))
  results = suite.evaluate(names, samples, real, reference, settings,
                           reference_results=None if real_results is None
                           else real_results.figures)
  reused = {} if real_results is None else dict(real_from=real_results.origin)
  return dict(dataset=dataset, num_samples=len(samples.images),
              num_real_reference=num_reference, num_real_test=len(real.test.images),
              metrics=list(names), classifier=dict(file=manifest['file'],
                                                   sha256=manifest['sha256']),
              settings=dataclasses.asdict(settings), machine=provenance.host_record(),
              seconds=round(time.perf_counter() - start, 1), **reused, **results)


def labels_seen_warning(num_train_examples: int | None, names,
                        split: str | None = 'train') -> str | None:
  """What to say when augmentation_gain adds digits of a generator that trained on more real
  labels than a K it scores (`num_train_examples`: the run's data.num_train_examples, 0 for the
  whole split, which for a split train[:N] is N; None: unknown): the gain at that K is then no
  gain from K labels alone. The K digits are the train split's first K / 10 of each class; a
  generator trained on another `split` (the run's data.split; None: unknown) than train or a
  prefix of it (train[:N], train[0:N]), whose subsets are those, learnt from other labelled
  digits at every K."""
  if 'augmentation_gain' not in names or num_train_examples is None:
    return None
  if split is not None and not re.fullmatch(r'train(\[(0%?)?:[^\]]*\])?', split):
    sizes = metrics.Settings().augmentation_sizes
    return (f'the generator trained on real labelled digits of data.split={split!r}, not '
            f'augmentation_gain\'s K = {" and ".join(f"{k:,}" for k in sizes)} of the train '
            'split: there it measures what its digits add to K labels, not what K labels alone '
            'can buy (train with --config.data.split=train for that)')
  counted_by = 'data.num_train_examples'
  prefix = re.fullmatch(r'train\[0?:(\d+)\]', split or '')
  if num_train_examples == 0 and prefix:  # all of train[:N]: N digits (tfds refuses fewer)
    num_train_examples, counted_by = int(prefix[1]), f'data.split={split!r}'
  sizes = [k for k in metrics.Settings().augmentation_sizes
           if num_train_examples == 0 or num_train_examples > k]
  if not sizes:
    return None
  if num_train_examples == 0 and split not in (None, 'train'):  # train[:P%]: size unknown here
    return (f'the generator trained on every real labelled digit of data.split={split!r} '
            f'(data.num_train_examples=0), which may be more than augmentation_gain\'s K = '
            f'{" and ".join(f"{k:,}" for k in sizes)}: there it would measure what its digits '
            'add to K labels, not what K labels alone can buy (train with '
            '--config.data.num_train_examples=K for that)')
  seen = ('the whole train split\'s' if num_train_examples == 0
          else f'{num_train_examples:,}')
  return (f'the generator trained on {seen} real labelled digits ({counted_by}), more '
          f'than augmentation_gain\'s K = {" and ".join(f"{k:,}" for k in sizes)}: there it '
          'measures what its digits add to K labels, not what K labels alone can buy (train '
          'with --config.data.num_train_examples=K for that)')


def warn_of_labels_seen(num_train_examples: int | None, names,
                        split: str | None = 'train') -> None:
  """Logs `labels_seen_warning`, if any: before the scoring, which takes minutes."""
  warning = labels_seen_warning(num_train_examples, names, split)
  if warning:
    logging.warning(warning)


def recorded_settings() -> dict:
  """The metric settings as an evaluation record holds them (JSON: tuples become lists), to
  compare a record's with the ones a new scoring would use."""
  return json.loads(json.dumps(dataclasses.asdict(metrics.Settings())))


def real_figures_machine(record: dict) -> dict | None:
  """The machine that scored an evaluation record's real figures: the record's own, or for
  figures it reused (`real_from`) the one that scored them; None where it is not recorded."""
  origin = record.get('real_from')
  return origin.get('machine') if isinstance(origin, dict) else record.get('machine')


def real_machine_differences(record: dict) -> list[str]:
  """How the machine that scored an evaluation record's real figures (`real_figures_machine`)
  differs from this one, in what decides their floats (empty: the same kind). On another
  processor the figures are close, not bitwise the ones this one would compute."""
  machine = real_figures_machine(record)
  if machine is None:
    return ['the record names none']
  return provenance.differences(machine, provenance.host_record(),
                                fields=provenance.SCORING_FIELDS)


def reused_real(path: str, record: dict) -> ReusedReal:
  """The real figures of the evaluation `record` read from `path`, with their origin."""
  return ReusedReal(record['real'], dict(path=os.path.abspath(path),
                                         machine=real_figures_machine(record)),
                    {name: record.get(name) for name in ('num_real_reference', 'num_real_test')})


def check_same_real_data(reused: ReusedReal, num_reference: int, num_test: int) -> None:
  """Refuses reused real figures whose record counted other real digits than the real data
  loaded now gives (another manual folder or data dir: other digits under the same name)."""
  now = dict(num_real_reference=num_reference, num_real_test=num_test)
  for name, count in now.items():
    if reused.counts[name] not in (None, count):
      raise ValueError(f'{reused.origin["path"]} scored {reused.counts[name]:,} real '
                       f'{name[len("num_real_"):]} digits, this real data gives {count:,}: pass '
                       'a record scored on the same real data (--manual_dir, --data_dir), or '
                       'drop --real_from to score the real digits again')


def classifier_sha256(dataset: str) -> str:
  """The SHA-256 of `dataset`'s evaluation classifier, which evaluation records name; the
  command that trains it if it is one jaxgan does not ship and it is not trained yet."""
  weights.check_available(dataset)
  return weights.read_manifest(weights.weights_path(dataset))['sha256']


def real_results_from(path: str, dataset: str, num_samples: int, names) -> ReusedReal:
  """The real reference's figures of the evaluation record at `path` (an eval.json), checked
  to be those `score_digits` would compute for `num_samples` digits of `dataset` scored by
  `names`: the same real digits, metrics, evaluation classifier and metric settings; warns when
  its real figures were scored on another kind of machine or it does not record one."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--real_from={path} not found: pass an eval.json written by '
                            'experiments.evaluate')
  with open(path, 'rb') as f:
    try:
      record = json.loads(f.read())
    except ValueError:  # not JSON, or not even text
      raise ValueError(f'--real_from={path} is not JSON: pass an eval.json written by '
                       'experiments.evaluate') from None
  if not isinstance(record, dict) or not isinstance(record.get('real'), dict):
    raise ValueError(f'{path} holds no real reference figures: pass an eval.json written by '
                     'experiments.evaluate')
  classifier = classifier_sha256(dataset)
  mismatches = [
      (record.get('dataset') == dataset, f'scored against {record.get("dataset")}, not {dataset}'),
      (record.get('num_samples') == num_samples,
       f'scored {record.get("num_samples")} digits, not {num_samples}'),
      (set(record.get('metrics', ())) == set(names),
       f'scored {",".join(record.get("metrics", ()))}, not {",".join(names)}'),
      (record.get('classifier', {}).get('sha256') == classifier,
       'was scored with another evaluation classifier'),
      (record.get('settings') == recorded_settings(), 'was scored with other metric settings')]
  for matches, problem in mismatches:
    if not matches:
      raise ValueError(f'{path} {problem}: pass a record of the same dataset, number of digits '
                       'and metrics, or drop --real_from to score the real digits again')
  changed = '; '.join(real_machine_differences(record))
  if changed:
    logging.warning('%s may have been scored on another kind of machine (%s): its real figures '
                    'may differ in the last digits from this machine\'s; drop --real_from to '
                    'score them here', path, changed)
  return reused_real(path, record)


def evaluate_run(workdir: str, names: list[str] | None = None, *, num_samples: int = 10000,
                 seed: int = 0, checkpoint: str = LATEST, truncation: float = 0.0,
                 latent_scale: float | None = None,
                 resample: resampling.Resampling | None = None, manual_dir: str = '',
                 data_dir: str = '', real_results: ReusedReal | None = None,
                 proportions: str = class_proportions.BALANCED) -> dict:
  """The evaluation record of `num_samples` digits from the run's `checkpoint`, latents drawn
  with `seed` (`truncation`, `latent_scale`: see `generate.latents`; None: the run's
  `sample_latent_scale`; `resample`: see `generate_from_run`), a conditional model's classes
  in `proportions` (a --class_proportions value, `class_proportions.parse`); the real data is
  the run's unless `manual_dir`/`data_dir` say otherwise. `real_results`: see
  `score_digits`."""
  start = time.perf_counter()
  config = load_run_config(workdir)
  latent_scale = run_folder.latent_scale(config, latent_scale)
  # Unknown or label-only metrics fail here, before any generating.
  num_classes = config.model.get('num_classes', 0)
  names = suite.resolve_metric_names(names, has_labels=num_classes > 0, num_samples=num_samples)
  weights.check_available(config.data.name)  # the scoring classifier, also before generating
  warn_of_labels_seen(config.data.get('num_train_examples', 0), names, config.data.split)
  manual_dir = manual_dir or config.data.manual_dir
  data_dir = data_dir or config.data.data_dir
  # Checked (and read, for TRAIN) before any generating.
  class_weights = class_proportions.weights(proportions, num_classes, config.data.name,
                                            manual_dir=manual_dir, data_dir=data_dir)
  # Loaded, and reused figures checked against it, before the minutes of generating.
  real = load_real(config.data.name, num_samples, manual_dir=manual_dir, data_dir=data_dir,
                   real_results=real_results)
  digits = generate_from_run(workdir, config, num_samples, seed, checkpoint, truncation,
                             latent_scale, resample, manual_dir=manual_dir, data_dir=data_dir,
                             class_weights=class_weights)
  source = dict(workdir=os.path.abspath(workdir), checkpoint=checkpoint, step=digits.step,
                seed=seed, truncation=truncation, latent_scale=latent_scale,
                num_train_examples=config.data.get('num_train_examples', 0))
  if num_classes:
    source['class_proportions'] = proportions
    source['class_counts'] = np.bincount(digits.labels, minlength=num_classes).tolist()
  if digits.resampling is not None:
    source['resampling'] = digits.resampling
  record = score_digits(digits.images, digits.labels, config.data.name, names,
                        manual_dir=manual_dir, data_dir=data_dir, real_results=real_results,
                        real=real)
  return dict(source, **record) | dict(seconds=round(time.perf_counter() - start, 1))
