r"""Time to export 60,000 generated digits to .npz, the way experiments.sample does it.

Stages, each timed: latents (`generate.latents`), compile (the first batch), generate (all
batches through the jitted generator, uint8 on the host), save (`generate.save_npz_atomic`,
experiments.sample's writer: uncompressed by default, compressed with `--compress`).
`total_s` is the whole export including compilation; the target on the 2-core CPU is <= 10 s
for the DCGAN. Weights come from a run folder's newest checkpoint with `--workdir`
(conditional runs: balanced labels), otherwise from a fresh initialisation (same cost; only a
compressed .npz's size differs).

  python benchmarks/generation_throughput.py                      # dcgan, 60,000 digits
  python benchmarks/generation_throughput.py --models=mlp,dcgan,kannada --num=60000
  python benchmarks/generation_throughput.py --workdir=runs/dcgan_mnist   # that run's model
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import _common  # pylint: disable=g-import-not-at-top,wrong-import-position


DEFAULT_MODELS = 'dcgan'
# jaxgan.models.MODEL_NAMES (a test keeps them equal), named here because importing jaxgan.models
# imports jax, which must come after pin_threads.
MODELS = ('mlp', 'dcgan', 'kannada', 'progressive')


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--models', type=_common.names_from(MODELS), default=None,
                      help=f'comma-separated, from {",".join(MODELS)} (default: {DEFAULT_MODELS})')
  parser.add_argument('--num', type=_common.int_at_least(1), default=60_000)
  parser.add_argument('--batch-size', type=_common.int_at_least(1), default=500,
                      help='generate.DEFAULT_BATCH')
  parser.add_argument('--repeats', type=_common.int_at_least(0), default=3,
                      help='timed exports after the first')
  parser.add_argument('--threads', type=_common.int_at_least(0), default=0,
                      help='CPUs to use (0: all)')
  parser.add_argument('--cpu-devices', type=_common.int_at_least(-1), default=0,
                      help='jax CPU devices: 0 one per core (as experiments.sample); -1 jax '
                      'default (one device); N')
  parser.add_argument('--compress', action='store_true',
                      help='write the compressed .npz (experiments.sample --compress)')
  parser.add_argument('--workdir', help='run folder to load the generator from (its model only)')
  parser.add_argument('--max-wait', type=float, default=600)
  args = parser.parse_args(argv)
  if args.workdir and args.models not in (None, [DEFAULT_MODELS]):
    parser.error("--workdir benchmarks that run's own model: drop --models")
  args.models = args.models or [DEFAULT_MODELS]
  return args


def export(gan, variables, num, batch_size, path, compress, jax, generate, np):
  times = {}
  start = time.perf_counter()
  z = generate.latents(jax.random.key(0), num, gan.latent_dim)
  jax.block_until_ready(z)
  times['latents_s'] = time.perf_counter() - start
  t = time.perf_counter()
  labels = generate.balanced_labels(num, gan.num_classes) if gan.num_classes else None
  digits = generate.generate(gan, variables, z, labels, batch_size=batch_size)
  times['generate_s'] = time.perf_counter() - t
  t = time.perf_counter()
  generate.save_npz_atomic(path, compress=compress, images=digits)
  times['save_s'] = time.perf_counter() - t
  times['total_s'] = time.perf_counter() - start
  assert digits.shape == (num, 28, 28) and digits.dtype == np.uint8
  return times, os.path.getsize(path)


def main(argv=None):
  args = parse_args(argv)
  if args.workdir and not os.path.isfile(os.path.join(args.workdir, 'config.json')):
    raise SystemExit(f'error: --workdir={args.workdir} is not a run folder (no config.json): '
                     'name a folder experiments.train wrote, or drop --workdir')
  _common.pin_threads(args.threads)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxgan import generate, parallel, trainer  # pylint: disable=g-import-not-at-top
  parallel.configure_cpu_devices(args.cpu_devices, divides=args.batch_size)
  from jaxgan.state import generator_variables, init_state  # pylint: disable=g-import-not-at-top
  from jaxgan.run_folder import load_run_config  # pylint: disable=g-import-not-at-top

  print(json.dumps(dict(benchmark='generation_throughput', machine=_common.machine(),
                        **_common.versions())), flush=True)
  for model in args.models:
    if args.workdir:
      config = load_run_config(args.workdir)
      model = config.model.name
      components, state = trainer.restore_run_state(args.workdir, config)
    else:
      from experiments.configs import default  # pylint: disable=g-import-not-at-top
      config = default.get_config()
      config.model.name = model
      components = trainer.build_components(config, total_steps=1)
      state = jax.jit(lambda key, c=components: init_state(c.gan, c.g_tx, c.d_tx, key))(
          jax.random.key(0))
    gan = components.gan
    variables = generator_variables(jax.device_get(state))
    quiet = _common.wait_quiet(max_wait=args.max_wait) if args.max_wait > 0 else {}
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, 'digits.npz')
      first, size = export(gan, variables, args.num, args.batch_size, path, args.compress, jax,
                           generate, np)
      runs = []
      with _common.ForeignLoad() as foreign:
        for _ in range(args.repeats):
          runs.append(export(gan, variables, args.num, args.batch_size, path, args.compress,
                             jax, generate, np)[0])
    median = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]} if runs else {}
    print(json.dumps(dict(
        model=model, num=args.num, batch_size=args.batch_size,
        first_export_s=round(first['total_s'], 2),  # compilation included
        compile_s=round(first['generate_s'] - median.get('generate_s', 0.0), 2),
        **median, digits_per_s=round(args.num / median['generate_s'], 1) if runs else None,
        npz_mb=round(size / 2**20, 1), compressed=args.compress, repeats=args.repeats,
        foreign_load=foreign.cores,
        devices=jax.local_device_count(),
        threads=len(os.sched_getaffinity(0)), weights=args.workdir or 'fresh init',
        **quiet)), flush=True)


if __name__ == '__main__':
  main()
