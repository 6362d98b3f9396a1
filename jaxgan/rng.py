"""Per-example random draws that do not depend on how a batch is split over devices.

Each example's noise comes from `fold_in(key, global_example_index)`, so a global batch of 64
split over 1 or 8 devices draws exactly the same latents, dropout masks and interpolation
coefficients. This is what lets the multi-device step reproduce the single-device one.

That holds for threefry keys, jax's default. jax promises nothing of the kind for its `rbg` and
`unsafe_rbg` keys (`JAX_DEFAULT_PRNG_IMPL`), whose bits come from XLA's RngBitGenerator: their
per-example draws change with the split (a (16, 7, 7, 32) dropout mask drawn on 1 device and
on 8: 9,211 entries differ), so runs over other device counts differ too.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# The largest seed jax.random.key takes (an int64); seed flags and config.seed are bounded by it.
MAX_SEED = 2**63 - 1


def check_key(key) -> None:
  """Refuse what is not a PRNG key where one goes: jax's own error for a seed passed as the key
  ('invalid PRNG key data: expected key_data.ndim >= 1') names no fix."""
  dtype, shape = getattr(key, 'dtype', None), np.shape(key)
  if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and shape == ():
    return
  if dtype == jnp.uint32 and len(shape) == 1:  # a raw key, jax.random.PRNGKey's
    return
  described = type(key).__name__ if dtype is None else f'{dtype} {shape}'
  raise ValueError(f'key must be one jax PRNG key, got {described}: make it with '
                   'jax.random.key(seed)')


def global_example_indices(local_batch: int, axis_name: str | None) -> jax.Array:
  """Indices of this device's examples within the global batch (devices hold contiguous rows)."""
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * local_batch
  return offset + jnp.arange(local_batch)


def _per_example(draw: Callable[[jax.Array], jax.Array], key: jax.Array, local_batch: int,
                 axis_name: str | None) -> jax.Array:
  indices = global_example_indices(local_batch, axis_name)
  return jax.vmap(lambda i: draw(jax.random.fold_in(key, i)))(indices)


def normal(key: jax.Array, local_batch: int, shape: Sequence[int],
           axis_name: str | None = None) -> jax.Array:
  """Standard normal draws of `shape` for each of this device's examples."""
  return _per_example(lambda k: jax.random.normal(k, tuple(shape)), key, local_batch, axis_name)


def truncated_normal(key: jax.Array, local_batch: int, shape: Sequence[int], bound: float,
                     axis_name: str | None = None) -> jax.Array:
  """Standard normal draws conditioned on |x| <= bound, of `shape` for each example."""
  return _per_example(lambda k: jax.random.truncated_normal(k, -bound, bound, tuple(shape)),
                      key, local_batch, axis_name)


def uniform(key: jax.Array, local_batch: int, shape: Sequence[int],
            axis_name: str | None = None) -> jax.Array:
  """Uniform [0, 1) draws of `shape` for each of this device's examples."""
  return _per_example(lambda k: jax.random.uniform(k, tuple(shape)), key, local_batch, axis_name)


def bernoulli(key: jax.Array, local_batch: int, shape: Sequence[int], p: float,
              axis_name: str | None = None) -> jax.Array:
  """Bernoulli(p) masks of `shape` for each of this device's examples.

  Equal to `jax.random.bernoulli(fold_in(key, i), p, shape)` for example i; for threefry keys
  (jax's default) the bits come from the unrolled `threefry2x32` below, which XLA:CPU fuses into
  the consumer instead of running jax's rolled hash loop over the whole mask.
  """
  shape = tuple(shape)
  if not _unrolled_threefry_applies(key, shape):
    return _per_example(lambda k: jax.random.bernoulli(k, p, shape), key, local_batch,
                        axis_name)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(
      global_example_indices(local_batch, axis_name))
  data = jax.random.key_data(keys) if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) else keys
  expand = (local_batch,) + (1,) * len(shape)
  counts = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape((1,) + shape)
  bits1, bits2 = threefry2x32(data[:, 0].reshape(expand), data[:, 1].reshape(expand),
                              jnp.zeros((), jnp.uint32), counts)
  # jax.random.uniform's float32 construction: 23 random mantissa bits, exponent of 1.0.
  floats = jax.lax.bitcast_convert_type(((bits1 ^ bits2) >> jnp.uint32(9))
                                        | jnp.uint32(0x3F800000), jnp.float32) - 1.0
  return floats < jnp.float32(p)


def _unrolled_threefry_applies(key: jax.Array, shape: tuple[int, ...]) -> bool:
  return (str(jax.random.key_impl(key)) == 'threefry2x32'
          and jax.config.jax_threefry_partitionable and 0 < math.prod(shape) < 2 ** 32)


# --- Unrolled threefry for large per-example draws -------------------------------------------
# jax lowers its threefry2x32 hash on CPU as a rolled 5-iteration while loop (to keep compile
# times down), which XLA:CPU runs as a loop over whole arrays and cannot fuse with the op that
# consumes the bits. The same hash written out in jnp ops below is bit-for-bit jax's (partitionable
# threefry, the default), and XLA fuses it into the dropout's select.

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotate_left(x, d):
  return (x << jnp.uint32(d)) | (x >> jnp.uint32(32 - d))


def threefry2x32(k1, k2, x1, x2):
  """The Threefry-2x32 hash (20 rounds) of counters (x1, x2) under key (k1, k2), unrolled."""
  ks = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x1 = x1 + x2
      x2 = _rotate_left(x2, r) ^ x1
    x1 = x1 + ks[(i + 1) % 3]
    x2 = x2 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
  return x1, x2
