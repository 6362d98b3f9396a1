"""Batched, jitted sampling from a trained generator."""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import numpy as np

from jaxgan import images, parallel, rng
from jaxgan.models import GAN


def latents(key: jax.Array, num: int, latent_dim: int) -> jax.Array:
  """`num` latent vectors; vector i depends only on (key, i), so any prefix is stable."""
  return rng.normal(key, num, (latent_dim,))


@functools.partial(jax.jit, static_argnums=0)
def _generate(gan: GAN, g_variables: dict, z: jax.Array, net: dict) -> jax.Array:
  fake = gan.generator.apply(g_variables, z, train=False, **net)
  return jax.numpy.clip(jax.numpy.rint((fake[..., 0] + 1.0) * 127.5), 0, 255).astype(np.uint8)


def generate(gan: GAN, g_variables: dict, z: jax.Array, *, batch_size: int = 2000,
             devices: Sequence[jax.Device] | None = None, step=None) -> np.ndarray:
  """uint8 images (N, H, W) for latents `z`, in batches of `batch_size` (one compile: the last
  partial batch is padded), each batch split over `devices` (default: this process's devices;
  several CPU devices run it data-parallel, see `parallel.configure_cpu_devices`). `step`, the
  state's generator step, sets a progressive generator's growth (None: fully grown)."""
  net = {} if step is None else gan.network_kwargs(step)
  devices = jax.local_devices() if devices is None else list(devices)
  num = z.shape[0]
  batch_size = min(batch_size, num)
  batch_size += -batch_size % len(devices)  # a multiple of the device count
  pad = -num % batch_size
  z = np.concatenate([np.asarray(z), np.zeros((pad, z.shape[1]), z.dtype)])
  mesh = parallel.make_mesh(devices)
  g_variables = jax.device_put(g_variables, parallel.replicated(mesh))
  sharding = parallel.batch_sharded(mesh)
  out = []
  for start in range(0, num + pad, batch_size):
    out.append(_generate(gan, g_variables, jax.device_put(z[start:start + batch_size], sharding),
                         net))
    if len(out) > 1:  # copy the previous batch out while this one computes
      out[-2] = np.asarray(out[-2])
  out[-1] = np.asarray(out[-1])
  return np.concatenate(out)[:num]


def sample_grid(gan: GAN, g_variables: dict, z: jax.Array, rows: int, *, scale: int = 1,
                step=None):
  """A rows x rows picture of the digits generated from the first rows**2 latents."""
  return images.grid(generate(gan, g_variables, z[: rows * rows], step=step), rows, scale=scale)
