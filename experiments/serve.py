r"""Real-time generation in the browser from a trained run.

python -m experiments.serve --workdir=runs/cgan_mnist [--port=8000] [--host=127.0.0.1]

then open http://127.0.0.1:8000/ : type digits (conditional runs) or a count (unconditional
ones), move the seed, truncation and latent-scale sliders, and the picture follows.
`/image.png?text=90210&seed=3&truncation=1.5&latent_scale=1&scale=4` returns the picture alone
(status 400 and the reason for a bad parameter).
"""
import errno
import os
import socket

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from jaxgan import console  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':  # before jax and TensorFlow load, which takes seconds
  console.take_stop_signals()

from absl import app, flags, logging

from jaxgan import interactive, run_folder, trainer
from jaxgan.run_folder import load_run_config
from jaxgan.state import generator_variables

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder written by experiments.train.')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on (0.0.0.0: every '
                            'interface of this machine).')
_PORT = flags.DEFINE_integer('port', 8000, 'Port to listen on.', lower_bound=1, upper_bound=65535)
flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv  # flags only: console.run refuses other arguments
  if not _HOST.value.strip():  # an unset shell variable: Python would listen on every interface
    raise app.UsageError('--host is empty, which listens on every interface: pass 127.0.0.1 '
                         '(this machine only), or 0.0.0.0 to mean every interface')
  console.setup_logging()
  try:  # bind first: a taken port should not wait for the restore and the compile
    server = interactive.DigitServer(_HOST.value, _PORT.value)
  except OSError as error:
    # A host that resolves to nothing (gaierror) or to no address of this machine is the
    # host's fault; anything else (a taken or privileged port) the port's.
    host_fault = (isinstance(error, socket.gaierror)
                  or error.errno == errno.EADDRNOTAVAIL)
    fix = 'a --host of this machine, e.g. 127.0.0.1' if host_fault else 'another --port'
    raise ValueError(f'cannot listen on {_HOST.value}:{_PORT.value} ({error.strerror}): pass '
                     f'{fix}') from None
  try:
    config = load_run_config(_WORKDIR.value)
    components, state = trainer.restore_run_state(_WORKDIR.value, config)
    renderer = interactive.Renderer(components.gan, generator_variables(state), int(state.step),
                                    latent_scale=run_folder.latent_scale(config))
    logging.info('serving %s at http://%s:%d/ (Ctrl-C stops)', _WORKDIR.value, _HOST.value,
                 server.server_address[1])
    server.serve(renderer, f'{config.model.name} on {config.data.name}, step {int(state.step)}')
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()


if __name__ == '__main__':
  console.run(main)
