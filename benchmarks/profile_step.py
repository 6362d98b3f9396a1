r"""Where one jaxgan training step spends its time: a jax.profiler trace, summed per op.

Builds the trainer's step for a model and batch (as benchmarks/train_throughput.py does), runs
`--warmup` steps, then traces `--steps` more with `jax.profiler.trace` and reads the trace back
with `jax.profiler.ProfileData`. Prints JSON lines: a header (wall time per step, with and
without reading the losses back every step as compare_peers' protocol does), then for every
timeline of the trace that has events (per device on GPU/TPU: its XLA ops and its streams; on
CPU each thread pool, such as the one running XLA's fusions) the `--top` ops by total time,
each with its time per step, its count per step and its share of the timeline's summed event
time (events nest, e.g. a fusion inside its executor's event, so shares overlap). The trace
itself stays in `--trace-dir` for TensorBoard or Perfetto when given.

  python benchmarks/profile_step.py --model=dcgan --batch=256          # this machine's devices
  python benchmarks/profile_step.py --model=dcgan --batch=256 --cpu-devices=0 --top=15
"""
from __future__ import annotations

import argparse
import collections
import glob
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks.train_throughput import CONFIGS  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', default='dcgan', choices=sorted(CONFIGS))
  positive = _common.int_at_least(1)
  parser.add_argument('--batch', type=positive, default=256)
  parser.add_argument('--steps', type=positive, default=20, help='steps traced (and timed)')
  parser.add_argument('--warmup', type=positive, default=5, help='untimed steps first (>= 1)')
  parser.add_argument('--top', type=positive, default=20, help='ops listed per timeline')
  parser.add_argument('--cpu-devices', type=_common.int_at_least(-1), default=None,
                      help="jax CPU devices (default: the model config's); 0 one per core")
  parser.add_argument('--compute-dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--threads', type=_common.int_at_least(0), default=0,
                      help='CPUs to use (0: all)')
  parser.add_argument('--trace-dir', help='keep the trace here (default: a temporary folder)')
  return parser.parse_args(argv)


def op_totals(xplane_path: str, steps: int, top: int) -> list[dict]:
  """The `top` ops of every timeline in the trace, by total time, per step."""
  from jax.profiler import ProfileData  # pylint: disable=g-import-not-at-top
  rows = []
  for plane in ProfileData.from_file(xplane_path).planes:
    totals = collections.defaultdict(collections.Counter)
    counts = collections.defaultdict(collections.Counter)
    for line in plane.lines:
      timeline = line.name.split('/')[0]  # one per thread pool, not per thread ("tf_XLAEigen/7")
      for event in line.events:
        totals[timeline][event.name] += event.duration_ns
        counts[timeline][event.name] += 1
    for timeline, ops in totals.items():
      busy = sum(ops.values())
      for name, total in ops.most_common(top):
        rows.append(dict(plane=plane.name, timeline=timeline, op=name,
                         ms_per_step=round(total / 1e6 / steps, 4),
                         count_per_step=round(counts[timeline][name] / steps, 2),
                         share_of_timeline=round(total / busy, 4)))
  return rows


def main(argv=None):
  args = parse_args(argv)
  _common.pin_threads(args.threads)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxgan import parallel  # pylint: disable=g-import-not-at-top

  config = importlib.import_module(f'experiments.configs.{CONFIGS[args.model]}').get_config()
  cpu_devices = config.cpu_devices if args.cpu_devices is None else args.cpu_devices
  step, state, mesh = _common.training_step(args.model, config, args.batch,
                                            cpu_devices=cpu_devices,
                                            compute_dtype=args.compute_dtype)
  examples = args.batch * config.loss.n_critic
  rng = np.random.default_rng(0)
  batch = jax.device_put({'image': rng.integers(0, 256, (examples, 28, 28, 1), np.uint8),
                          'label': rng.integers(0, 10, examples).astype(np.int32)},
                         parallel.batch_sharded(mesh))
  key = jax.random.key(1)
  pacer_limit = parallel.MAX_STEPS_IN_FLIGHT

  def run(steps, read_back):
    nonlocal state
    pacer, measured = parallel.StepPacer(pacer_limit), None
    start = time.perf_counter()
    for _ in range(steps):
      state, measured = step(state, batch, key)
      if read_back:
        float(measured['d_loss'])
      pacer.dispatched(measured)
    jax.block_until_ready(measured)
    return 1e3 * (time.perf_counter() - start) / steps

  run(args.warmup, read_back=False)
  dispatched_ms, read_back_ms = run(args.steps, False), run(args.steps, True)
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix='jaxgan_profile_')
  with jax.profiler.trace(trace_dir):
    traced_ms = run(args.steps, read_back=False)
  paths = sorted(glob.glob(f'{trace_dir}/**/*.xplane.pb', recursive=True))
  print(json.dumps(dict(
      benchmark='profile_step', model=args.model, batch=args.batch, steps=args.steps,
      compute_dtype=args.compute_dtype,
      step_ms_dispatched=round(dispatched_ms, 3), step_ms_read_back=round(read_back_ms, 3),
      step_ms_traced=round(traced_ms, 3), trace=paths[-1], machine=_common.machine(),
      **_common.versions())), flush=True)
  for row in op_totals(paths[-1], args.steps, args.top):
    print(json.dumps(row), flush=True)


if __name__ == '__main__':
  main()
