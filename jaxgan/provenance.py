"""Which machine and software computed a run: `machine.jsonl` in the run folder.

XLA compiles for the host it runs on, so the same seed and config reproduce a run bit for bit
only on the same kind of processor with the same library versions, XLA flags and XLA:CPU thread
count (two 2-core VMs that both call themselves "AMD EPYC" trained one cgan_mnist command to
different digits; a 1-core run differs from a 2-core one: README, Determinism and tests). The
trainer appends one line per training session (a fresh start or a resume) and warns when a run
is resumed on another kind of machine, since from there on it need not match the same run
trained on one machine. Evaluation records and exported digits carry the same machine record.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re

import numpy as np
from absl import logging

FILE = 'machine.jsonl'

# /proc/cpuinfo flags naming vector instruction sets, the ones XLA's code generation and its
# convolution kernels choose by: x86's `flags` sse*, avx*, amx*, fma, f16c; Arm's `Features`
# asimd*, sve*, sme* (x86's sme and smep are memory protections, not vector instructions).
_X86_ISA_FLAG = re.compile(r'(sse|ssse|avx|amx|fma|f16c)')
_ARM_ISA_FEATURE = re.compile(r'(asimd|sve|sme)')

# Fields of a session's record that decide its floats; the others (time, step, core counts)
# describe it. jax's key type and threefry's partitionable mode (JAX_DEFAULT_PRNG_IMPL,
# JAX_THREEFRY_PARTITIONABLE) change every random draw; XLA:CPU splits its reductions (YNNPACK's)
# and some convolutions over its thread pool, so its size (`cpu_threads`) changes sums.
KIND_FIELDS = ('cpu', 'cpu_vendor', 'cpu_family', 'cpu_model', 'isa', 'backend', 'device_kind',
               'devices', 'jax', 'jaxlib', 'flax', 'optax', 'xla_flags', 'prng_impl',
               'threefry_partitionable', 'cpu_threads')

# Records written before a field was recorded: read as jax's default, which those runs used
# unless their user changed it (so existing run folders are not all reported as moved).
UNRECORDED = dict(prng_impl='threefry2x32', threefry_partitionable=True)

# The environment variables that size XLA:CPU's thread pool, in the order XLA reads them.
THREAD_ENV = ('PJRT_NPROC', 'NPROC')

# An evaluation's floats do not depend on the device count as such (digits are generated one
# example at a time whatever the sharding, and the metrics run on one device), only through
# XLA:CPU's thread count, which is at least the CPU device count (`cpu_threads`).
SCORING_FIELDS = tuple(field for field in KIND_FIELDS if field != 'devices')


def cpu_from_cpuinfo(text: str) -> dict:
  """The processor kind from /proc/cpuinfo's text (its first processor's block): name, vendor,
  family, model and vector instruction sets (x86 and Arm field names)."""
  fields = {}
  for line in text.split('\n\n', 1)[0].splitlines():
    key, sep, value = line.partition(':')
    if sep:
      fields.setdefault(key.strip(), value.strip())
  if 'flags' in fields:
    flags, isa_flag = fields['flags'].split(), _X86_ISA_FLAG
  else:
    flags, isa_flag = fields.get('Features', '').split(), _ARM_ISA_FEATURE
  return dict(cpu=fields.get('model name') or platform.processor() or platform.machine(),
              cpu_vendor=fields.get('vendor_id') or fields.get('CPU implementer', ''),
              cpu_family=fields.get('cpu family') or fields.get('CPU architecture', ''),
              cpu_model=fields.get('model') or fields.get('CPU part', ''),
              isa=sorted(f for f in set(flags) if isa_flag.match(f)))


def cpu() -> dict:
  """This host's processor kind (`cpu_from_cpuinfo`; the name only where there is no
  /proc/cpuinfo)."""
  try:
    with open('/proc/cpuinfo') as f:
      return cpu_from_cpuinfo(f.read())
  except OSError:
    return cpu_from_cpuinfo('')


def usable_cores() -> int:
  """Cores this process may run on (its affinity where the OS has one, as Linux does)."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def xla_cpu_threads(cpu_devices: int, environ=os.environ) -> int:
  """The size of XLA:CPU's thread pool for a process with `cpu_devices` CPU devices, as XLA
  sizes it (xla::DefaultThreadPoolSize): the first of PJRT_NPROC and NPROC that is a number,
  else the cores this process may use; never fewer than the devices."""
  for name in THREAD_ENV:  # a whole number, as absl::SimpleAtoi reads one ('1_0' is not)
    if re.fullmatch(r'\s*[+-]?\d+\s*', environ.get(name, '')):
      threads = max(0, int(environ[name]))
      break
  else:
    threads = usable_cores()
  return max(threads, cpu_devices)


