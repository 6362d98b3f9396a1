"""The evaluation classifier and the small classifiers that metrics train from scratch.

`Classifier()` is the compact CNN whose 128-d embedding and class probabilities the metrics read
(the role Inception-v3 plays for FID); one set of its weights ships per dataset. `SmallClassifier`
is what `cas` and `augmentation_gain` train from scratch in a few hundred steps. Training is
seeded: the same call gives the same bytes again on the same machine and software.
"""
from __future__ import annotations

import functools
import math
import time
from typing import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxgan import data, rng

IMAGE_SIDE = 28
NUM_CLASSES = 10


class Conv3x3(nn.Module):
  """A 3x3 'VALID' convolution written as patches times a matrix: XLA's CPU convolution
  gradients are several times slower than the matmuls this turns them into."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (3, 3, in_features, self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    height, width = x.shape[1] - 2, x.shape[2] - 2
    patches = jnp.stack([x[:, i:i + height, j:j + width] for i in range(3) for j in range(3)],
                        axis=3)  # (N, H', W', 9, C), in the kernel's (row, column) order
    return jnp.einsum('nhwkc,kcf->nhwf', patches,
                      kernel.reshape(9, in_features, self.features)) + bias


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, odd last row/column dropped; a reshape and a max, whose
  gradient is cheaper on CPU than that of nn.max_pool."""
  n, height, width, channels = x.shape
  height, width = height // 2, width // 2
  x = x[:, :2 * height, :2 * width]
  return x.reshape(n, height, 2, width, 2, channels).max(axis=(2, 4))


class Classifier(nn.Module):
  """Conv-ReLU stages, each of the first two followed by 2x2 max pooling (28 -> 26 -> 13 ->
  11 -> 5 -> 3 pixels for three stages), then a ReLU embedding layer and the logits."""
  features: tuple[int, ...] = (32, 64, 128)
  embedding_dim: int = 128
  num_classes: int = NUM_CLASSES
  dropout_rate: float = 0.0  # on the embedding, in training only; no parameters of its own

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """float images (N, 28, 28, 1) in [0, 1] -> (embeddings (N, D), logits (N, C))."""
    x = images
    for stage, width in enumerate(self.features):
      x = nn.relu(Conv3x3(width)(x))
      if stage < 2:
        x = max_pool_2x2(x)
    x = x.reshape((x.shape[0], -1))
    embeddings = nn.relu(nn.Dense(self.embedding_dim)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(embeddings)
    return embeddings, nn.Dense(self.num_classes)(x)


class SmallClassifier(nn.Module):
  """What `cas` and `augmentation_gain` train from scratch: one hidden ReLU layer, about a
  hundredth of a training step of `Classifier` on CPU, so a few hundred steps take seconds."""
  hidden_dim: int = 256
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """float images (N, 28, 28, 1) in [0, 1] -> (hidden features (N, H), logits (N, C))."""
    hidden = nn.relu(nn.Dense(self.hidden_dim)(images.reshape((images.shape[0], -1))))
    return hidden, nn.Dense(self.num_classes)(hidden)


def as_batch(images: np.ndarray) -> np.ndarray:
  """uint8 (N, 28, 28) or (N, 28, 28, 1) -> uint8 (N, 28, 28, 1); refuses anything else."""
  given = np.asarray(images)
  images = given[..., np.newaxis] if given.ndim == 3 else given
  if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE, 1):
    raise ValueError(f'images must be uint8 (N, {IMAGE_SIDE}, {IMAGE_SIDE}[, 1]) with 0 = '
                     f'background, got {given.dtype} {given.shape}: convert them first')
  return images


def _to_float(images: jax.Array) -> jax.Array:
  return images.astype(jnp.float32) / 255.0


@functools.partial(jax.jit, static_argnums=0)
def _embed_and_predict_batch(model: nn.Module, params, images: jax.Array):
  embeddings, logits = model.apply({'params': params}, _to_float(images))
  return embeddings, jax.nn.softmax(logits)


@functools.partial(jax.jit, static_argnums=0)
def _logits_batch(model: nn.Module, params, images: jax.Array):
  return model.apply({'params': params}, _to_float(images))[1]


