"""Per-example random draws that do not depend on how a batch is split over devices.

Each example's noise comes from `fold_in(key, global_example_index)`, so a global batch of 64
split over 1 or 8 devices draws exactly the same latents, dropout masks and interpolation
coefficients. This is what lets the multi-device step reproduce the single-device one.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp


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


def uniform(key: jax.Array, local_batch: int, shape: Sequence[int],
            axis_name: str | None = None) -> jax.Array:
  """Uniform [0, 1) draws of `shape` for each of this device's examples."""
  return _per_example(lambda k: jax.random.uniform(k, tuple(shape)), key, local_batch, axis_name)


def bernoulli(key: jax.Array, local_batch: int, shape: Sequence[int], p: float,
              axis_name: str | None = None) -> jax.Array:
  """Bernoulli(p) masks of `shape` for each of this device's examples."""
  return _per_example(lambda k: jax.random.bernoulli(k, p, tuple(shape)), key, local_batch,
                      axis_name)
