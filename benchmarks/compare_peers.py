r"""jaxgan's DCGAN training step against the same GAN in Keras, PyTorch and plain JAX.

The peers are the programs in ../shared/bench/peers/ (see its README): the papers' Keras DCGAN
with a `tf.function` train step, the same network in PyTorch (eager), and a plain Flax + optax
`jax.jit` step; optionally Keras eager and torch.compile (`--impls`). All of them: same
architecture, losses, optimisers and hyper-parameters (Keras initialisers, LeakyReLU 0.3,
BatchNorm 0.99/1e-3, Adam(1e-4, eps 1e-7)); one step = a discriminator update then a generator
update with fresh noise; a fixed random batch already in memory; the losses read back after
every step (a sync point). jaxgan's step is the trainer's own program (`make_train_step` under
`parallel.shard_step`, state donated) run by this script with `--worker` in the same protocol:
`jaxgan` with the config's `cpu_devices` (1 jax CPU device, as the trainer by default),
`jaxgan_per_core` with `cpu_devices=0` (one jax CPU device per core, the step data-parallel).

Each run is a separate process with the same `--threads` (CPU affinity for XLA, intra/inter-op
threads for TF, torch.set_num_threads). Runs are interleaved like run_all.sh: for each round,
for each batch size, every implementation once; before every run the script waits until other
processes use < 0.15 core for 5 s, records the foreign load during the timed loop, and re-runs
(up to 3 attempts) a run that saw >= 0.15 core of foreign load. The table uses the median over
rounds of the clean runs (all runs if none was clean, flagged). Ratios: `impl/jaxgan` is each
implementation's images/s over that of the first jaxgan variant in `--impls`; `jaxgan x` is that
variant's speed-up over it.

The peers need one Python with all frameworks (none of them is a jaxgan dependency):

  python3 -m venv /tmp/peers-venv && /tmp/peers-venv/bin/pip install tensorflow-cpu==2.21.0 \
      keras==3.15.1 torch==2.13.0 jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 optax==0.2.8

(torch 2.13.0's CPU wheel installs from the local wheel directory of this machine). Then, from
the repository root, with the project's own Python (the one jaxgan is installed in):

  python benchmarks/compare_peers.py --peers-python=/tmp/peers-venv/bin/python \
      --threads=2 --rounds=3 --steps=200 --warmup=20

On a GPU machine the jax programs use the GPU by themselves; `--torch-device=cuda` runs the
PyTorch peers there too, unchanged (CUDA becomes their default device). See benchmarks/on_gpu.sh.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

PEERS = {  # impl name in the peers' JSON -> command line (relative to the peers folder)
    'keras_tf_function': ['keras_dcgan.py'],
    'torch_eager': ['torch_dcgan.py'],
    'jax_flax_jit': ['jax_dcgan.py'],
    'keras_eager': ['keras_dcgan.py', '--eager'],
    'torch_compile': ['torch_dcgan.py', '--compile'],
}
TORCH_PEERS = ('torch_eager', 'torch_compile')
# Runs a torch peer unchanged on --torch-device: its modules and noise are created on the default
# device, and its fixed batch (made with torch.from_numpy, which ignores that default) is moved.
TORCH_ON_DEVICE = '''import runpy, sys, torch
device = sys.argv.pop(1)
torch.set_default_device(device)
from_numpy = torch.from_numpy
torch.from_numpy = lambda array: from_numpy(array).to(device)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''
PEER_VERSIONS = '''import importlib
for name in ('tensorflow', 'keras', 'torch', 'jax', 'flax', 'optax'):
  try:
    print(name, getattr(importlib.import_module(name), '__version__', '?'), end='; ')
  except ImportError:
    print(name, 'missing', end='; ')
'''
JAXGAN_CPU_DEVICES = {'jaxgan': None, 'jaxgan_per_core': 0}  # None: the config's cpu_devices
DEFAULT_IMPLS = 'jaxgan,jaxgan_per_core,keras_tf_function,torch_eager,jax_flax_jit'
CLEAN_LOAD = 0.15
# Analytic FLOPs of one step per image, as ../shared/bench/peers/run_all.sh counts them
# (2 FLOP per multiply-add; batch norm, activations and Adam ignored, < 1%).
_G = 100 * 3136 + 7 * 7 * 64 * 25 * 32 + 14 * 14 * 32 * 25  # generator forward MACs
_D_C1, _D_C2, _D_DENSE = 14 * 14 * 32 * 25, 7 * 7 * 64 * 25 * 32, 3136
_D = _D_C1 + _D_C2 + _D_DENSE
MFLOP_PER_IMAGE = 2 * ((_G + 2 * _D + 2 * (_D + _D_C2 + _D_DENSE))
                       + (_G + _D + _D + _G + (7 * 7 * 64 * 25 * 32 + 14 * 14 * 32 * 25))) / 1e6


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--peers-python', default=os.environ.get('PEERS_PYTHON',
                                                               '/tmp/peers-venv/bin/python'))
  parser.add_argument('--peers-dir', default=str(REPO.parent / 'shared' / 'bench' / 'peers'))
  parser.add_argument('--impls', type=_common.names_from([*JAXGAN_CPU_DEVICES, *PEERS]),
                      default=DEFAULT_IMPLS,
                      help=f'comma-separated, from {",".join([*JAXGAN_CPU_DEVICES, *PEERS])}')
  parser.add_argument('--batches', type=_common.positive_ints, default='64,256')
  parser.add_argument('--threads', type=_common.int_at_least(0), default=2,
                      help='CPUs each run may use (0: all)')
  parser.add_argument('--steps', type=_common.int_at_least(1), default=200)
  # At least 1: the peers' programs take the time after their warm-up steps as the timing's
  # start, and jaxgan's first step compiles.
  parser.add_argument('--warmup', type=_common.int_at_least(1), default=20)
  parser.add_argument('--rounds', type=_common.int_at_least(1), default=3)
  parser.add_argument('--torch-device', default='cpu',
                      help="device of the PyTorch peers, e.g. cuda (the others use jax's default)")
  parser.add_argument('--attempts', type=_common.int_at_least(1), default=3,
                      help='runs per slot while contaminated')
  parser.add_argument('--max-wait', type=float, default=1200,
                      help='seconds to wait for a quiet machine before each run (0: no wait)')
  parser.add_argument('--out', help='append the JSON lines to this file too')
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--batch-size', type=_common.int_at_least(1), default=64,
                      help=argparse.SUPPRESS)
  parser.add_argument('--cpu-devices', type=_common.int_at_least(-1), default=None,
                      help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def worker(args) -> dict:
  """jaxgan's dcgan step in the peers' protocol; returns their JSON fields."""
  _common.pin_threads(args.threads)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from experiments.configs import dcgan_mnist  # pylint: disable=g-import-not-at-top
  from jaxgan import parallel  # pylint: disable=g-import-not-at-top

  batch = args.batch_size
  config = dcgan_mnist.get_config()
  cpu_devices = config.cpu_devices if args.cpu_devices is None else args.cpu_devices
  step, state, mesh = _common.training_step('dcgan', config, batch, cpu_devices=cpu_devices)
  real = jax.device_put(np.random.RandomState(0).uniform(-1, 1, (batch, 28, 28, 1))
                        .astype(np.float32), parallel.batch_sharded(mesh))
  key = jax.random.key(1)
  losses, times = [], []
  start = time.perf_counter()
  foreign = _common.ForeignLoad()  # counts the timed steps only
  for i in range(args.warmup + args.steps):
    if i == args.warmup:
      warm_s = time.perf_counter() - start
      foreign.__enter__()
    t = time.perf_counter()
    state, measured = step(state, {'image': real}, key)
    losses.append((float(measured['d_loss']), float(measured['g_loss'])))  # sync, as peers
    if i >= args.warmup:
      times.append(time.perf_counter() - t)
  foreign.__exit__(None, None, None)
  losses = np.array(losses)
  count = lambda tree: int(sum(x.size for x in jax.tree.leaves(tree)))
  return {
      'impl': 'jaxgan', 'batch_size': batch, 'steps': args.steps,
      'images_per_s': round(batch * args.steps / sum(times), 1),
      'step_ms_median': round(1e3 * float(np.median(times)), 2),
      'd_loss_first': round(float(losses[0, 0]), 4), 'd_loss_last': round(float(losses[-1, 0]), 4),
      'g_loss_first': round(float(losses[0, 1]), 4), 'g_loss_last': round(float(losses[-1, 1]), 4),
      'losses_ok': bool(np.isfinite(losses).all() and (losses[0] != losses[-1]).all()),
      'warmup_s': round(warm_s, 2), 'params_g': count(state.g_params),
      'params_d': count(state.d_params), 'foreign_load_cores': foreign.cores,
      'devices': jax.device_count(), 'device_kind': jax.devices()[0].device_kind,
      'threads': len(os.sched_getaffinity(0)),
      'lib': 'jaxgan ' + ' '.join(f'{k} {v}' for k, v in _common.versions().items()
                                  if k in ('jax', 'flax', 'optax'))}


def run_once(impl, batch, args) -> dict:
  common = ['--batch-size', str(batch), '--steps', str(args.steps), '--warmup',
            str(args.warmup), '--threads', str(args.threads)]
  if impl in JAXGAN_CPU_DEVICES:
    devices = JAXGAN_CPU_DEVICES[impl]
    command = [sys.executable, str(Path(__file__).resolve()), '--worker', *common,
               *([] if devices is None else ['--cpu-devices', str(devices)])]
    cwd = REPO
  elif impl in TORCH_PEERS and args.torch_device != 'cpu':
    # Only off the CPU: torch.set_default_device installs a hook on every torch call (~0.3-0.5
    # ms of a 40-70 ms CPU step), so on the CPU the peer runs as it is.
    command = [args.peers_python, '-c', TORCH_ON_DEVICE, args.torch_device, *PEERS[impl], *common]
    cwd = args.peers_dir
  else:
    command, cwd = [args.peers_python, *PEERS[impl], *common], args.peers_dir
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)
  lines = [line for line in result.stdout.splitlines() if line.startswith('{')]
  if result.returncode or not lines:
    return {'impl': impl, 'batch_size': batch, 'failed': True,
            'error': (result.stderr or result.stdout).strip()[-1500:]}
  record = json.loads(lines[-1])
  record['impl'] = impl  # the peers name themselves the same way; keep ours canonical
  return record


def table(records, impls, batches) -> str:
  rows, medians = [], {}
  for batch in batches:
    for impl in impls:
      runs = [r for r in records if r['impl'] == impl and r['batch_size'] == batch
              and not r.get('failed')]
      clean = [r for r in runs if r['foreign_load_cores'] < CLEAN_LOAD]
      use = clean or runs
      if use:
        medians[impl, batch] = (statistics.median(r['images_per_s'] for r in use), use,
                                bool(clean))
  header = (f"{'implementation':20s} {'batch':>5s} {'img/s':>8s} {'runs':>4s} {'ms/step':>8s} "
            f"{'impl/jaxgan':>11s} {'jaxgan x':>8s} {'GFLOP/s':>8s} {'foreign':>7s} "
            f"{'losses':>6s}")
  rows.append(header)
  reference = next((impl for impl in impls if impl in JAXGAN_CPU_DEVICES), None)
  for batch in batches:
    ours = medians.get((reference, batch), (float('nan'),))[0]
    for impl in impls:
      if (impl, batch) not in medians:
        rows.append(f'{impl:20s} {batch:5d}   FAILED')
        continue
      value, use, clean = medians[impl, batch]
      rows.append(
          f'{impl:20s} {batch:5d} {value:8.1f} {len(use):4d} '
          f"{statistics.median(r['step_ms_median'] for r in use):8.2f} {value / ours:11.2f} "
          f'{ours / value:8.2f} {value * MFLOP_PER_IMAGE / 1e3:8.1f} '
          f"{max(r['foreign_load_cores'] for r in use):7.2f}"
          f"{'' if clean else '!'} {str(all(r['losses_ok'] for r in use)):>6s}")
  spread = {f'{i}@{b}': sorted(r['images_per_s'] for r in medians[i, b][1])
            for (i, b) in medians}
  rows.append(f'images/s of each run: {json.dumps(spread)}')
  rows.append(f'{MFLOP_PER_IMAGE:.2f} MFLOP per image per step; foreign = max cores other '
              f'processes used during a counted run (! = no clean run, all runs counted)')
  return '\n'.join(rows)


def main(argv=None):
  args = parse_args(argv)
  if args.worker:
    print(json.dumps(worker(args)), flush=True)
    return
  impls, batches = args.impls, args.batches
  peers = set(impls) - set(JAXGAN_CPU_DEVICES)
  if peers and not (Path(args.peers_dir) / 'keras_dcgan.py').exists():
    raise SystemExit(f'error: no peer programs in {args.peers_dir}: pass --peers-dir=PATH to '
                     'the folder holding keras_dcgan.py, torch_dcgan.py and jax_dcgan.py')
  if peers and not Path(args.peers_python).exists():
    raise SystemExit(f'error: no Python at {args.peers_python}: pass --peers-python=PATH to a '
                     'Python with tensorflow-cpu, keras, torch, jax, flax and optax')
  _common.check_out_file('--out', args.out)
  out = open(args.out, 'a') if args.out else None  # pylint: disable=consider-using-with

  def emit(record):
    text = json.dumps(record)
    print(text, flush=True)
    if out:
      out.write(text + '\n')
      out.flush()

  header = {'benchmark': 'compare_peers', 'machine': _common.machine(),
            'jaxgan_python': sys.executable, 'threads': args.threads, 'steps': args.steps,
            'warmup': args.warmup, 'rounds': args.rounds, 'torch_device': args.torch_device,
            'command': ' '.join(sys.argv)}
  if peers:  # the peers' Python is only needed, and only asked for versions, when they run
    peer_versions = subprocess.run(
        [args.peers_python, '-c', PEER_VERSIONS], capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    header.update(peers_python=args.peers_python, peers_versions=peer_versions.stdout.strip()
                  or peer_versions.stderr.strip()[-300:])
  emit(header)
  records = []
  for round_index in range(args.rounds):
    for batch in batches:
      for impl in impls:
        for attempt in range(1, args.attempts + 1):
          quiet = _common.wait_quiet(max_wait=args.max_wait) if args.max_wait > 0 else {}
          record = dict(run_once(impl, batch, args), round=round_index + 1, attempt=attempt,
                        **quiet)
          records.append(record)
          emit(record)
          if record.get('failed') or record['foreign_load_cores'] < CLEAN_LOAD:
            break
  print()
  print(table(records, impls, batches), flush=True)


if __name__ == '__main__':
  main()
