"""Batched, jitted sampling from a trained generator, and the atomic .npz export of samples."""
from __future__ import annotations

import contextlib
import fractions
import functools
import math
import os
from typing import Iterator, Sequence

import flax
import jax
import numpy as np

from jaxgan import atomic, images, parallel, rng
from jaxgan.models import GAN
from jaxgan.state import GANState

# Digits per generator call. XLA:CPU's convolutions get slower per image as the batch grows:
# 60,000 dcgan digits on the quiet 2-core CPU (one device) took 11.2 s at 250 per call, 9.7 s
# at 500 and 13.0 s at 1,000 (benchmarks/generation_throughput.py).
DEFAULT_BATCH = 500


def latents(key: jax.Array, num: int, latent_dim: int, truncation: float = 0.0,
            scale: float = 1.0) -> jax.Array:
  """`num` latent vectors; vector i depends only on (key, i), so any prefix is stable.

  `truncation` > 0 is the truncation trick (Brock et al. 2019): each coordinate is drawn from
  the standard normal truncated to [-truncation, truncation], trading variety for digits
  nearer the centre of what the generator learned; 0 draws the training distribution.
  `scale` multiplies the draws: above 1 it widens them beyond the training distribution, the
  opposite of truncation, for variety (more of the real digits' styles) at some cost in
  fidelity; see the README's "Wider latents".
  """
  # Written so that NaN (which fails every comparison) is refused too; an infinite scale would
  # make every digit NaN.
  if not 0 <= truncation < math.inf:
    raise ValueError(f'truncation must be finite and > 0, or 0 for none, got {truncation}')
  if not 0 < scale < math.inf:
    raise ValueError('latent scale must be finite and > 0 (1: the training distribution), '
                     f'got {scale}')
  rng.check_key(key)
  if truncation:
    z = rng.truncated_normal(key, num, (latent_dim,), truncation)
  else:
    z = rng.normal(key, num, (latent_dim,))
  return z if scale == 1.0 else z * scale


def class_counts(num: int, weights) -> np.ndarray:
  """Digits of each class among `num`, in proportion to `weights` (finite, >= 0, not all 0):
  the largest-remainder apportionment, ties going to the lower class id. In exact rational
  arithmetic: in floats, equal remainders differed in their last bits (weights 1,2,2,0,4,...
  gave class 4's extra digit to class 9) and weights near the float maximum overflowed."""
  weights = np.asarray(weights, np.float64)
  if weights.ndim != 1 or not np.isfinite(weights).all() or (weights < 0).any() or not (
      weights.any()):
    raise ValueError(f'class weights must be finite and >= 0, and not all 0, got {weights}')
  shares = [fractions.Fraction(w) for w in weights.tolist()]
  total = sum(shares)
  exact = [num * share / total for share in shares]
  counts = np.array([math.floor(value) for value in exact], np.int64)
  by_remainder = sorted(range(len(exact)), key=lambda c: (counts[c] - exact[c], c))
  counts[by_remainder[:num - counts.sum()]] += 1
  return counts


def class_labels(num: int, weights) -> np.ndarray:
  """Class ids for `num` digits, `class_counts(num, weights)` of each class, interleaved so
  that every prefix keeps the proportions to about one digit per class: each digit goes to the
  class furthest below its share of the prefix, ties to the lower class id. Equal weights give
  0, 1, ..., C - 1, 0, 1, ... (`balanced_labels`)."""
  counts = class_counts(num, weights)
  drawn = np.zeros_like(counts)
  labels = np.empty(num, np.int32)
  for i in range(num):
    # Shortfall against the share of the first i + 1 digits, in units of 1 / num (integers:
    # exact ties). The shortfalls sum to num, and a class that has all its digits falls short
    # by <= 0, so it is never drawn again: the counts come out exact.
    shortfall = (i + 1) * counts - num * drawn
    labels[i] = np.argmax(shortfall)
    drawn[labels[i]] += 1
  return labels


def balanced_labels(num: int, num_classes: int) -> np.ndarray:
  """Class ids 0, 1, ..., num_classes - 1, 0, 1, ...: every class equally often (to within one)."""
  return class_labels(num, np.ones(num_classes))


