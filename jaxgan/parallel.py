"""Data-parallel execution of one per-device step function over all devices.

The default is today's idiom: `jax.shard_map` over a 1-D device mesh inside `jax.jit`, with the
state replicated and the batch split along the mesh axis. `pmap_step` runs the very same step
function under `jax.pmap` (state with a leading device axis), for code that still expects it.
"""
from __future__ import annotations

import collections
import os
import time
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxgan import provenance

DATA_AXIS = 'data'
# Steps the host may dispatch ahead of the devices. XLA:CPU admits 32 programs in flight per
# device; when the host fills that queue with collective programs over several CPU devices of
# one process, its in-process all-reduce deadlocks and aborts after 40 s (gdb: one program
# waits in the rendezvous, one launch waits for a free slot, no thread computes). A few steps
# ahead keep the dispatch overlapped with the computation.
MAX_STEPS_IN_FLIGHT = 8


def configure_cpu_devices(count: int = 0, *, divides: int | None = None) -> int | None:
  """Present this host's CPU to jax as `count` devices; call before any jax computation.

  Several CPU devices run the step as a data-parallel program, each device on its share of the
  batch, instead of one program whose ops are split over the cores (compare with
  benchmarks/train_throughput.py --cpu-devices). Results equal the 1-device step up to float
  rounding (batch statistics and gradients are averaged over devices; dropout and latents are
  drawn per global example). Not the default, so that the program a run compiles does not
  depend on the machine's core count (its floats follow XLA:CPU's thread count either way:
  `provenance.xla_cpu_threads`). Loops that dispatch steps must bound how far the host runs ahead
  (`StepPacer`), as `run_steps` does.

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
    count = provenance.usable_cores()
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


def scan_steps(step_fn, steps_per_call: int):
  """`steps_per_call` consecutive steps as one function `(state, batches, key) -> (state,
  measurements)`: `batches` is a list of `steps_per_call` batches, consumed in order by a
  `lax.scan`; every measurement gains a leading axis of length `steps_per_call` (step i's
  values at index i). Each step still folds its own `state.step` into `key`, so the result is
  the same as `steps_per_call` separate calls, up to float rounding between the programs.
  One loop body: it compiles once, but XLA:CPU runs a while-loop body slower than straight-line
  code (README, Speed and scale: `steps_per_call`).
  """
  if steps_per_call < 1:
    raise ValueError(f'steps_per_call must be >= 1, got {steps_per_call}')

  def steps(state, batches, key):
    problem = _batches_problem(batches, steps_per_call)
    if problem:
      raise ValueError(problem)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    return jax.lax.scan(lambda carry, batch: step_fn(carry, batch, key), state, stacked)

  return steps


def _batches_problem(batches, steps_per_call: int) -> str | None:
  """What is wrong with the argument of a call of `steps_per_call` > 1 steps, if anything (one
  batch passed alone: its dict's keys were counted as batches)."""
  if not isinstance(batches, (list, tuple)):
    return (f'steps_per_call={steps_per_call} takes a list of {steps_per_call} batches, got a '
            f'{type(batches).__name__}: pass one batch per step, [batch_1, ..., '
            f'batch_{steps_per_call}]')
  if len(batches) != steps_per_call:
    return (f'steps_per_call={steps_per_call} takes a list of {steps_per_call} batches, got '
            f'{len(batches)}: pass one batch per step')
  return None


def _check_axis(step_fn) -> None:
  """A step from `train_step.make_train_step` records its axis_name; the wrappers below split
  the batch over DATA_AXIS, and a step averaging over none would train each device apart."""
  axis_name = getattr(step_fn, 'axis_name', DATA_AXIS)
  if axis_name != DATA_AXIS:
    raise ValueError(f'the step was built with axis_name={axis_name!r}, but runs over the '
                     f'{DATA_AXIS!r} axis here: build the model and the step with '
                     f'axis_name=parallel.DATA_AXIS')


def shard_step(step_fn, mesh: Mesh, *, donate: bool = True, steps_per_call: int = 1):
  """jit(shard_map(step_fn)): state and key replicated, batch split over `DATA_AXIS`.

  `step_fn` must have been built with `axis_name=DATA_AXIS`. The batch may be host (numpy)
  arrays or global jax.Arrays split over the mesh. With `donate`, the state's
  buffers are reused for the new state (the state passed in must not be used afterwards).
  With `steps_per_call` > 1 the function takes a list of that many batches and runs
  `scan_steps` (measurements stacked, step axis first).
  """
  _check_axis(step_fn)
  fn = step_fn if steps_per_call == 1 else scan_steps(step_fn, steps_per_call)
  # check_vma=False gives pmap's semantics, under which the step's numbers were pinned (with
  # the check on, autodiff sums the gradients over the devices and the step divides the sum).
  sharded = jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P()),
                          out_specs=(P(), P()), check_vma=False)
  # In-shardings let the batch be host arrays, which jit copies to the devices split over
  # DATA_AXIS itself, far cheaper per call than jax.device_put (data.training_batches).
  jitted = jax.jit(sharded,
                   in_shardings=(replicated(mesh), batch_sharded(mesh), replicated(mesh)),
                   donate_argnums=(0,) if donate else (),
                   compiler_options=step_compiler_options(mesh))

  def misfit(state, batch, key):
    del key
    if np.ndim(getattr(state, 'step', 0)):
      return (f'state.step has shape {np.shape(state.step)}: the state has a leading axis of '
              'devices (pmap_replicate\'s), but shard_step takes one state: pass '
              'parallel.pmap_unreplicate(state)')
    if steps_per_call > 1 and (problem := _batches_problem(batch, steps_per_call)):
      return problem
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
      if (isinstance(leaf, jax.Array) and leaf.committed
          and not leaf.sharding.is_equivalent_to(batch_sharded(mesh), leaf.ndim)):
        return (f'batch{jax.tree_util.keystr(path)} is placed on {leaf.sharding}, not split '
                f'over the mesh\'s {mesh.size} devices: pass host (numpy) arrays, or place it '
                'with jax.device_put(x, parallel.batch_sharded(mesh))')
      if np.ndim(leaf) == 0 or np.shape(leaf)[0] % mesh.size:
        return (f'batch{jax.tree_util.keystr(path)} has shape {np.shape(leaf)}, whose first '
                f'axis the {mesh.size} devices of the mesh cannot split: make the batch size '
                f'a multiple of {mesh.size}')
    return None

  return _ExplainedStep(jitted, misfit, step_fn)


