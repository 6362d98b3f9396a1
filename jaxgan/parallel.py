"""Data-parallel execution of one per-device step function over all devices.

The default is today's idiom: `jax.shard_map` over a 1-D device mesh inside `jax.jit`, with the
state replicated and the batch split along the mesh axis. `pmap_step` runs the very same step
function under `jax.pmap` (state with a leading device axis), for code that still expects it.
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named `DATA_AXIS` over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_divides(batch_size: int, mesh: Mesh) -> None:
  if batch_size % mesh.size:
    raise ValueError(f'batch_size={batch_size} is not divisible by the {mesh.size} devices: '
                     f'set --config.batch_size to a multiple of {mesh.size}')


def shard_step(step_fn, mesh: Mesh, *, donate: bool = True):
  """jit(shard_map(step_fn)): state and key replicated, batch split over `DATA_AXIS`.

  `step_fn` must have been built with `axis_name=DATA_AXIS`.
  """
  # check_vma=False gives pmap's semantics: with the check on, autodiff already sums the
  # gradient of replicated params over devices, and the step's own pmean would count it twice.
  sharded = jax.shard_map(step_fn, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P()),
                          out_specs=(P(), P()), check_vma=False)
  return jax.jit(sharded, donate_argnums=(0,) if donate else ())


def pmap_step(step_fn, *, donate: bool = True):
  """pmap(step_fn) over local devices: state and batch carry a leading device axis."""
  return jax.pmap(step_fn, axis_name=DATA_AXIS, in_axes=(0, 0, None),
                  donate_argnums=(0,) if donate else ())


def pmap_replicate(tree, num_devices: int | None = None):
  """Stack `num_devices` copies of every leaf on a new leading axis, the layout pmap expects."""
  num_devices = jax.local_device_count() if num_devices is None else num_devices
  return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (num_devices,) + np.shape(x)),
                      tree)


def pmap_unreplicate(tree):
  """The first device's copy of a pmap-replicated pytree."""
  return jax.tree.map(lambda x: x[0], tree)
