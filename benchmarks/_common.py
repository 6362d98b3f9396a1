"""Shared by the benchmarks: quiet-machine waiting, foreign CPU load, thread pinning, versions,
jaxgan's training step built as the trainer builds it, and argument types that refuse bad values
with argparse's one usage line (exit 2) before any jax work.

Timings on a shared machine are only meaningful while nothing else runs: `wait_quiet` blocks
until other processes use less than `max_load` cores for `window` seconds (like
../shared/bench/peers/run_all.sh), and `ForeignLoad` measures how many cores other processes
used while a timed loop ran (whole-machine busy time from /proc/stat minus this process's CPU
time), which every benchmark line reports.
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import time


def _number_at_least(kind, minimum, noun: str, bound: str):
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'{text!r} is not {noun}') from None
    if not minimum <= value < math.inf:
      raise argparse.ArgumentTypeError(f'must be {bound}{minimum}, got {text}')
    return value
  return parse


def int_at_least(minimum: int):
  """argparse type: an integer >= `minimum` (a batch of 0 fails deep in jax, not here)."""
  return _number_at_least(int, minimum, 'an integer', '>= ')


def finite_float_at_least(minimum: float):
  """argparse type: a finite number >= `minimum` (NaN passes every comparison-based check)."""
  return _number_at_least(float, minimum, 'a number', 'a finite number >= ')


def positive_ints(text: str) -> list[int]:
  """argparse type: comma-separated integers >= 1, such as batch sizes (`64,256`)."""
  values = [int_at_least(1)(item) for item in text.split(',') if item]
  if not values:
    raise argparse.ArgumentTypeError('name at least one, e.g. 64,256')
  return values


def names_from(allowed):
  """argparse type: comma-separated names, each one of `allowed` (`mlp,dcgan`)."""
  def parse(text: str) -> list[str]:
    names = [name for name in text.split(',') if name]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
      problem = f'unknown {",".join(unknown)}' if unknown else 'empty'
      raise argparse.ArgumentTypeError(f'{problem}: choose from {",".join(allowed)}')
    return names
  return parse


def check_out_file(flag: str, path: str | None) -> None:
  """Refuse an output file the run could not append to, before the minutes of timing."""
  if not path:
    return
  if os.path.isdir(path):
    raise SystemExit(f'error: {flag}={path} is a folder: name a file to append the JSON lines to')
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise SystemExit(f'error: {flag}={path}: no folder {folder}: create it or name another file')


def machine_busy_seconds() -> float:
  """Non-idle CPU seconds of the whole machine since boot (user+nice+system+irq+softirq+steal)."""
  with open('/proc/stat') as f:
    fields = [int(x) for x in f.readline().split()[1:9]]
  return (sum(fields) - fields[3] - fields[4]) / os.sysconf('SC_CLK_TCK')


def wait_quiet(max_load: float = 0.15, window: float = 5.0, max_wait: float = 600.0) -> dict:
  """Block until the machine's load (all processes; call it before starting the timed work)
  stays below `max_load` cores for `window` s, or `max_wait` s pass. Returns what it saw."""
  start = time.time()
  load = float('nan')
  while True:
    busy = machine_busy_seconds()
    time.sleep(window)
    load = (machine_busy_seconds() - busy) / window
    if load < max_load or time.time() - start >= max_wait:
      return dict(quiet=load < max_load, load_before=round(load, 2),
                  waited_s=round(time.time() - start, 1))


class ForeignLoad:
  """Cores used by other processes while the `with` block ran (`.cores` afterwards)."""

  def __enter__(self):
    self._busy, self._cpu, self._wall = (machine_busy_seconds(), time.process_time(),
                                         time.perf_counter())
    return self

  def __exit__(self, *exc):
    wall = time.perf_counter() - self._wall
    own = time.process_time() - self._cpu
    self.cores = round(((machine_busy_seconds() - self._busy) - own) / wall, 2)


def pin_threads(threads: int) -> None:
  """Restrict this process to `threads` CPUs (XLA:CPU and TF size their pools from this). Call
  before importing jax."""
  if threads:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])


def peak_rss_mb() -> float:
  """This process's peak resident memory so far (MiB)."""
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def machine() -> dict:
  """The processor (name, vendor, family, model, vector instruction sets: two VMs of one name
  can be different processors) and core counts."""
  from jaxgan import provenance  # pylint: disable=g-import-not-at-top
  return provenance.hardware()


def versions() -> dict:
  from jaxgan import provenance  # pylint: disable=g-import-not-at-top
  return provenance.software()


def training_step(model: str, config, batch_size: int, *, cpu_devices: int,
                  compute_dtype: str = 'float32', steps_per_call: int = 1):
  """(step, state, mesh): the trainer's program for `model` under experiment `config` at global
  batch `batch_size` (`make_train_step` under `parallel.shard_step` over a mesh of every device,
  state donated) and its initial state, replicated. Call before jax computes anything: it sets
  the number of CPU devices (`parallel.configure_cpu_devices(cpu_devices)`)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgan import models, parallel, trainer  # pylint: disable=g-import-not-at-top
  from jaxgan.state import init_state  # pylint: disable=g-import-not-at-top
  from jaxgan.train_step import make_train_step  # pylint: disable=g-import-not-at-top
  parallel.configure_cpu_devices(cpu_devices, divides=batch_size)
  config.batch_size = batch_size
  mesh = parallel.make_mesh()
  parallel.check_batch_divides(batch_size, mesh)
  components = trainer.build_components(config, total_steps=10_000)
  step_fn = make_train_step(
      models.build(model, axis_name=parallel.DATA_AXIS), components.loss, components.g_tx,
      components.d_tx, n_critic=config.loss.n_critic, axis_name=parallel.DATA_AXIS,
      g_schedule=components.g_schedule, d_schedule=components.d_schedule,
      compute_dtype=compute_dtype)
  step = parallel.shard_step(step_fn, mesh, steps_per_call=steps_per_call)
  state = jax.jit(lambda key: init_state(components.gan, components.g_tx, components.d_tx, key),
                  out_shardings=parallel.replicated(mesh))(jax.random.key(0))
  return step, state, mesh