def step_compiler_options(mesh: Mesh) -> dict[str, str] | None:
  """XLA options for a step program over `mesh`: with several CPU devices in this process,
  XLA:CPU's memory-optimised op order instead of its default concurrency-optimised one.

  Several CPU devices share one pool of threads, and a device whose thread waits in an
  all-reduce computes nothing meanwhile. The concurrency-optimised order leaves each device
  free to run independent work (say D's real-image pass) before or after a collective (say the
  generator's batch statistics), so the devices took them in different orders and waited for
  each other: in a profile of the dcgan step at batch 64 (2 devices, 2 cores) one device sat
  in the first two batch-norm all-reduces for 4 and 6 ms of a 28 ms step while the other
  computed. The memory-optimised order runs them alike and the step gets 10-15% faster
  (README, "Speed and scale"). On one device the concurrency-optimised order is the faster
  one (its independent ops share the cores), so it stays there. Op order only: results are
  unchanged bit for bit.
  """
  devices = list(mesh.devices.flat)
  local = [d for d in devices if d.process_index == jax.process_index()]
  if devices[0].platform == 'cpu' and len(local) > 1:
    return {'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'}
  return None


def pmap_step(step_fn, *, donate: bool = True, steps_per_call: int = 1):
  """pmap(step_fn) over local devices: state and batch carry a leading device axis. With
  `steps_per_call` > 1, as `shard_step` (measurements: step axis first, then devices)."""
  _check_axis(step_fn)
  fn = step_fn if steps_per_call == 1 else scan_steps(step_fn, steps_per_call)
  pmapped = jax.pmap(fn, axis_name=DATA_AXIS, in_axes=(0, 0, None),
                     out_axes=(0, 0 if steps_per_call == 1 else 1),
                     donate_argnums=(0,) if donate else ())

  def misfit(state, batch, key):
    del key
    if steps_per_call > 1 and (problem := _batches_problem(batch, steps_per_call)):
      return problem
    count = jax.local_device_count()
    for name, tree, fix in (
        ('state', state, 'pass parallel.pmap_replicate(state)'),
        ('batch', batch, f'reshape each array to ({count}, per-device batch, ...)')):
      for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] != count:
          return (f'{name}{jax.tree_util.keystr(path)} has shape {np.shape(leaf)}, but pmap '
                  f'needs a leading axis of the {count} local devices: {fix}')
    return None

  return _ExplainedStep(pmapped, misfit, step_fn)


