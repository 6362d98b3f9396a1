"""Two processes on this machine train like one: `experiments.train` with a localhost
coordinator (jax.distributed, gloo collectives on CPU), each process 1 CPU device reading its
own half of every global batch, against one process with 2 CPU devices; and the settings'
errors."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jaxgan import distributed, run_folder
from tests.idx_files import write_manual_dir

REPO = Path(__file__).resolve().parent.parent
_LOG_LINE = re.compile(r'step (\d+)/\d+  d_loss (\S+)  g_loss (\S+)  D\(real\) (\S+)  D\(fake\) (\S+)')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _train(workdir, data, *extra, wait=True):
  manual, data_dir = data
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # real device counts
  command = [sys.executable, '-m', 'experiments.train', '--config=experiments/configs/tiny.py',
             f'--workdir={workdir}', f'--config.data.manual_dir={manual}',
             f'--config.data.data_dir={data_dir}', '--config.num_epochs=1', *extra]
  process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  return process.communicate(timeout=600) if wait else process


def _train_two_processes(workdir, extras=((), ())) -> list[tuple[int, str]]:
  """Two processes of one run (1 CPU device each, `extras[i]` added to process i's flags) on
  tiny MNIST in a data folder not prepared yet: [(exit status, output)] by process."""
  manual = workdir.parent / 'manual'
  write_manual_dir(manual, {'mnist': {'train': 300, 'test': 50}})
  port = _free_port()
  processes = [_train(workdir, (manual, workdir.parent / 'tfds'), '--config.cpu_devices=1',
                      f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                      f'--process_id={i}', *extra, wait=False) for i, extra in enumerate(extras)]
  outputs = [p.communicate(timeout=600)[0] for p in processes]
  return [(p.returncode, out) for p, out in zip(processes, outputs)]


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(line).items() if k != 'images_per_s'} for line in f]


def test_two_processes_train_like_one_process_with_two_devices(tmp_path):
  # The two processes share a data folder in which the data is not prepared yet: process 0
  # prepares it, the others wait (together they would race to rename tfds's folder).
  finished = _train_two_processes(tmp_path / 'multi')
  for status, out in finished:
    assert status == 0, out[-3000:]
    assert 'global batch 32 over 2 devices' in out, out[-3000:]
  outputs = [out for _, out in finished]
  # One process, 2 CPU devices.
  output, _ = _train(tmp_path / 'single', (tmp_path / 'manual', tmp_path / 'tfds'),
                     '--config.cpu_devices=2')
  single = _metrics(tmp_path / 'single')
  assert [row['step'] for row in single] == [2, 4, 6, 8], output[-3000:]
  # Process 0 writes metrics.jsonl; both log every interval's values.
  multi = _metrics(tmp_path / 'multi')
  assert multi == single
  logged = [[tuple(m.groups()) for m in _LOG_LINE.finditer(out)] for out in outputs]
  want = [(str(r['step']), *(f"{r[k]:.{n}f}" for k, n in
                             (('d_loss', 4), ('g_loss', 4), ('d_real', 3), ('d_fake', 3))))
          for r in single]
  assert logged[0] == logged[1] == want


def test_a_process_that_fails_ends_the_run_in_one_line_each(tmp_path):
  """Process 1 refuses its config at once; process 0, left waiting in the first collective,
  ends when that times out (30 s), naming itself, instead of waiting for jax's heartbeat
  timeout (~100 s) and aborting."""
  finished = _train_two_processes(tmp_path / 'run', extras=((), ('--config.batch_size=33',)))
  assert [status for status, _ in finished] == [1, 1], finished[0][1][-3000:]
  outputs = [out for _, out in finished]
  assert outputs[1].strip().splitlines()[-1] == (
      'error: batch_size=33 is not divisible by the 2 devices: set --config.batch_size to a '
      'multiple of 2')
  assert outputs[0].strip().splitlines()[-1] == (
      'error: JaxRuntimeError in process 0 of 2 (traceback above; if another process failed '
      'first, its log says why): this one stops now, the others when they miss it')


def test_missing_data_files_are_named_by_every_process(tmp_path):
  """Not only by process 0, which prepares the data: the others, waiting for it at a barrier,
  ended with a C++ abort and a stack dump when it failed."""
  nowhere = tmp_path / 'nowhere'
  finished = _train_two_processes(tmp_path / 'run', extras=[
      (f'--config.data.manual_dir={nowhere}',)] * 2)
  for status, out in finished:
    assert status == 1, out[-3000:]
    assert out.strip().splitlines()[-1].startswith(
        f'error: folder {nowhere / "mnist"} not found: put train-images-idx3-ubyte.gz'), (
            out[-3000:])
  assert not (tmp_path / 'tfds').exists()


def test_a_folder_in_training_is_refused_by_every_process(tmp_path):
  """Only process 0 takes the training lock, after the processes have joined: its refusal ended
  the others with a C++ abort. Each now asks before joining."""
  workdir = tmp_path / 'run'
  workdir.mkdir()
  with run_folder.training_lock(str(workdir)):  # another training of the folder
    finished = _train_two_processes(workdir)
  for status, out in finished:
    assert status == 1, out[-3000:]
    assert out.strip().splitlines()[-1].startswith(
        f'error: {workdir} is being trained by another process (pid {os.getpid()} on '), (
            out[-3000:])
  assert os.listdir(workdir) == [run_folder.LOCK_FILE]


_LIBRARY_STEP = """
import sys
import jax, numpy as np, optax
from jaxgan import distributed, losses, models, parallel, state, train_step
port, process_id = sys.argv[1], int(sys.argv[2])
distributed.initialize(f'127.0.0.1:{port}', 2, process_id)
gan = models.build('mlp', axis_name=parallel.DATA_AXIS)
tx = optax.adam(1e-4)
mesh = parallel.make_mesh()
step = parallel.shard_step(train_step.make_train_step(gan, losses.get('bce'), tx, tx,
                                                      axis_name=parallel.DATA_AXIS), mesh)
gan_state = jax.jit(lambda key: state.init_state(gan, tx, tx, key),
                    out_shardings=parallel.replicated(mesh))(jax.random.key(0))
# Process 1 passes pixels as floats: only its own rows show it.
images = np.full((4, 28, 28, 1), 255.0 if process_id else 0.0, np.float32)
batch = {'image': jax.make_array_from_process_local_data(parallel.batch_sharded(mesh), images)}
try:
  step(gan_state, batch, jax.random.key(1))
except ValueError as error:
  print('refused:', error)
"""


def test_a_batch_one_process_refuses_is_refused_by_every_process(tmp_path):
  """The first call's value check sees only its process's rows: process 1 refused its batch
  alone, and process 0 waited in the step's first collective until jax ended it."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # 1 CPU device each
  port = _free_port()
  processes = [subprocess.Popen([sys.executable, '-c', _LIBRARY_STEP, str(port), str(i)],
                                cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in processes]
  problem = ("batch['image'] holds floats in [255, 255], not [-1, 1]: pass uint8 pixels (the "
             'step maps them), or pixels / 127.5 - 1')
  assert [p.returncode for p in processes] == [0, 0], outputs
  assert outputs[0].strip().splitlines()[-1] == f'refused: process 1: {problem}', outputs[0]
  assert outputs[1].strip().splitlines()[-1] == f'refused: {problem}', outputs[1]


def test_sigterm_ends_a_process_waiting_for_the_others(tmp_path):
  """jax waits for the others in C++ for up to 5 minutes, where Python's handlers cannot
  run: SIGTERM and Ctrl-C did nothing until jax aborted the process."""
  manual = tmp_path / 'manual'
  write_manual_dir(manual, {'mnist': {'train': 300, 'test': 50}})
  process = _train(tmp_path / 'run', (manual, tmp_path / 'tfds'), '--num_processes=2',
                   f'--coordinator_address=127.0.0.1:{_free_port()}', '--process_id=0',
                   wait=False)
  for line in process.stdout:
    if 'waiting up to 300 s for all 2 processes to connect at 127.0.0.1:' in line:
      break
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=30) == -signal.SIGTERM
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('address', ['127.0.0.1', '127.0.0.1:abc', ':1234', 'h:0', 'h:65536',
                                     '::1', 'fe80::1:8476', 'h:\u00b2'])
def test_a_coordinator_address_that_is_not_host_and_port_is_named(address):
  """jax failed on these with an IndexError, or a segmentation fault (a port not a number);
  an IPv6 host needs brackets."""
  with pytest.raises(ValueError, match=rf'^--coordinator_address={re.escape(address)}: give '
                                       r'HOST:PORT of process 0, a port in 1..65535 '):
    distributed.resolve(address, 2, 0, environ={})
  for good in ('[::1]:1234', '10.0.0.2:65535', 'node-3.cluster:1'):
    assert distributed.resolve(good, 2, 0, environ={}).coordinator_address == good


def test_signals_end_a_waiting_process_unless_it_ignores_them():
  """A shell's background job (`cmd &`, as in the README's loop) starts with SIGINT ignored."""
  before = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    with distributed._signals_end_the_process():  # pylint: disable=protected-access
      assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
      assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
  finally:
    signal.signal(signal.SIGINT, before)


def test_settings_need_a_coordinator_and_a_valid_process_id():
  assert not distributed.resolve(environ={}).requested  # nothing set: one process
  with pytest.raises(ValueError, match='--coordinator_address needs --process_id'):
    distributed.resolve('127.0.0.1:1234', 2, environ={})
  with pytest.raises(ValueError, match=r'process_id=2 must be in \[0, num_processes=2\)'):
    distributed.resolve('127.0.0.1:1234', 2, 2, environ={})
  with pytest.raises(ValueError, match='need --coordinator_address'):
    distributed.resolve(num_processes=2, process_id=0, environ={})
  env = {'JAXGAN_COORDINATOR_ADDRESS': 'h:1', 'JAXGAN_NUM_PROCESSES': '4',
         'JAXGAN_PROCESS_ID': '3'}
  assert distributed.resolve(process_id=1, environ=env) == distributed.Settings('h:1', 4, 1)
  with pytest.raises(ValueError, match="JAXGAN_NUM_PROCESSES='x' is not a valid int"):
    distributed.resolve(environ={'JAXGAN_NUM_PROCESSES': 'x'})


def test_explicit_settings_override_automatic_detection_and_never_mix_with_it():
  auto = {'JAXGAN_DISTRIBUTED': 'auto'}
  assert distributed.resolve(environ=auto) == distributed.Settings(auto=True)
  # A flag given on the command line wins over the environment's auto.
  assert distributed.resolve('h:1', 2, 1, environ=auto) == distributed.Settings('h:1', 2, 1)
  for settings in (dict(coordinator_address='h:1'), dict(num_processes=2)):
    with pytest.raises(ValueError, match='JAXGAN_DISTRIBUTED=auto.*exclude each other'):
      distributed.resolve(**settings, auto=True, environ={})
  with pytest.raises(ValueError, match='exclude each other'):
    distributed.resolve(environ={**auto, 'JAXGAN_COORDINATOR_ADDRESS': 'h:1'})
  with pytest.raises(ValueError, match="JAXGAN_DISTRIBUTED='true': its one value is auto"):
    distributed.resolve(environ={'JAXGAN_DISTRIBUTED': 'true'})