def _apply_in_batches(batch_fn, images: np.ndarray, batch_size: int) -> list[np.ndarray]:
  """`batch_fn` over `images` in batches each padded to `batch_size`, so a model compiles once
  whatever N; the outputs (each array, or tuple of arrays) are numpy and concatenated, so
  device memory holds one batch at a time."""
  images = as_batch(images)
  outputs = []
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    num = len(batch)
    batch = np.concatenate([batch, np.zeros((batch_size - num,) + batch.shape[1:], batch.dtype)])
    outputs.append([np.asarray(out)[:num] for out in jax.tree.leaves(batch_fn(batch))])
  return [np.concatenate(column) for column in zip(*outputs)]


def embed_and_predict(params, images: np.ndarray, *, model: nn.Module = Classifier(),
                      batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
  """(embeddings float32 (N, D), class probabilities float32 (N, C)) of uint8 images."""
  embeddings, probs = _apply_in_batches(
      functools.partial(_embed_and_predict_batch, model, params), images, batch_size)
  return embeddings, probs


def logits(params, images: np.ndarray, *, model: nn.Module = Classifier(),
           batch_size: int = 500) -> np.ndarray:
  """Class logits float32 (N, C) of uint8 images: unlike probabilities, they keep log-odds
  that a softmax would round to 0 or 1 in float32."""
  (out,) = _apply_in_batches(functools.partial(_logits_batch, model, params), images,
                             batch_size)
  return out


def accuracy(params, images: np.ndarray, labels: np.ndarray, *,
             model: nn.Module = Classifier()) -> float:
  """Share of `images` whose most probable class is their label."""
  labels = np.asarray(labels)
  if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
    # (N, 1) or a single label would broadcast against the N predictions into a wrong share.
    raise ValueError(f'labels must be {len(images)} integers, one per image, got '
                     f'{labels.dtype} {labels.shape}: pass class ids of shape ({len(images)},)')
  _, probs = embed_and_predict(params, images, model=model)
  return float(np.mean(probs.argmax(axis=1) == labels))


@functools.partial(jax.jit, static_argnums=0)
def init_params(model: nn.Module, key: jax.Array):
  return model.init(key, jnp.zeros((1, IMAGE_SIDE, IMAGE_SIDE, 1), jnp.float32))['params']


def random_shift(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
  """Each image moved by its own random whole-pixel offset in [-max_shift, max_shift]^2, the
  uncovered border filled with background (0)."""
  if max_shift == 0:
    return images
  padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  offsets = jax.random.randint(key, (len(images), 2), 0, 2 * max_shift + 1)
  crop = lambda image, offset: jax.lax.dynamic_slice(
      image, (offset[0], offset[1], 0), images.shape[1:])
  return jax.vmap(crop)(padded, offsets)


@functools.lru_cache(maxsize=None)
def _train_step(model: nn.Module, learning_rate: float, num_steps: int, max_shift: int):
  """(jitted step, optimizer), cached so that repeated fits with one setting compile once."""
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps))

  @jax.jit
  def step(params, opt_state, images, labels, key):
    shift_key, dropout_key = jax.random.split(key)
    inputs = _to_float(random_shift(shift_key, images, max_shift))

    def loss_fn(params):
      _, logits = model.apply({'params': params}, inputs, train=True,
                              rngs={'dropout': dropout_key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step, tx


def index_batches(num: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
  """Endless `batch_size` slices of the concatenated orders `default_rng([seed, e])
  .permutation(num)`, e = 0, 1, ...: every batch has the same shape (one compilation), even
  when num < batch_size, and every example is visited once per epoch."""
  order, epoch = np.empty(0, np.int64), 0
  while True:
    while len(order) < batch_size:
      order = np.concatenate([order, np.random.default_rng([seed, epoch]).permutation(num)])
      epoch += 1
    yield order[:batch_size]
    order = order[batch_size:]


def fit(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, seed: int, num_steps: int,
        batch_size: int, learning_rate: float, max_shift: int, log_every: int = 0):
  """Parameters of `model` trained with Adam (cosine-decayed learning rate) on uint8 images,
  in the batches of `index_batches`; `seed` also draws the initialisation, shifts and dropout.
  With `log_every`, the mean loss is logged every that many steps."""
  images, labels = as_batch(images), np.asarray(labels, np.int32)
  if len(images) != len(labels) or not len(images):
    raise ValueError(f'{len(images)} images and {len(labels)} labels: pass one label per image')
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}')
  step_fn, tx = _train_step(model, learning_rate, num_steps, max_shift)
  init_key, step_key = jax.random.split(jax.random.key(seed))
  params = init_params(model, init_key)
  opt_state = tx.init(params)
  batches = index_batches(len(images), batch_size, seed)
  losses, start = [], time.perf_counter()
  for step in range(num_steps):
    rows = next(batches)
    params, opt_state, loss = step_fn(params, opt_state, images[rows], labels[rows],
                                      jax.random.fold_in(step_key, step))
    if log_every:
      losses.append(loss)
      if (step + 1) % log_every == 0 or step + 1 == num_steps:
        logging.info('step %d/%d (epoch %.2f)  loss %.4f  %.0f s', step + 1, num_steps,
                     (step + 1) * batch_size / len(images), float(jnp.mean(jnp.stack(losses))),
                     time.perf_counter() - start)
        losses = []
  return jax.device_get(params)


# The fields of a classifier config (experiments/configs/classifier_mnist.py).
CONFIG_FIELDS = ('dataset', 'seed', 'batch_size', 'num_epochs', 'learning_rate', 'max_shift',
                 'dropout_rate', 'manual_dir', 'data_dir')


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Fail before the data is read, naming each field to fix: a NaN, zero or negative learning
  rate or a dropout rate of 1 would train a useless classifier without an error; a negative
  seed or max_shift would fail only after the data was read, naming no field."""
  missing = [field for field in CONFIG_FIELDS if field not in config]
  if missing:  # a hand-written config: one line, not an AttributeError at the first one
    raise ValueError(f'bad config: it has no {", ".join(missing)}: start from '
                     'experiments/configs/classifier_mnist.py')
  problems = [f'{field} must be >= 1, got {config[field]}'
              for field in ('num_epochs', 'batch_size') if config[field] < 1]
  if config.dataset not in data.DATASETS:
    problems.append(f'dataset must be one of {", ".join(data.DATASETS)}, got '
                    f'{config.dataset!r}')
  if not 0 <= config.seed <= rng.MAX_SEED:
    problems.append(f'seed must be in 0..{rng.MAX_SEED}, got {config.seed}')
  if not 0.0 < config.learning_rate < math.inf:
    problems.append(f'learning_rate must be finite and > 0, got {config.learning_rate}')
  if not 0 <= config.max_shift < IMAGE_SIDE:  # a shift of IMAGE_SIDE moves a digit off the image
    problems.append(f'max_shift must be in 0..{IMAGE_SIDE - 1} pixels (0: no shifts), got '
                    f'{config.max_shift}')
  if not 0.0 <= config.dropout_rate < 1.0:  # 1 would zero every embedding in training
    problems.append(f'dropout_rate must be in [0, 1) (0: no dropout), got {config.dropout_rate}')
  if problems:
    raise ValueError('bad config: ' + '; '.join(problems))


def train_classifier(config: ml_collections.ConfigDict):
  """The evaluation classifier's parameters, trained on `config.dataset`'s train split."""
  validate_config(config)  # before the data is read
  images, labels = data.load_split(config.dataset, 'train', data_dir=config.data_dir or None,
                                   manual_dir=config.manual_dir or None)
  if config.batch_size > len(images):  # no whole batch, so no training step
    raise ValueError(f'bad config: batch_size must be <= {len(images)}, the size of the '
                     f'{config.dataset} train split, got {config.batch_size}')
  steps_per_epoch = len(images) // config.batch_size
  logging.info('training the %s evaluation classifier: %d examples, %d epochs of %d steps',
               config.dataset, len(images), config.num_epochs, steps_per_epoch)
  return fit(Classifier(dropout_rate=config.dropout_rate), images, labels, seed=config.seed,
             num_steps=config.num_epochs * steps_per_epoch, batch_size=config.batch_size,
             learning_rate=config.learning_rate, max_shift=config.max_shift,
             log_every=steps_per_epoch)
