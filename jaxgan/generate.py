"""Batched, jitted sampling from a trained generator."""
from __future__ import annotations

import functools

import jax
import numpy as np

from jaxgan import images, rng
from jaxgan.models import GAN


def latents(key: jax.Array, num: int, latent_dim: int) -> jax.Array:
  """`num` latent vectors; vector i depends only on (key, i), so any prefix is stable."""
  return rng.normal(key, num, (latent_dim,))


@functools.partial(jax.jit, static_argnums=0)
def _generate(gan: GAN, g_variables: dict, z: jax.Array) -> jax.Array:
  fake = gan.generator.apply(g_variables, z, train=False)
  return jax.numpy.clip(jax.numpy.rint((fake[..., 0] + 1.0) * 127.5), 0, 255).astype(np.uint8)


def generate(gan: GAN, g_variables: dict, z: jax.Array, *, batch_size: int = 2000) -> np.ndarray:
  """uint8 images (N, H, W) for latents `z`, in batches of `batch_size` (one compile: the last
  partial batch is padded)."""
  num = z.shape[0]
  batch_size = min(batch_size, num)
  pad = -num % batch_size
  z = jax.numpy.concatenate([z, jax.numpy.zeros((pad, z.shape[1]), z.dtype)])
  out = [np.asarray(_generate(gan, g_variables, z[i:i + batch_size]))
         for i in range(0, num + pad, batch_size)]
  return np.concatenate(out)[:num]


def sample_grid(gan: GAN, g_variables: dict, z: jax.Array, rows: int, *, scale: int = 1):
  """A rows x rows picture of the digits generated from the first rows**2 latents."""
  return images.grid(generate(gan, g_variables, z[: rows * rows]), rows, scale=scale)