class _ExplainedStep:
  """A compiled step that, when jax refuses its arguments, names the argument at fault and the
  fix (jax's own error, an IndexError for a state not replicated for pmap, names neither).
  Checked only after a failure, so a working call costs nothing more; other attributes are the
  compiled function's. The first call's batch is also checked for values the compiled step
  cannot refuse (`step_fn.check_values`: labels outside the classes, floats outside [-1, 1]):
  such mistakes come with every batch, and checking one costs a few microseconds, once. In a
  multi-process run the processes then agree, so that all refuse a batch that one refuses."""

  def __init__(self, compiled, misfit, step_fn):
    self._compiled = compiled
    self._misfit = misfit
    self._check_values = getattr(step_fn, 'check_values', None)

  def __call__(self, state, batch, key):
    if self._check_values is not None:  # until a batch passes
      problem = None
      try:
        for one in batch if isinstance(batch, (list, tuple)) else (batch,):  # steps_per_call
          self._check_values(one)
      except ValueError as error:
        problem = str(error)
      if jax.process_count() > 1:
        problem = _first_problem_of_all_processes(problem)
      if problem:
        raise ValueError(problem)
      self._check_values = None
    try:
      return self._compiled(state, batch, key)
    except (ValueError, IndexError, TypeError) as error:  # TypeError: a state pmap replicated
      problem = self._misfit(state, batch, key)
      if problem is None:
        raise
      raise ValueError(problem) from error

  def __getattr__(self, name):
    return getattr(self._compiled, name)


_PROBLEM_BYTES = 1024


def _first_problem_of_all_processes(problem: str | None) -> str | None:
  """The first process's problem, for every process of a multi-process run: each checks only
  its own rows, and a process that refused its batch alone left the others waiting in the
  step's first collective until jax ended them, not saying why."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  encoded = np.zeros(_PROBLEM_BYTES, np.uint8)
  if problem:
    text = problem.encode()[:_PROBLEM_BYTES]
    encoded[:len(text)] = np.frombuffer(text, np.uint8)
  gathered = np.asarray(multihost_utils.process_allgather(encoded))
  for index, row in enumerate(gathered):
    if row.any():
      text = row.tobytes().rstrip(b'\0').decode(errors='replace')
      return text if index == jax.process_index() else f'process {index}: {text}'
  return None


class StepPacer:
  """Keeps the host at most `limit` dispatched step calls ahead of the devices: `dispatched`
  takes each call's outputs (not donated ones) and waits for the call `limit` calls back."""

  def __init__(self, limit: int = MAX_STEPS_IN_FLIGHT):
    if limit < 1:
      raise ValueError(f'StepPacer limit must be >= 1, got {limit}')
    self._limit = limit
    self._pending = collections.deque()

  def dispatched(self, outputs) -> None:
    self._pending.append(outputs)
    if len(self._pending) > self._limit:
      jax.block_until_ready(self._pending.popleft())

  @property
  def in_flight(self) -> int:
    """Calls dispatched and not yet waited for (an upper bound on those still running)."""
    return len(self._pending)


