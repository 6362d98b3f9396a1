"""Several hosts (processes) training one model: `jax.distributed.initialize` from flags or env.

Every process runs the same command with its own process id. After `initialize`,
`jax.devices()` lists the devices of all processes, `parallel.make_mesh()` spans them, each
process's `BatchIterator` converts only its own rows of every global batch (rows
[p*B/P, (p+1)*B/P) for process p of P) into a global `jax.Array`, and the jitted step runs as
one program over the whole mesh, its gradient means crossing hosts (gloo on CPU, NCCL on GPU,
ICI/DCN on TPU). Only process 0 writes config.json, metrics.jsonl and sample grids; all
processes take part in checkpoint saves (orbax), so the run folder must be on a file system
they share.

Settings, in order of precedence: the arguments of `initialize`, the flags
`--coordinator_address --num_processes --process_id` (see `define_flags`), then the environment
variables JAXGAN_COORDINATOR_ADDRESS, JAXGAN_NUM_PROCESSES, JAXGAN_PROCESS_ID. With none of
them set nothing happens (one process), unless `auto=True` (or JAXGAN_DISTRIBUTED=auto), which
lets jax detect the cluster itself (Cloud TPU pods, SLURM, Open MPI); an explicit argument or
flag overrides JAXGAN_DISTRIBUTED=auto, and auto with process settings of its own is refused.

Two processes on one machine, on CPU (the test in tests/test_distributed.py does this):

  for i in 0 1; do
    python -m experiments.train --config=experiments/configs/tiny.py --workdir=/tmp/run2 \\
        --coordinator_address=127.0.0.1:12345 --num_processes=2 --process_id=$i &
  done; wait
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
from typing import Iterator

import jax
from absl import logging

ENV_PREFIX = 'JAXGAN_'
# HOST:PORT, an IPv6 host in brackets (gRPC's form).
_HOST_PORT = re.compile(r'(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):([0-9]{1,5})')


@dataclasses.dataclass(frozen=True)
class Settings:
  coordinator_address: str | None = None  # host:port of process 0's coordinator service
  num_processes: int | None = None
  process_id: int | None = None
  auto: bool = False  # let jax detect the cluster (TPU pods, SLURM, Open MPI)

  @property
  def requested(self) -> bool:
    return self.auto or self.coordinator_address is not None


def settings_from_env(environ=None) -> Settings:
  environ = os.environ if environ is None else environ

  def get(name, cast=str):
    value = environ.get(ENV_PREFIX + name, '').strip()
    if not value:
      return None
    try:
      return cast(value)
    except ValueError:
      raise ValueError(f'{ENV_PREFIX}{name}={value!r} is not a valid {cast.__name__}') from None

  mode = (get('DISTRIBUTED') or '').lower()
  if mode not in ('', 'auto'):
    raise ValueError(f'{ENV_PREFIX}DISTRIBUTED={mode!r}: its one value is auto (let jax detect '
                     'the cluster); unset it otherwise')
  return Settings(get('COORDINATOR_ADDRESS'), get('NUM_PROCESSES', int),
                  get('PROCESS_ID', int), auto=mode == 'auto')


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None, *, auto: bool | None = None,
            environ=None) -> Settings:
  """Arguments override the environment, field by field (explicit process settings override
  JAXGAN_DISTRIBUTED=auto too); checks the combination."""
  env = settings_from_env(environ)
  explicit = coordinator_address or num_processes is not None or process_id is not None
  settings = Settings(
      coordinator_address if coordinator_address else env.coordinator_address,
      num_processes if num_processes is not None else env.num_processes,
      process_id if process_id is not None else env.process_id,
      auto=(env.auto and not explicit) if auto is None else auto)
  if settings.auto and (settings.coordinator_address is not None
                        or settings.num_processes is not None or settings.process_id is not None):
    raise ValueError('automatic cluster detection (JAXGAN_DISTRIBUTED=auto) and a coordinator '
                     'address or process settings exclude each other: give one of them')
  if settings.coordinator_address is not None and not settings.auto:
    address = _HOST_PORT.fullmatch(settings.coordinator_address)
    if not address or not 1 <= int(address.group(2)) <= 65535:
      # jax would fail on it with an IndexError, or crash the process (a port not a number).
      raise ValueError(f'--coordinator_address={settings.coordinator_address}: give HOST:PORT '
                       'of process 0, a port in 1..65535 (e.g. 10.0.0.2:12345)')
    missing = [name for name in ('num_processes', 'process_id')
               if getattr(settings, name) is None]
    if missing:
      raise ValueError(f'--coordinator_address needs {" and ".join("--" + m for m in missing)} '
                       f'(or {", ".join(ENV_PREFIX + m.upper() for m in missing)})')
    if settings.num_processes < 1 or not 0 <= settings.process_id < settings.num_processes:
      raise ValueError(f'process_id={settings.process_id} must be in [0, num_processes='
                       f'{settings.num_processes})')
  elif not settings.auto and (settings.num_processes is not None
                              or settings.process_id is not None):
    raise ValueError('--num_processes/--process_id need --coordinator_address (host:port of '
                     'process 0), or JAXGAN_DISTRIBUTED=auto on a cluster jax detects')
  return settings


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, auto: bool | None = None,
               environ=None, initialization_timeout: int = 300) -> int | None:
  """Join the multi-process run described by the arguments/environment, before any other
  jax call. Returns the number of processes: 1 when nothing was asked (nothing done), None
  when jax detected the cluster itself (`auto`; ask jax.process_count() once it runs)."""
  settings = resolve(coordinator_address, num_processes, process_id, auto=auto,
                     environ=environ)
  if not settings.requested:
    return 1
  with _signals_end_the_process():
    if settings.auto:
      jax.distributed.initialize(initialization_timeout=initialization_timeout)
      return None
    logging.info('process %d of %d: waiting up to %d s for all %d processes to connect at %s '
                 '(process 0 listens there); jax ends the process if they do not',
                 settings.process_id, settings.num_processes, initialization_timeout,
                 settings.num_processes, settings.coordinator_address)
    jax.distributed.initialize(coordinator_address=settings.coordinator_address,
                               num_processes=settings.num_processes,
                               process_id=settings.process_id,
                               initialization_timeout=initialization_timeout)
  return settings.num_processes


@contextlib.contextmanager
def _signals_end_the_process() -> Iterator[None]:
  """SIGINT and SIGTERM end the process at once while jax waits in C++ for the others to
  connect (minutes), where Python's handlers (console.run's) would run only after the wait.
  Nothing is written before it. A signal the process ignores (SIGINT in a shell's background
  job) stays ignored."""
  try:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum, handler in before.items():
      if handler != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
  except ValueError:  # not the main thread: signals are not this thread's to take
    yield
    return
  try:
    yield
  finally:
    for signum, handler in before.items():
      signal.signal(signum, handler)


def define_flags(flag_values=None) -> None:
  """--coordinator_address, --num_processes, --process_id for an absl program."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_string('coordinator_address', None,
                      'Multi-host: host:port of process 0 (its coordinator service listens '
                      'there). Default: $JAXGAN_COORDINATOR_ADDRESS; unset: one process.',
                      flag_values=flag_values)
  flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes '
                       '(default $JAXGAN_NUM_PROCESSES).', flag_values=flag_values)
  flags.DEFINE_integer('process_id', None, 'Multi-host: this process, 0..num_processes-1 '
                       '(default $JAXGAN_PROCESS_ID).', flag_values=flag_values)


def initialize_from_flags(flag_values=None) -> int | None:
  """`initialize` with the values of `define_flags`'s flags (and the environment)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FLAGS if flag_values is None else flag_values
  return initialize(flag_values.coordinator_address, flag_values.num_processes,
                    flag_values.process_id)
