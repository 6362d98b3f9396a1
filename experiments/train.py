r"""Train a GAN: python -m experiments.train --config=experiments/configs/dcgan_mnist.py --workdir=DIR

Override any config field with --config.FIELD=VALUE (e.g. --config.num_epochs=3). Running the
same command again resumes from DIR's newest checkpoint.
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from jaxgan import console  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':  # before jax and TensorFlow load, which takes seconds
  console.take_stop_signals()

from absl import flags
from ml_collections import config_flags

from jaxgan import distributed, parallel, trainer

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder: config, metrics, samples, checkpoints.')
config_flags.DEFINE_config_file('config', 'experiments/configs/dcgan_mnist.py',
                                'Training config file.', lock_config=True)
flags.mark_flags_as_required(['workdir'])
distributed.define_flags()  # multi-host: --coordinator_address --num_processes --process_id
flags.adopt_module_key_flags(distributed)  # listed in --help too


def main(argv):
  del argv  # flags only: console.run refuses other arguments
  console.setup_logging()
  config = console.config_from_flag(console.GAN_CONFIG)
  # Before the processes of a multi-process run wait for one another (see check_inputs).
  trainer.check_inputs(config, _WORKDIR.value)
  processes = distributed.initialize_from_flags()  # before any other jax call; 1: no-op
  # CPU: config.cpu_devices jax devices (data-parallel step; faster than intra-op threads there).
  parallel.configure_cpu_devices(config.get('cpu_devices', -1),
                                 divides=config.batch_size // processes if processes else None)
  trainer.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  console.run(main)