def run_steps(step, multi_step, state, next_batch: Callable[[], object], key, start: int,
              stop: int, *, steps_per_call: int = 1,
              is_boundary: Callable[[int], bool] = lambda done: False,
              wants_measurements: Callable[[int], bool] = lambda done: True) -> Iterator:
  """Run steps start+1 .. stop, yielding `(done, state, measurements, first_call)` after each.

  `step(state, batch, key)` runs one step; `multi_step(state, batches, key)` (from
  `shard_step`/`pmap_step` with `steps_per_call`) runs `steps_per_call` steps in one call.
  Calls of `steps_per_call` steps never stop inside a boundary (`is_boundary(done)`, e.g.
  checkpoint or epoch ends) or past `stop`: single steps reach it instead, so two compiled
  programs cover any run. `state` is the newest state, which is the state after `done` steps
  whenever `is_boundary(done)` or `done == stop`. `measurements` are that step's values where
  `wants_measurements(done)` (other steps of a multi-step call get the whole stacked dict).
  `first_call`, for the steps of each program's first call here (which compiles it), is
  (the call's last step, the seconds it took, compilation included): that call runs alone, after
  the calls before it and before the next; None for the other steps.
  The host stays at most MAX_STEPS_IN_FLIGHT calls ahead of the devices (`StepPacer`).
  """
  pacer = StepPacer()
  called = set()  # the programs called so far, by steps per call
  done = start
  while done < stop:
    count = steps_per_call
    if count > 1 and (done + count > stop
                      or any(is_boundary(d) for d in range(done + 1, done + count))):
      count = 1
    first = count not in called
    if first:
      called.add(count)
      jax.block_until_ready(state)  # the calls before it are not part of its time
      call_start = time.perf_counter()
    if count > 1:
      state, measured = multi_step(state, [next_batch() for _ in range(count)], key)
    else:
      state, measured = step(state, next_batch(), key)
    pacer.dispatched(measured)
    first_call = None
    if first:
      jax.block_until_ready(measured)
      first_call = (done + count, time.perf_counter() - call_start)
    for index in range(count):
      done += 1
      measurements = measured
      if count > 1 and wants_measurements(done):
        measurements = jax.tree.map(lambda x, i=index: x[i], measured)
      yield done, state, measurements, first_call


def pmap_replicate(tree, num_devices: int | None = None):
  """Stack `num_devices` copies of every leaf on a new leading axis, the layout pmap expects."""
  num_devices = jax.local_device_count() if num_devices is None else num_devices
  return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (num_devices,) + np.shape(x)),
                      tree)


def pmap_unreplicate(tree):
  """The first device's copy of a pmap-replicated pytree.

  Read from the first device's own buffer: indexing the stacked array (x[0]) dispatches a
  program over every device per leaf, and with several CPU devices dozens of those queued
  behind a step's all-reduce filled XLA:CPU's queue and aborted the process (the deadlock of
  MAX_STEPS_IN_FLIGHT; seen twice in the pmap tests)."""
  def first(x):
    if not isinstance(x, jax.Array):
      return x[0]
    shard = x.addressable_data(0)
    if shard.shape != (1,) + x.shape[1:]:  # a leaf not split over the devices' leading axis
      raise ValueError(f'pmap_unreplicate takes a pytree with a leading axis of devices (from '
                       f'pmap_replicate or pmap_step), got a leaf of shape {x.shape} whose first '
                       f'device holds {shard.shape}: the tree is not replicated, use it as it is')
    return shard.reshape(x.shape[1:])

  return jax.tree.map(first, tree)
