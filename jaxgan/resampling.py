"""Density-ratio resampling: keep a generator's digits in proportion to how much likelier the
real data makes them than the generator does.

A classifier with 2C outputs, (real, c) and (generated, c) for each of the C classes (one for
an unconditional model), is trained on a run's real training digits and as many generated ones
with the same class counts. Its logits then estimate the density ratio
r(x, c) = p_data(x | c) / p_g(x | c) = exp(logit(real, c) - logit(generated, c))
(Grover et al. 2019). Candidates are drawn for each class and each kept with probability
min(1, r / r_P), r_P the P-th percentile of r over that class's candidates (taken over log r,
so between two order statistics it interpolates geometrically): P = 100 is
rejection sampling against the largest ratio seen (Azadi et al. 2019, with a model trained
apart from D); a lower P keeps more candidates and matches the real data less closely.

The ratio model sees digits binarised at half intensity by default: on raw pixels it tells real
MNIST digits from the generator's by their faint background (pixels of 1-10 where real digits
hold 0), which the metrics do not see, and its ratio would then rank that instead of the
digits' shapes (README, Density-ratio resampling).

A run's ratio model is trained once and kept in RUN/resampling/, named by a digest of what it
depends on (the generator's step, the latents' scale and truncation, the settings below).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from typing import NamedTuple

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import flags, logging

from jaxgan import data, generate
from jaxgan.evaluation import classifier, weights
from jaxgan.models import GAN

FOLDER = 'resampling'  # inside the run folder
CHUNK = 10_000  # candidates generated and scored at a time: bounds host memory


@dataclasses.dataclass(frozen=True)
class RatioSettings:
  """How the ratio model is trained: the evaluation classifier's recipe (its architecture,
  batch, learning rate and dropout) without its random shifts, for fewer epochs over twice the
  examples."""
  epochs: int = 4
  batch_size: int = 128
  learning_rate: float = 2e-3
  # MNIST's digits are centred by their centre of mass, so a shifted real digit is not one the
  # generator should be drawn towards. With shifts of up to 2 pixels the ratio model told
  # held-out real from generated digits apart 79.9% of the time instead of 89.9%, and the
  # resampled digits scored fcd 2.61 and cas_cnn 0.9844 instead of 1.97 and 0.9853 (README).
  max_shift: int = 0
  dropout_rate: float = 0.2
  binarise_at: int = 128  # pixels >= this become 255, the rest 0; 0: the raw pixels
  seed: int = 0  # initialisation, batches and the generated training digits' latents

  def __post_init__(self):
    problems = [f'{name} must be >= 1, got {getattr(self, name)}'
                for name in ('epochs', 'batch_size') if getattr(self, name) < 1]
    if not 0 <= self.binarise_at <= 255:
      problems.append(f'binarise_at must be in 0..255 (0: raw pixels), got {self.binarise_at}')
    if problems:
      raise ValueError('bad ratio-model settings: ' + '; '.join(problems))


@dataclasses.dataclass(frozen=True)
class Resampling:
  """What `experiments.sample` and `experiments.evaluate` ask for with --resample_percentile."""
  percentile: float  # P in (0, 100]
  candidates_per_class: int = 50_000  # in all, for an unconditional model
  settings: RatioSettings = RatioSettings()

  def __post_init__(self):
    check_percentile(self.percentile)
    if self.candidates_per_class < 1:
      raise ValueError(f'candidates per class must be >= 1, got {self.candidates_per_class}')


def check_percentile(percentile: float) -> None:
  if not 0 < percentile <= 100:
    raise ValueError(f'resampling percentile must be in (0, 100] (100: rejection sampling '
                     f'against the largest ratio; e.g. 99), got {percentile}')


def network(num_classes: int, settings: RatioSettings) -> nn.Module:
  """The ratio model for `num_classes` generator classes (0: unconditional, one class)."""
  return classifier.Classifier(num_classes=2 * max(num_classes, 1),
                               dropout_rate=settings.dropout_rate)


def model_inputs(images: np.ndarray, settings: RatioSettings) -> np.ndarray:
  """uint8 digits as the ratio model sees them (binarised unless binarise_at is 0)."""
  images = classifier.as_batch(images)
  if not settings.binarise_at:
    return images
  return np.where(images >= settings.binarise_at, 255, 0).astype(np.uint8)


def _classes(labels: np.ndarray | None, num: int) -> np.ndarray:
  return np.zeros(num, np.int32) if labels is None else np.asarray(labels, np.int32)


def fit(real_images: np.ndarray, real_labels: np.ndarray | None, fake_images: np.ndarray,
        fake_labels: np.ndarray | None, num_classes: int, settings: RatioSettings,
        log_every: int = 0):
  """Parameters of the ratio model, trained to tell (real, c) from (generated, c): real digit
  of class c -> output c, generated digit of class c -> output C + c."""
  width = max(num_classes, 1)
  images = np.concatenate([model_inputs(real_images, settings),
                           model_inputs(fake_images, settings)])
  targets = np.concatenate([_classes(real_labels, len(real_images)),
                            width + _classes(fake_labels, len(fake_images))])
  steps = max(1, settings.epochs * len(images) // settings.batch_size)
  return classifier.fit(network(num_classes, settings), images, targets, seed=settings.seed,
                        num_steps=steps, batch_size=settings.batch_size,
                        learning_rate=settings.learning_rate, max_shift=settings.max_shift,
                        log_every=log_every)


def log_ratios(params, images: np.ndarray, labels: np.ndarray | None, num_classes: int,
               settings: RatioSettings) -> np.ndarray:
  """log r(x, c) = logit(real, c) - logit(generated, c), float32 (N,)."""
  logits = classifier.logits(params, model_inputs(images, settings),
                             model=network(num_classes, settings))
  classes = _classes(labels, len(logits))
  rows = np.arange(len(logits))
  return logits[rows, classes] - logits[rows, max(num_classes, 1) + classes]


def keep_mask(log_r: np.ndarray, classes: np.ndarray, percentile: float,
              uniforms: np.ndarray) -> np.ndarray:
  """Which candidates are kept: each with probability min(1, r / r_P), r_P the `percentile`-th
  percentile of r among the candidates of its class (np.percentile of log r: between two order
  statistics r_P is their geometric, not arithmetic, interpolation), decided by its uniform draw
  in [0, 1)."""
  check_percentile(percentile)
  cap = np.zeros_like(log_r)
  for c in np.unique(classes):
    mine = classes == c
    cap[mine] = np.percentile(log_r[mine], percentile)
  return uniforms < np.exp(np.minimum(log_r - cap, 0.0))


def heldout_accuracy(log_r_real: np.ndarray, log_r_fake: np.ndarray) -> float:
  """Balanced accuracy of the ratio's sign at telling held-out real (r > 1) from generated
  digits: 0.5 when the generator's digits cannot be told apart; near 1 the ratio is so sharp
  that resampling keeps few candidates."""
  return float((np.mean(log_r_real > 0) + np.mean(log_r_fake <= 0)) / 2)


@dataclasses.dataclass
class RunRatioModel:
  """A run's trained ratio model and the record kept beside it."""
  params: dict
  num_classes: int
  settings: RatioSettings
  record: dict

  def log_ratios(self, images: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    return log_ratios(self.params, images, labels, self.num_classes, self.settings)


def model_path(workdir: str, key: dict) -> str:
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  return os.path.join(workdir, FOLDER, f'ratio_{digest}.msgpack')


def ratio_model_for_run(workdir: str, config: ml_collections.ConfigDict, gan: GAN,
                        g_variables: dict, step: int, *, latent_scale: float = 1.0,
                        truncation: float = 0.0, settings: RatioSettings = RatioSettings(),
                        manual_dir: str = '', data_dir: str = '') -> RunRatioModel:
  """The run's ratio model for its generator at `step` drawing latents at `latent_scale` and
  `truncation`: read from RUN/resampling/ when trained before with the same settings, else
  trained on the real digits the run trained on and as many generated ones (same class
  counts), scored on the test split and as many fresh generated digits, and written there."""
  key = dict(dataset=config.data.name, split=config.data.split,
             num_train_examples=config.data.num_train_examples, step=int(step),
             latent_scale=float(latent_scale), truncation=float(truncation),
             settings=dataclasses.asdict(settings))
  path = model_path(workdir, key)
  net = network(gan.num_classes, settings)
  if os.path.isfile(path) and weights.manifest_path(path).is_file():
    try:
      params, record = weights.load(path, model=net)
    except ValueError as error:  # a damaged copy of what this function makes: make it again
      logging.warning('%s; training the ratio model again', error)
    else:
      logging.info('ratio model read from %s (held-out accuracy %.3f)', path,
                   record['heldout_accuracy'])
      return RunRatioModel(params, gan.num_classes, settings, record)

  start = time.perf_counter()
  manual_dir, data_dir = manual_dir or config.data.manual_dir, data_dir or config.data.data_dir
  real_images, real_labels = data.load_split(
      config.data.name, config.data.split, data_dir=data_dir or None,
      manual_dir=manual_dir or None, num_examples=config.data.num_train_examples or None)
  test_images, test_labels = data.load_split(config.data.name, 'test', data_dir=data_dir or None,
                                             manual_dir=manual_dir or None)
  if not gan.num_classes:
    real_labels = test_labels = None
  train_key, heldout_key = jax.random.split(jax.random.key(settings.seed))

  def draw(key, labels, num):
    z = generate.latents(key, num, gan.latent_dim, truncation, latent_scale)
    return generate.generate(gan, g_variables, z, labels, step=step)

  logging.info('training the ratio model on %d real and %d generated digits (%d epochs)',
               len(real_images), len(real_images), settings.epochs)
  fake_images = draw(train_key, real_labels, len(real_images))
  params = fit(real_images, real_labels, fake_images, real_labels, gan.num_classes, settings,
               log_every=max(1, 2 * len(real_images) // settings.batch_size))
  heldout_fake = draw(heldout_key, test_labels, len(test_images))
  accuracy = heldout_accuracy(
      log_ratios(params, test_images, test_labels, gan.num_classes, settings),
      log_ratios(params, heldout_fake, test_labels, gan.num_classes, settings))
  seconds = round(time.perf_counter() - start, 1)
  logging.info('ratio model trained in %.0f s: it tells held-out real from generated digits '
               'apart %.1f%% of the time', seconds, 100 * accuracy)
  if accuracy > 0.95:
    logging.warning('the ratio model separates real from generated digits %.1f%% of the time: '
                    'so sharp a ratio keeps few candidates and tends to hurt fcd; blunter: '
                    '--resample_ratio_shift=2 or fewer --resample_ratio_epochs (README, '
                    'Density-ratio resampling)', 100 * accuracy)
  try:
    record = weights.save(params, path, **key, heldout_accuracy=accuracy, seconds=seconds)
  except OSError as error:  # a run folder this process may not write (a shared, read-only one)
    logging.warning('the ratio model is used but not kept (%s): a later run trains it again',
                    error)
    record = weights.manifest(params, path, **key, heldout_accuracy=accuracy, seconds=seconds)
  else:
    logging.info('wrote %s', path)
  return RunRatioModel(params, gan.num_classes, settings, record)


def resample(gan: GAN, g_variables: dict, ratio: RunRatioModel, labels: np.ndarray | None,
             num: int, *, key: jax.Array, candidates_per_class: int, percentile: float,
             latent_scale: float = 1.0, truncation: float = 0.0, step=None,
             batch_size: int = generate.DEFAULT_BATCH) -> tuple[np.ndarray, dict]:
  """(uint8 digits (num, H, W), statistics): digit i of class `labels[i]` (unconditional:
  labels None) is the next candidate of that class kept by `keep_mask`.

  `candidates_per_class` candidates are drawn for each class (in all, for an unconditional
  model): with `latent_key, accept_key = jax.random.split(key)`, candidate j has class j mod C
  and the latent of index j mod CHUNK of the key `fold_in(latent_key, j // CHUNK)`, and is kept
  by its uniform draw from `accept_key`; so the digits depend on (key, candidates, percentile)
  only.
  """
  Resampling(percentile, candidates_per_class)  # checks both
  width = max(gan.num_classes, 1)
  wanted = _classes(labels, num)
  total = candidates_per_class * width
  latent_key, accept_key = jax.random.split(key)

  def chunk_latents(index):
    size = min(CHUNK, total - index * CHUNK)
    return generate.latents(jax.random.fold_in(latent_key, index), size, gan.latent_dim,
                            truncation, latent_scale)

  start = time.perf_counter()
  candidate_classes = (np.arange(total) % width).astype(np.int32)
  log_r = np.empty(total, np.float32)
  for index in range(math.ceil(total / CHUNK)):
    rows = slice(index * CHUNK, (index + 1) * CHUNK)
    chunk_labels = candidate_classes[rows] if gan.num_classes else None
    digits = generate.generate(gan, g_variables, chunk_latents(index), chunk_labels, step=step,
                               batch_size=batch_size)
    log_r[rows] = ratio.log_ratios(digits, chunk_labels)
  uniforms = np.asarray(jax.random.uniform(accept_key, (total,)))
  kept = keep_mask(log_r, candidate_classes, percentile, uniforms)

  chosen = np.empty(num, np.int64)
  kept_share = {}
  for c in np.unique(wanted):
    slots = np.flatnonzero(wanted == c)
    pool = np.flatnonzero(kept & (candidate_classes == c))
    kept_share[int(c)] = len(pool) / candidates_per_class
    if len(pool) < len(slots):
      what = 'candidates' if not gan.num_classes else f'class-{c} candidates'
      raise ValueError(
          f'resampling kept {len(pool)} of {candidates_per_class} {what} but {len(slots)} '
          f'are wanted: raise --resample_candidates to at least '
          f'{math.ceil(1.2 * len(slots) / max(kept_share[int(c)], 1 / candidates_per_class))}'
          ' or lower --resample_percentile')
    chosen[slots] = pool[:len(slots)]

  # Generate the chosen candidates again from their latents rather than keeping every
  # candidate's pixels (hundreds of MB at the default count).
  z = np.empty((num, gan.latent_dim), np.float32)
  for index in np.unique(chosen // CHUNK):
    mine = chosen // CHUNK == index
    z[mine] = np.asarray(chunk_latents(int(index)))[chosen[mine] % CHUNK]
  digits = generate.generate(gan, g_variables, z, None if labels is None else wanted, step=step,
                             batch_size=batch_size)
  stats = dict(percentile=float(percentile), candidates_per_class=candidates_per_class,
               settings=dataclasses.asdict(ratio.settings),
               kept_share_min=min(kept_share.values()), kept_share_max=max(kept_share.values()),
               heldout_accuracy=ratio.record['heldout_accuracy'],
               ratio_model=ratio.record['file'], seconds=round(time.perf_counter() - start, 1))
  logging.info('resampled %d digits from %d candidates in %.0f s: kept %.1f-%.1f%% per class',
               num, total, stats['seconds'], 100 * stats['kept_share_min'],
               100 * stats['kept_share_max'])
  return digits, stats


def resample_run(workdir: str, config: ml_collections.ConfigDict, gan: GAN, g_variables: dict,
                 step: int, labels: np.ndarray | None, num: int, options: Resampling, *,
                 seed: int, latent_scale: float = 1.0, truncation: float = 0.0,
                 manual_dir: str = '', data_dir: str = '',
                 batch_size: int = generate.DEFAULT_BATCH) -> tuple[np.ndarray, dict]:
  """`resample` with the run's ratio model (`ratio_model_for_run`), candidates' latents drawn
  from `seed`."""
  ratio = ratio_model_for_run(workdir, config, gan, g_variables, step, latent_scale=latent_scale,
                              truncation=truncation, settings=options.settings,
                              manual_dir=manual_dir, data_dir=data_dir)
  return resample(gan, g_variables, ratio, labels, num, key=jax.random.key(seed),
                  candidates_per_class=options.candidates_per_class,
                  percentile=options.percentile, latent_scale=latent_scale,
                  truncation=truncation, step=step, batch_size=batch_size)


class Flags(NamedTuple):
  """The sampling and scoring scripts' resampling flags (`define_flags`)."""
  percentile: flags.FlagHolder
  candidates: flags.FlagHolder
  ratio_epochs: flags.FlagHolder
  ratio_shift: flags.FlagHolder

  def resampling(self) -> Resampling | None:
    """What the flags ask for; None: no resampling (--resample_percentile=0)."""
    if not self.percentile.value:
      given = [f'--{holder.name}' for holder in self[1:] if holder.present]
      if given:
        raise ValueError('without --resample_percentile=P nothing is resampled: add it (e.g. '
                         f'99) or drop {", ".join(given)}')
      return None
    settings = RatioSettings(epochs=self.ratio_epochs.value, max_shift=self.ratio_shift.value)
    return Resampling(self.percentile.value, self.candidates.value, settings)


def define_flags(where: str = '') -> Flags:
  """--resample_percentile, --resample_candidates and the ratio model's --resample_ratio_epochs
  and --resample_ratio_shift; `where` qualifies the help, e.g. ' (--workdir only)'."""
  percentile = flags.DEFINE_float(
      'resample_percentile', 0.0, f'Density-ratio resampling{where}: keep each candidate with '
      'probability min(1, r / r_P), r the ratio model\'s p_data / p_g, r_P its P-th '
      'percentile in the candidate\'s class; e.g. 99 (README, Density-ratio resampling). The '
      'ratio model is trained the first time (minutes) and kept in RUN/resampling/. 0: none.',
      lower_bound=0.0, upper_bound=100.0)
  candidates = flags.DEFINE_integer(
      'resample_candidates', Resampling.candidates_per_class, 'With --resample_percentile: '
      'candidates drawn per class (in all, for an unconditional model).', lower_bound=1)
  ratio_epochs = flags.DEFINE_integer(
      'resample_ratio_epochs', RatioSettings.epochs, 'With --resample_percentile: epochs the '
      'ratio model trains; fewer give a blunter ratio.', lower_bound=1)
  ratio_shift = flags.DEFINE_integer(
      'resample_ratio_shift', RatioSettings.max_shift, 'With --resample_percentile: random '
      'shifts of up to this many pixels while the ratio model trains; 2 gives a blunter ratio '
      '(README, Density-ratio resampling).', lower_bound=0)
  return Flags(percentile, candidates, ratio_epochs, ratio_shift)