def recorded_cpu_threads(record: dict) -> int | None:
  """A record's `cpu_threads`; for one written before it was recorded, the thread count XLA
  then used unless PJRT_NPROC or NPROC was set (the cores the process could use, at least its
  CPU devices); None for other backends."""
  if 'cpu_threads' in record or record.get('backend') != 'cpu' or 'usable_cores' not in record:
    return record.get('cpu_threads')
  return max(record['usable_cores'], record.get('devices', 1) // record.get('processes', 1))


def software() -> dict:
  """The library versions and the devices jax computes on."""
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  return dict(jax=jax.__version__, jaxlib=jax.lib.__version__ if hasattr(jax.lib, '__version__')
              else jax.__version__, flax=flax.__version__, optax=optax.__version__,
              backend=jax.default_backend(), devices=jax.device_count(),
              device_kind=jax.devices()[0].device_kind,
              prng_impl=str(jax.config.jax_default_prng_impl),
              threefry_partitionable=bool(jax.config.jax_threefry_partitionable),
              cpu_threads=xla_cpu_threads(jax.local_device_count())
              if jax.default_backend() == 'cpu' else None)


def hardware() -> dict:
  """This host's processor kind, core counts and Python version."""
  return dict(**cpu(), cores=os.cpu_count(), usable_cores=usable_cores(),
              python=platform.python_version())


def host_record() -> dict:
  """This process's machine and software, as a session line of machine.jsonl holds them."""
  import jax  # pylint: disable=g-import-not-at-top
  return dict(**hardware(), **software(), processes=jax.process_count(),
              xla_flags=os.environ.get('XLA_FLAGS', ''))


def export_field(**drawn) -> np.ndarray:
  """How an exported .npz's contents were drawn (`drawn`: its run, step and settings) and on
  what machine, as the JSON string array an .npz holds under `provenance`."""
  return np.asarray(json.dumps(dict(drawn, machine=host_record())))


def from_export(npz, path: str):
  """The provenance an open .npz (`np.load`'s) holds under `provenance`, decoded; None
  without one (files exported before it was recorded, or by other tools)."""
  if 'provenance' not in npz:
    return None
  try:
    return json.loads(str(npz['provenance']))
  except json.JSONDecodeError:
    raise ValueError(f'{path} holds a provenance array that is not the JSON experiments.sample '
                     'writes: drop it from the file (or write the file again)') from None


def recorded(drawn, field: str):
  """`field` of an export's provenance `drawn` (`from_export`); None where it is not recorded:
  files without a provenance, or with one of the user's own that is not a JSON object."""
  return drawn.get(field) if isinstance(drawn, dict) else None


def check_export_dataset(drawn, dataset: str, path: str) -> None:
  """Refuse digits whose provenance `drawn` names a run trained on another dataset than the
  real data (`dataset`) they are to be scored against."""
  # Unknown for files exported before it was recorded, or with a provenance of their own.
  trained_on = recorded(drawn, 'dataset')
  if trained_on and trained_on != dataset:
    raise ValueError(f'--dataset={dataset} but {path} holds digits of a run trained on '
                     f'{trained_on} (its provenance): pass --dataset={trained_on}')


def differences(before: dict, now: dict, fields: tuple[str, ...] = KIND_FIELDS) -> list[str]:
  """The `fields` on which two records differ, as 'field: before -> now' (a field a record
  lacks read as `UNRECORDED` has it; `cpu_threads` as `recorded_cpu_threads` reads it)."""
  changed = []
  for k in fields:
    if k == 'cpu_threads':
      was, is_now = recorded_cpu_threads(before), recorded_cpu_threads(now)
    else:
      was, is_now = before.get(k, UNRECORDED.get(k)), now.get(k, UNRECORDED.get(k))
    if was != is_now:
      changed.append(f'{k}: {was!r} -> {is_now!r}')
  return changed


def record_session(workdir: str, step: int, host: dict | None = None) -> list[str]:
  """Append this session's line (starting at `step`) to `workdir`/machine.jsonl; returns how
  its machine differs from the previous session's (empty for the first session or the same
  kind), after warning about it."""
  host = host_record() if host is None else host
  path = os.path.join(workdir, FILE)
  text = ''
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
  previous = None
  for line in text.splitlines():
    try:  # a session killed while appending may have left half a line: skip it
      previous = json.loads(line)
    except json.JSONDecodeError:
      continue
  changed = [] if previous is None else differences(previous, host)
  if changed:
    threads = recorded_cpu_threads(previous)
    hint = (f' (PJRT_NPROC={threads} in the environment gives XLA:CPU its thread count)'
            if threads and recorded_cpu_threads(host) not in (None, threads) else '')
    logging.warning('%s: resumed at step %d on another kind of machine than the session from '
                    'step %d (%s): from here on the run need not match one trained on a single '
                    'machine%s', workdir, step, previous['step'], '; '.join(changed), hint)
  line = dict(step=step, time=datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec='seconds'), **host)
  with open(path, 'a') as f:
    # After half a line, start a new one rather than extend it.
    f.write(('' if text.endswith('\n') or not text else '\n') + json.dumps(line) + '\n')
  return changed
