"""Data-parallel execution of one per-device step function over all devices.

The default is today's idiom: `jax.shard_map` over a 1-D device mesh inside `jax.jit`, with the
state replicated and the batch split along the mesh axis. `pmap_step` runs the very same step
function under `jax.pmap` (state with a leading device axis), for code that still expects it.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def configure_cpu_devices(count: int = 0, *, divides: int | None = None) -> int | None:
  """Present this host's CPU to jax as `count` devices; call before any jax computation.

  Several CPU devices run the step as a data-parallel program, each device on its share of the
  batch, instead of one program whose ops are split over the cores (compare with
  benchmarks/train_throughput.py --cpu-devices). Results equal the 1-device step up to float
  rounding (batch statistics and gradients are averaged over devices; dropout and latents are
  drawn per global example). Not the default: real training runs with 2 devices on a loaded
  2-core machine stopped inside XLA:CPU's all-reduce rendezvous (see config.cpu_devices).

  `count` 0: one device per core this process may use, lowered to the largest count that
  divides `divides` (the per-process batch) when given; < 0: leave jax's default. Returns the
  count set, or None when nothing was changed: XLA_FLAGS already sets
  --xla_force_host_platform_device_count (as the tests do), or jax already started its
  backends (then the current devices stay). Only the host (CPU) platform is affected; on
  GPU/TPU machines jax.devices() still lists the accelerators.
  """
  if count < 0 or 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', ''):
    return None
  if count == 0:
    count = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    while divides and count > 1 and divides % count:
      count -= 1
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:  # jax already initialised its backends
    return None
  return count


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


def scan_steps(step_fn, steps_per_call: int, *, unroll: int | bool = 1):
  """`steps_per_call` consecutive steps as one function `(state, batches, key) -> (state,
  measurements)`: `batches` is a list of `steps_per_call` batches, consumed in order by a
  `lax.scan`; every measurement gains a leading axis of length `steps_per_call` (step i's
  values at index i). Each step still folds its own `state.step` into `key`, so the result is
  the same as `steps_per_call` separate calls, up to float rounding between the programs.

  `unroll` is lax.scan's: 1 keeps one loop body (compiles once, but XLA:CPU runs a while-loop
  body slower than straight-line code), True unrolls all steps into straight-line code.
  """
  if steps_per_call < 1:
    raise ValueError(f'steps_per_call must be >= 1, got {steps_per_call}')

  def steps(state, batches, key):
    if len(batches) != steps_per_call:
      raise ValueError(f'expected {steps_per_call} batches, got {len(batches)}')
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    return jax.lax.scan(lambda carry, batch: step_fn(carry, batch, key), state, stacked,
                        unroll=unroll)

  return steps


def shard_step(step_fn, mesh: Mesh, *, donate: bool = True, steps_per_call: int = 1,
               unroll: int | bool = 1):
  """jit(shard_map(step_fn)): state and key replicated, batch split over `DATA_AXIS`.

  `step_fn` must have been built with `axis_name=DATA_AXIS`. With `donate`, the state's
  buffers are reused for the new state (the state passed in must not be used afterwards).
  With `steps_per_call` > 1 the function takes a list of that many batches and runs
  `scan_steps` (measurements stacked, step axis first).
  """
  fn = step_fn if steps_per_call == 1 else scan_steps(step_fn, steps_per_call, unroll=unroll)
  # check_vma=False gives pmap's semantics: with the check on, autodiff already sums the
  # gradient of replicated params over devices, and the step's own pmean would count it twice.
  sharded = jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P()),
                          out_specs=(P(), P()), check_vma=False)
  return jax.jit(sharded, donate_argnums=(0,) if donate else ())


def pmap_step(step_fn, *, donate: bool = True, steps_per_call: int = 1,
              unroll: int | bool = 1):
  """pmap(step_fn) over local devices: state and batch carry a leading device axis. With
  `steps_per_call` > 1, as `shard_step` (measurements: step axis first, then devices)."""
  fn = step_fn if steps_per_call == 1 else scan_steps(step_fn, steps_per_call, unroll=unroll)
  return jax.pmap(fn, axis_name=DATA_AXIS, in_axes=(0, 0, None),
                  out_axes=(0, 0 if steps_per_call == 1 else 1),
                  donate_argnums=(0,) if donate else ())


def run_steps(step, multi_step, state, next_batch: Callable[[], object], key, start: int,
              stop: int, *, steps_per_call: int = 1,
              is_boundary: Callable[[int], bool] = lambda done: False,
              wants_measurements: Callable[[int], bool] = lambda done: True) -> Iterator:
  """Run steps start+1 .. stop, yielding `(done, state, measurements)` after each.

  `step(state, batch, key)` runs one step; `multi_step(state, batches, key)` (from
  `shard_step`/`pmap_step` with `steps_per_call`) runs `steps_per_call` steps in one call.
  Calls of `steps_per_call` steps never stop inside a boundary (`is_boundary(done)`, e.g.
  checkpoint or epoch ends) or past `stop`: single steps reach it instead, so two compiled
  programs cover any run. `state` is the newest state, which is the state after `done` steps
  whenever `is_boundary(done)` or `done == stop`. `measurements` are that step's values where
  `wants_measurements(done)` (other steps of a multi-step call get the whole stacked dict).
  """
  done = start
  while done < stop:
    count = steps_per_call
    if (count > 1 and done + count <= stop
        and not any(is_boundary(d) for d in range(done + 1, done + count))):
      state, stacked = multi_step(state, [next_batch() for _ in range(count)], key)
      for index in range(count):
        done += 1
        measurements = stacked
        if wants_measurements(done):
          measurements = jax.tree.map(lambda x, i=index: x[i], stacked)
        yield done, state, measurements
    else:
      state, measurements = step(state, next_batch(), key)
      done += 1
      yield done, state, measurements


def pmap_replicate(tree, num_devices: int | None = None):
  """Stack `num_devices` copies of every leaf on a new leading axis, the layout pmap expects."""
  num_devices = jax.local_device_count() if num_devices is None else num_devices
  return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (num_devices,) + np.shape(x)),
                      tree)


def pmap_unreplicate(tree):
  """The first device's copy of a pmap-replicated pytree."""
  return jax.tree.map(lambda x: x[0], tree)
