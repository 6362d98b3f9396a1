r"""Images per second of jaxgan's training step, per model and batch size, fed two ways.

One step = one discriminator update + one generator update (as the papers count a step), the
trainer's own program: `make_train_step` under `parallel.shard_step` (jit + shard_map over a mesh
of all devices, state donated), built from the model's experiment config. Fed by
  (a) device:   one batch already on the device(s), reused every step;
  (b) pipeline: the real input pipeline as the trainer builds it, `jaxgan.data.load_split`
                (tfds) + `data.training_batches` (on CPU by default no prefetch thread: each
                batch is gathered at dispatch and copied to the devices by the step's jit;
                `--prefetch=N` a thread N batches ahead, copying with jax.device_put).
Each (model, batch) runs in its own subprocess (so peak memory is its own): it compiles once,
then alternates timed repeats of (a) and (b), each `--steps` steps (more where they take less
than `--min-repeat-s`, the same number for both feeds) dispatched back to back and synchronised
at the end, as the trainer runs between log lines. One JSON line per (model,
batch, feed): images/s (median over repeats, and every repeat), step time (ms, median),
compile time (s, first call minus one step), whether XLA compiled anything after each feed's
first step, the host's work per batch alone (`host_batch_ms`: BatchIterator.batch_at, the
gather and, with a prefetch thread, the copy to the devices, timed after the repeats; host
arrays are copied inside the step's dispatch instead), whether the step got host arrays
(`host_batches`),
peak resident memory of the process (MiB), the foreign CPU load during the timed repeats
(cores used by other processes) and the versions. A last line per (model, batch) gives
pipeline/device.

Before each subprocess the machine must be quiet (other processes < 0.15 core for 5 s, see
benchmarks/_common.py); `--max-wait 0` skips the wait (quick runs; then read `foreign_load`).

  JAXGAN_MANUAL_DIR=../shared/datasets TFDS_DATA_DIR=/tmp/tfds_bench \
    python benchmarks/train_throughput.py                       # all models, batch 64 and 256
  python benchmarks/train_throughput.py --models=dcgan --batches=64 --steps=20 --repeats=2 \
    --max-wait=0                                                # a quick look
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIGS = {'mlp': 'mlp_mnist', 'dcgan': 'dcgan_mnist', 'kannada': 'convgan_kannada'}
FEEDS = ('device', 'pipeline')


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--models', type=_common.names_from(CONFIGS), default='mlp,dcgan,kannada')
  parser.add_argument('--batches', type=_common.positive_ints, default='64,256')
  parser.add_argument('--feeds', type=_common.names_from(FEEDS), default='device,pipeline',
                      help='device and/or pipeline')
  parser.add_argument('--steps', type=_common.int_at_least(1), default=100,
                      help='steps per timed repeat, at least (see --min-repeat-s)')
  parser.add_argument('--min-repeat-s', type=_common.finite_float_at_least(0), default=1.0,
                      help='seconds a timed repeat lasts at least: more steps than --steps where '
                      'these take less (0: --steps exactly)')
  parser.add_argument('--repeats', type=_common.int_at_least(1), default=5)
  parser.add_argument('--warmup', type=_common.int_at_least(0), default=5,
                      help='steps after compilation, untimed')
  parser.add_argument('--threads', type=_common.int_at_least(0), default=0,
                      help='CPUs to use (0: all)')
  parser.add_argument('--cpu-devices', type=_common.int_at_least(-1), default=None,
                      help="jax CPU devices (default: the model config's cpu_devices, as the "
                      'trainer); 0 one per core, -1 jax default (1)')
  parser.add_argument('--steps-per-call', type=_common.int_at_least(1), default=1)
  parser.add_argument('--compute-dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--prefetch', type=_common.int_at_least(-1), default=None,
                      help="pipeline feed's prefetch thread depth (default: the model config's, "
                      'as the trainer; -1 = 0 on CPU, 2 on accelerators; 0 no thread)')
  parser.add_argument('--max-in-flight', type=int, default=None,
                      help='step calls the host may run ahead of the devices (default: the '
                      "trainer's parallel.MAX_STEPS_IN_FLIGHT; keep it under 32 with several "
                      'CPU devices)')
  parser.add_argument('--max-wait', type=float, default=600,
                      help='seconds to wait for a quiet machine before each (model, batch)')
  parser.add_argument('--out', help='also append the JSON lines to this file')
  parser.add_argument('--worker', help=argparse.SUPPRESS)  # "model,batch": run one in-process
  args = parser.parse_args(argv)
  if args.max_in_flight is not None and args.max_in_flight < 1:
    parser.error(f'--max-in-flight={args.max_in_flight} must be >= 1 (1 waits for every step)')
  if args.cpu_devices is not None and args.cpu_devices > 0:
    uneven = [str(batch) for batch in args.batches if batch % args.cpu_devices]
    if uneven:
      parser.error(f'--batches={",".join(uneven)} cannot be split over '
                   f'--cpu-devices={args.cpu_devices}: give multiples of {args.cpu_devices}')
  return args


def _time_repeat(run_step, steps, batch_size, max_in_flight, jax, parallel):
  with _common.ForeignLoad() as foreign:
    start = time.perf_counter()
    pacer = parallel.StepPacer(max_in_flight)  # several CPU devices deadlock without pacing
    out = None
    for _ in range(steps):
      out = run_step()
      pacer.dispatched(out)
    jax.block_until_ready(out)
    elapsed = time.perf_counter() - start
  return batch_size * steps / elapsed, 1e3 * elapsed / steps, foreign.cores


def worker(args) -> list[dict]:
  """One (model, batch): compile, then interleave timed repeats of the requested feeds."""
  model, batch_size = args.worker.split(',')
  batch_size = int(batch_size)
  _common.pin_threads(args.threads)
  import importlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgan import data, parallel  # pylint: disable=g-import-not-at-top
  if args.max_in_flight is None:
    args.max_in_flight = parallel.MAX_STEPS_IN_FLIGHT
  backend_compiles = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, _secs, **_: backend_compiles.append(event)
      if event == '/jax/core/compile/backend_compile_duration' else None)

  config = importlib.import_module(f'experiments.configs.{CONFIGS[model]}').get_config()
  if args.cpu_devices is None:
    args.cpu_devices = config.cpu_devices
  if args.prefetch is None:
    args.prefetch = config.prefetch
  k = args.steps_per_call
  step, state, mesh = _common.training_step(
      model, config, batch_size, cpu_devices=args.cpu_devices, compute_dtype=args.compute_dtype,
      steps_per_call=k)
  sharding = parallel.batch_sharded(mesh)
  key = jax.random.key(1)
  examples = batch_size * config.loss.n_critic

  images, labels = data.load_split(config.data.name, 'train', manual_dir=config.data.manual_dir
                                   or None)
  device_batch = data.BatchIterator(images, labels, batch_size=examples, seed=0,
                                    sharding=sharding, prefetch=0).batch_at(0)
  pipeline = data.training_batches(images, labels, batch_size=examples, seed=0,
                                   sharding=sharding, prefetch=args.prefetch)

  holder = {'state': state}

  feeds = args.feeds
  recompiles = dict.fromkeys(feeds, 0)  # compilations by each feed's steps after its first

  def make_runner(feed, next_batch):
    def run_step():
      batches = next_batch() if k == 1 else [next_batch() for _ in range(k)]
      compiles_before = len(backend_compiles)
      holder['state'], measured = step(holder['state'], batches, key)
      recompiles[feed] += len(backend_compiles) - compiles_before
      return measured
    return run_step

  runners = {'device': make_runner('device', lambda: device_batch),
             'pipeline': make_runner('pipeline', lambda: next(pipeline))}
  # Host and device batches differ in their type (sharding), so each feed's first call traces
  # and compiles its own program (the trainer feeds only one of them): timed per feed.
  first_call = {}
  for feed in feeds:
    start = time.perf_counter()
    jax.block_until_ready(runners[feed]())
    first_call[feed] = time.perf_counter() - start
    recompiles[feed] = 0
  for _ in range(args.warmup):
    for feed in feeds:
      jax.block_until_ready(runners[feed]())
  calls = max(1, args.steps // k)
  # A 3 ms step makes 100 steps a 0.3 s repeat, within the VM's noise: lengthen every feed's
  # repeats alike to last --min-repeat-s, timed by one untimed repeat of each.
  for feed in feeds:
    _, call_ms, _ = _time_repeat(runners[feed], calls, batch_size * k, args.max_in_flight, jax,
                                 parallel)
    calls = max(calls, math.ceil(1e3 * args.min_repeat_s / call_ms))
  results = {feed: [] for feed in feeds}
  for _ in range(args.repeats):
    for feed in feeds:
      results[feed].append(_time_repeat(runners[feed], calls, batch_size * k,
                                        args.max_in_flight, jax, parallel))
  pipeline.close()
  start = time.perf_counter()  # the host's own work per batch, nothing else running
  for index in range(calls * k):
    jax.block_until_ready(pipeline.batch_at(index))
  host_batch_ms = 1e3 * (time.perf_counter() - start) / (calls * k)
  common = dict(model=model, batch=batch_size, steps_per_call=k, cpu_devices=args.cpu_devices,
                compute_dtype=args.compute_dtype, max_in_flight=args.max_in_flight,
                steps=calls * k, repeats=args.repeats,
                threads=len(os.sched_getaffinity(0)), devices=mesh.size,
                host_batch_ms=round(host_batch_ms, 3),
                prefetch=args.prefetch,
                host_batches=pipeline.sharding is None,
                peak_rss_mb=_common.peak_rss_mb(),
                **{f'v_{name}': v for name, v in _common.versions().items()})
  lines = []
  for feed, runs in results.items():
    step_ms = statistics.median(ms for _, ms, _ in runs) / k
    lines.append(dict(
        common, feed=feed, images_per_s=round(statistics.median(r for r, _, _ in runs), 1),
        images_per_s_repeats=[round(r, 1) for r, _, _ in runs], step_ms=round(step_ms, 3),
        compile_s=round(first_call[feed] - step_ms * k / 1e3, 2),
        recompiled_after_first_step=recompiles[feed] > 0,
        foreign_load=max(f for _, _, f in runs)))
  return lines


def main(argv=None):
  args = parse_args(argv)
  if args.worker:
    for line in worker(args):
      print(json.dumps(line), flush=True)
    return
  _common.check_out_file('--out', args.out)
  out = open(args.out, 'a') if args.out else None  # pylint: disable=consider-using-with
  print(json.dumps(dict(benchmark='train_throughput', machine=_common.machine(),
                        argv=sys.argv[1:])), flush=True)
  for model in args.models:
    for batch in args.batches:
      quiet = _common.wait_quiet(max_wait=args.max_wait) if args.max_wait > 0 else {}
      command = [sys.executable, __file__, f'--worker={model},{batch}',
                 *(a for a in (argv if argv is not None else sys.argv[1:])
                   if not a.startswith('--worker'))]
      result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
      lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
      if result.returncode or not lines:
        lines = [dict(model=model, batch=batch, error=result.stderr.strip()[-2000:])]
      by_feed = {line.get('feed'): line for line in lines}
      if 'device' in by_feed and 'pipeline' in by_feed:
        lines.append(dict(model=model, batch=batch, pipeline_over_device=round(
            by_feed['pipeline']['images_per_s'] / by_feed['device']['images_per_s'], 3)))
      for line in lines:
        line.update(quiet)
        text = json.dumps(line)
        print(text, flush=True)
        if out:
          out.write(text + '\n')
          out.flush()


if __name__ == '__main__':
  main()
