r"""Generate digits from a trained run's newest checkpoint.

python -m experiments.sample --workdir=DIR --num=1000 --out=digits.npz [--grid=digits.png]
writes `images`, uint8 (N, 28, 28) with 0 = background as in the IDX files.
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax
import numpy as np
from absl import app, flags, logging

from jaxgan import console, generate, images, trainer
from jaxgan.checkpoint import CheckpointStore
from jaxgan.run_folder import load_run_config
from jaxgan.state import generator_variables

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder written by experiments.train.')
_NUM = flags.DEFINE_integer('num', 1000, 'How many digits to generate.', lower_bound=1)
_OUT = flags.DEFINE_string('out', None, 'Output .npz path.')
_GRID = flags.DEFINE_string('grid', None, 'Optional PNG of the first digits as a square grid.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the latent vectors.')
_BATCH = flags.DEFINE_integer('batch_size', 2000, 'Digits generated per call.', lower_bound=1)
flags.mark_flags_as_required(['workdir'])


def save_npz_atomic(path: str, **arrays) -> None:
  """Write next to `path`, then rename, so an existing file is never left half-written."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp-{os.getpid()}.npz'
  np.savez_compressed(tmp, **arrays)
  os.replace(tmp, path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not _OUT.value and not _GRID.value:
    raise app.UsageError('nothing to write: give --out=FILE.npz and/or --grid=FILE.png')
  if _OUT.value and not _OUT.value.endswith('.npz'):
    raise app.UsageError(f'--out={_OUT.value} must end in .npz')
  console.setup_logging()
  config = load_run_config(_WORKDIR.value)
  components = trainer.build_components(config, total_steps=1)
  store = CheckpointStore(_WORKDIR.value, keep=config.keep_checkpoints)
  state = store.restore(trainer.abstract_state(components))
  step = int(state.step)
  gan = components.gan
  z = generate.latents(jax.random.key(_SEED.value), _NUM.value, gan.latent_dim)
  digits = generate.generate(gan, generator_variables(state), z, batch_size=_BATCH.value,
                             step=step)
  if _OUT.value:
    save_npz_atomic(_OUT.value, images=digits)
    logging.info('wrote %d digits from step %d to %s', len(digits), step, _OUT.value)
  if _GRID.value:
    rows = max(1, int(np.sqrt(min(len(digits), 100))))
    images.save_atomic(images.grid(digits, rows, scale=config.sample_grid_scale), _GRID.value)
    logging.info('wrote a %dx%d grid to %s', rows, rows, _GRID.value)
  store.close()


if __name__ == '__main__':
  console.run(main)