def class_rows(z: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """(latents, labels) for a grid with one row per class, each row using the latents `z`, so a
  column shows one latent as every class."""
  z = np.asarray(z)
  return np.tile(z, (len(classes), 1)), np.repeat(np.asarray(classes, np.int32), len(z))


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """(len(t), D) points on the segment from a (t = 0) to b (t = 1)."""
  t = np.asarray(t)[:, None]
  return (1.0 - t) * a + t * b


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """(len(t), D) points of Shoemake's (1985) spherical interpolation from a to b, as White (2016)
  walks GAN latents: sin((1 - t) w) / sin(w) a + sin(t w) / sin(w) b, w the angle between them.
  On equal norms the path keeps that norm at an even angular pace (the great circle); on unequal
  ones neither its norm nor its angle moves linearly in t. lerp where a and b are (anti)parallel
  or one is zero."""
  norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
  if norm_a == 0 or norm_b == 0:  # no angle to follow
    return lerp(a, b, t)
  cos = np.clip(np.dot(a / norm_a, b / norm_b), -1.0, 1.0)
  omega = np.arccos(cos)
  if np.sin(omega) < 1e-6:
    return lerp(a, b, t)
  t = np.asarray(t)[:, None]
  return (np.sin((1.0 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


@functools.partial(jax.jit, static_argnums=0)
def _generate(gan: GAN, g_variables: dict, z: jax.Array, labels: jax.Array | None,
              net: dict) -> jax.Array:
  fake = gan.generator.apply(g_variables, *gan.generator_inputs(z, labels), train=False, **net)
  return jax.numpy.clip(jax.numpy.rint((fake[..., 0] + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _check_labels(labels, num: int, num_classes: int) -> None:
  """On the host: the generator's embedding lookup would clamp a class out of range (10 drawn
  as 9), and weights of the wrong width fail deep inside the network."""
  if labels is None:
    raise ValueError('a conditional GAN needs one label per latent: pass labels')
  labels = np.asarray(labels)
  if np.issubdtype(labels.dtype, np.integer) and labels.shape == (num,):
    if num and (labels.min() < 0 or labels.max() >= num_classes):
      raise ValueError(f'labels must be classes in 0..{num_classes - 1}, got '
                       f'{labels.min()}..{labels.max()}')
  elif not (np.issubdtype(labels.dtype, np.floating) and labels.shape == (num, num_classes)):
    raise ValueError(f'labels must be {num} integer classes ({num},) or class weights '
                     f'({num}, {num_classes}), one per latent; got {labels.dtype} {labels.shape}')


def generate(gan: GAN, g_variables: dict, z: jax.Array, labels: np.ndarray | None = None, *,
             batch_size: int = DEFAULT_BATCH, devices: Sequence[jax.Device] | None = None,
             step=None) -> np.ndarray:
  """uint8 images (N, H, W) for latents `z` (and, for a conditional GAN, `labels`: int class
  ids (N,) or float class weights (N, C)), in batches of `batch_size` (one compile: the last
  partial batch is padded), each batch split over `devices` (default: this process's devices;
  several CPU devices run it data-parallel, see `parallel.configure_cpu_devices`). `step`, the
  state's generator step, sets a progressive generator's growth (None: fully grown)."""
  if np.ndim(z) != 2 or np.shape(z)[1] != gan.latent_dim:
    raise ValueError(f'z must hold latents of shape (N, {gan.latent_dim}), got {np.shape(z)}'
                     + (': one latent is z[None]' if np.ndim(z) == 1 else ''))
  if isinstance(g_variables, GANState):
    raise ValueError('generate takes the generator\'s variables, not the whole GAN state: pass '
                     'jaxgan.state.generator_variables(state)')
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1 (latents generated at once), got {batch_size}')
  num = np.shape(z)[0]
  if gan.num_classes:
    _check_labels(labels, num, gan.num_classes)
  elif labels is not None:
    raise ValueError('labels were given for an unconditional GAN, which draws no class: drop '
                     'them')
  net = {} if step is None else gan.network_kwargs(step)
  devices = jax.local_devices() if devices is None else list(devices)
  if num == 0:
    return np.zeros((0,) + tuple(gan.image_shape[:2]), np.uint8)
  batch_size = min(batch_size, num)
  batch_size += -batch_size % len(devices)  # a multiple of the device count
  pad = -num % batch_size

  def padded(rows):
    rows = np.asarray(rows)
    return np.concatenate([rows, np.zeros((pad,) + rows.shape[1:], rows.dtype)])

  z = padded(z)
  labels = padded(labels) if gan.num_classes else None
  mesh = parallel.make_mesh(devices)
  g_variables = jax.device_put(g_variables, parallel.replicated(mesh))
  sharding = parallel.batch_sharded(mesh)
  out = []
  for start in range(0, num + pad, batch_size):
    rows = slice(start, start + batch_size)
    batch_labels = None if labels is None else jax.device_put(labels[rows], sharding)
    try:
      out.append(_generate(gan, g_variables, jax.device_put(z[rows], sharding), batch_labels,
                           net))
    except flax.errors.ScopeParamShapeError as error:
      leading = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(g_variables)}
      if len(leading) != 1 or None in leading:
        raise
      # Every leaf with one leading size is no generator's own layout: a stack of copies.
      raise ValueError(f'g_variables look pmap-replicated (every leaf has a leading axis of '
                       f'{leading.pop()}): pass jaxgan.parallel.pmap_unreplicate(variables)'
                       ) from error
    if len(out) > 1:  # copy the previous batch out while this one computes
      out[-2] = np.asarray(out[-2])
  out[-1] = np.asarray(out[-1])
  return np.concatenate(out)[:num]


def sample_grid(gan: GAN, g_variables: dict, z: jax.Array, rows: int, *, scale: int = 1,
                step=None):
  """A rows x rows picture of the digits generated from the first rows**2 latents; for a
  conditional GAN, one row per class, each of the first `rows` latents."""
  needed = rows if gan.num_classes else rows * rows
  given = np.shape(z)[0] if np.ndim(z) else 0
  if given < needed:  # the grid's last cells were left blank
    raise ValueError(f'a grid of {rows} rows needs {needed} latents, got {given}: draw '
                     f'{needed}, or make the grid smaller')
  if not gan.num_classes:
    return images.grid(generate(gan, g_variables, z[: rows * rows], step=step), rows,
                       scale=scale)
  grid_z, labels = class_rows(z[:rows], range(gan.num_classes))
  return images.grid(generate(gan, g_variables, grid_z, labels, step=step), gan.num_classes,
                     rows, scale=scale)


def save_npz_atomic(path: str, *, compress: bool = False, **arrays) -> None:
  """Write next to `path`, then rename, so an existing file is never left half-written."""
  with npz_written(path, compress=compress, **arrays):
    pass


@contextlib.contextmanager
def npz_written(path: str, *, compress: bool = False, **arrays) -> Iterator[None]:
  """Write the .npz next to `path`; renamed onto it when the block ends, or removed if the block
  fails: a command's outputs that belong together (digits and their grid) are renamed together."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic.replacing(path, '.npz') as tmp:  # np.savez adds .npz to names without it
    (np.savez_compressed if compress else np.savez)(tmp, **arrays)
    yield
