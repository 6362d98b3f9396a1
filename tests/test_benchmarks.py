"""The benchmark scripts run end to end and print the JSON they document (no timings are
asserted: they are measurements, not properties)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.idx_files import write_manual_dir

REPO = Path(__file__).resolve().parent.parent


def test_generation_throughput_prints_one_json_line_per_model(tmp_path):
  result = subprocess.run(
      [sys.executable, 'benchmarks/generation_throughput.py', '--models=mlp', '--num=50',
       '--batch-size=20', '--repeats=1', '--max-wait=0'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  header, line = (json.loads(text) for text in result.stdout.strip().splitlines())
  assert header['benchmark'] == 'generation_throughput'
  assert line['model'] == 'mlp' and line['num'] == 50 and line['compressed'] is False
  assert line['digits_per_s'] > 0 and line['repeats'] == 1
  assert line['total_s'] >= line['generate_s'] + line['save_s']


def test_compare_peers_runs_jaxgan_on_one_device_and_on_one_per_core():
  """jaxgan alone (no peers needed): both variants run the step, each row of the table gives
  its ratio to the first jaxgan variant listed."""
  env = {key: value for key, value in os.environ.items() if key != 'XLA_FLAGS'}  # jax's default
  result = subprocess.run(
      [sys.executable, 'benchmarks/compare_peers.py', '--impls=jaxgan,jaxgan_per_core',
       '--batches=4', '--steps=2', '--warmup=1', '--rounds=1', '--max-wait=0',
       '--peers-python=/nonexistent/python'],
      cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  assert 'peers_python' not in records[0]  # the header names no peers' Python when none ran
  runs = {record['impl']: record for record in records[1:]}
  assert runs['jaxgan']['devices'] == 1
  cores = len(os.sched_getaffinity(0))
  assert runs['jaxgan_per_core']['devices'] == max(count for count in (1, 2, 4) if count <= cores)
  assert all(run['losses_ok'] and run['images_per_s'] > 0 for run in runs.values())
  rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()
          if line.startswith('jaxgan')}
  assert rows['jaxgan'][5:7] == ['1.00', '1.00']  # impl/jaxgan, jaxgan x of the reference


def test_train_throughput_times_both_feeds_on_two_devices(tmp_path):
  """One (model, batch) on tiny IDX files: a line per feed with its settings, then
  pipeline/device; repeats lengthened to --min-repeat-s; nothing recompiles after each feed's
  first step; the pipeline feeds the step host arrays, as the trainer does on CPU."""
  write_manual_dir(tmp_path / 'manual', {'mnist': {'train': 64, 'test': 8}})
  env = {key: value for key, value in os.environ.items() if key != 'XLA_FLAGS'}
  env.update(JAXGAN_MANUAL_DIR=str(tmp_path / 'manual'), TFDS_DATA_DIR=str(tmp_path / 'tfds'))
  result = subprocess.run(
      [sys.executable, 'benchmarks/train_throughput.py', '--models=mlp', '--batches=8',
       '--steps=3', '--min-repeat-s=0.2', '--repeats=2', '--warmup=0', '--cpu-devices=2',
       '--max-in-flight=2', '--max-wait=0'],
      cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  header, *lines = (json.loads(text) for text in result.stdout.strip().splitlines())
  assert header['benchmark'] == 'train_throughput'
  by_feed = {line.get('feed'): line for line in lines}
  assert set(by_feed) == {'device', 'pipeline', None}
  for feed in ('device', 'pipeline'):
    line = by_feed[feed]
    assert (line['model'], line['batch'], line['devices'], line['max_in_flight']) == (
        'mlp', 8, 2, 2)
    # 3 steps of batch 8 take a few ms: lengthened to 0.2 s repeats, the same for both feeds.
    assert line['steps'] > 3 and line['steps'] == by_feed['device']['steps']
    assert len(line['images_per_s_repeats']) == 2
    assert line['images_per_s'] > 0 and line['recompiled_after_first_step'] is False
    assert line['host_batch_ms'] > 0
    assert line['prefetch'] == -1 and line['host_batches'] is True
  ratio = by_feed[None]['pipeline_over_device']
  assert ratio == round(by_feed['pipeline']['images_per_s'] / by_feed['device']['images_per_s'],
                        3)


def test_train_throughput_says_which_feed_recompiled(tmp_path, monkeypatch):
  """A pipeline whose batches change dtype after two recompiles the step on the pipeline feed
  only: one counter for both feeds marked the device feed's line too."""
  from benchmarks import train_throughput  # pylint: disable=g-import-not-at-top
  from jaxgan import data  # pylint: disable=g-import-not-at-top
  write_manual_dir(tmp_path / 'manual', {'mnist': {'train': 64, 'test': 8}})
  monkeypatch.setenv('JAXGAN_MANUAL_DIR', str(tmp_path / 'manual'))
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))

  class FloatsAfterTwo:
    def __init__(self, batches):
      self.batches, self.served = batches, 0

    def __getattr__(self, name):
      return getattr(self.batches, name)

    def __next__(self):
      self.served += 1
      batch = next(self.batches)
      return batch if self.served <= 2 else dict(batch, image=np.float32(batch['image']))

  training_batches = data.training_batches
  monkeypatch.setattr(data, 'training_batches',
                      lambda *args, **kwargs: FloatsAfterTwo(training_batches(*args, **kwargs)))
  lines = train_throughput.worker(train_throughput.parse_args(
      ['--worker=mlp,8', '--steps=2', '--min-repeat-s=0', '--repeats=1', '--warmup=1']))
  assert {line['feed']: line['recompiled_after_first_step'] for line in lines} == {
      'device': False, 'pipeline': True}


def test_train_throughput_rejects_a_pacing_limit_below_one():
  result = subprocess.run(
      [sys.executable, 'benchmarks/train_throughput.py', '--max-in-flight=0'],
      cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 2
  assert '--max-in-flight=0 must be >= 1' in result.stderr


@pytest.mark.parametrize('script, argument, problem', [
    # These exited 0 with the error inside a JSON line, printed FAILED and exited 0, or ended in
    # a traceback from jax (a batch of 0), numpy or a division by zero.
    ('train_throughput', '--models=foo', 'argument --models: unknown foo: choose from '
     'mlp,dcgan,kannada'),
    ('train_throughput', '--batches=64,0', 'argument --batches: must be >= 1, got 0'),
    ('train_throughput', '--feeds=foo', 'argument --feeds: unknown foo: choose from '
     'device,pipeline'),
    ('train_throughput', '--min-repeat-s=nan', 'argument --min-repeat-s: must be a finite '
     'number >= 0, got nan'),
    ('train_throughput', '--batches=64,6,3 --cpu-devices=4', '--batches=6,3 cannot be split '
     'over --cpu-devices=4: give multiples of 4'),
    ('compare_peers', '--batches=-4', 'argument --batches: must be >= 1, got -4'),
    # The peers' programs start their clocks after the warm-up steps: with none they crashed.
    ('compare_peers', '--warmup=0', 'argument --warmup: must be >= 1, got 0'),
    ('compare_peers', '--impls=jaxgan,foo', 'argument --impls: unknown foo: choose from '
     'jaxgan,jaxgan_per_core,keras_tf_function,torch_eager,jax_flax_jit,keras_eager,'
     'torch_compile'),
    ('generation_throughput', '--models=foo', 'argument --models: unknown foo: choose from '
     'mlp,dcgan,kannada,progressive'),
    ('generation_throughput', '--num=-1', 'argument --num: must be >= 1, got -1'),
    ('generation_throughput', '--num=0', 'argument --num: must be >= 1, got 0'),
    ('generation_throughput', '--threads=-1', 'argument --threads: must be >= 0, got -1'),
    ('generation_throughput', '--batch-size=0', 'argument --batch-size: must be >= 1, got 0'),
    ('profile_step', '--batch=0', 'argument --batch: must be >= 1, got 0'),
    ('profile_step', '--steps=x', "argument --steps: 'x' is not an integer"),
    ('conv_ceiling', '--batch=0', 'argument --batch: must be >= 1, got 0'),
    ('conv_ceiling', '--kernel=0', 'argument --kernel: must be >= 1, got 0'),
])
def test_a_bad_argument_is_one_usage_error_before_any_work(script, argument, problem):
  result = subprocess.run([sys.executable, f'benchmarks/{script}.py', *argument.split()],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stdout == ''
  assert result.stderr.splitlines()[-1] == f'{script}.py: error: {problem}'


def test_an_output_path_that_cannot_be_written_is_one_error_line(tmp_path):
  """--out naming a folder was an IsADirectoryError traceback; a --workdir that is no run
  folder a FileNotFoundError one."""
  for script, argument, line in (
      ('train_throughput', f'--out={tmp_path}',
       f'error: --out={tmp_path} is a folder: name a file to append the JSON lines to'),
      ('train_throughput', f'--out={tmp_path / "none" / "t.jsonl"}',
       f'error: --out={tmp_path / "none" / "t.jsonl"}: no folder {tmp_path / "none"}: create '
       'it or name another file'),
      ('generation_throughput', f'--workdir={tmp_path / "none"}',
       f'error: --workdir={tmp_path / "none"} is not a run folder (no config.json): name a '
       'folder experiments.train wrote, or drop --workdir')):
    result = subprocess.run([sys.executable, f'benchmarks/{script}.py', argument,
                             '--max-wait=0'],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [line]
    assert result.stdout == ''
  assert list(tmp_path.iterdir()) == []


def test_generation_throughput_offers_every_model():
  from benchmarks import generation_throughput  # pylint: disable=import-outside-toplevel
  from jaxgan import models  # pylint: disable=import-outside-toplevel
  assert generation_throughput.MODELS == models.MODEL_NAMES


def test_compare_peers_runs_the_torch_peer_unchanged_on_the_torch_device(tmp_path):
  """--torch-device: the peer program runs as written, with that default device, its
  from_numpy batch moved there and its own arguments; a stand-in torch records what it saw."""
  (tmp_path / 'fake_torch').mkdir()
  (tmp_path / 'fake_torch' / 'torch.py').write_text(
      '__version__ = "0.0+stand-in"\nseen = {}\n'
      'def set_default_device(device):\n  seen["default"] = device\n'
      'class Tensor:\n  def __init__(self, device):\n    self.device = device\n'
      '  def to(self, device):\n    return Tensor(device)\n'
      'def from_numpy(array):\n  return Tensor("cpu")\n')
  peers = tmp_path / 'peers'
  peers.mkdir()
  (peers / 'keras_dcgan.py').write_text('')
  (peers / 'torch_dcgan.py').write_text(
      'import json, sys, torch\n'
      'batch = int(sys.argv[sys.argv.index("--batch-size") + 1])\n'
      'print(json.dumps({"impl": "torch_eager", "batch_size": batch, "images_per_s": 1.0,\n'
      '  "step_ms_median": 1.0, "foreign_load_cores": 0.0, "losses_ok": True,\n'
      '  "default": torch.seen.get("default"), "real_on": torch.from_numpy(None).device,\n'
      '  "script": sys.argv[0]}))\n')
  env = dict(os.environ, PYTHONPATH=str(tmp_path / 'fake_torch'))
  # On the CPU the peer runs with no wrapper at all (set_default_device hooks every torch call).
  for device, default in (('cuda', 'cuda'), ('cpu', None)):
    result = subprocess.run(
        [sys.executable, 'benchmarks/compare_peers.py', '--impls=torch_eager', '--batches=4',
         '--rounds=1', '--max-wait=0', f'--peers-python={sys.executable}',
         f'--peers-dir={peers}', f'--torch-device={device}'],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    header, run = (json.loads(line) for line in result.stdout.splitlines()
                   if line.startswith('{'))
    assert header['torch_device'] == device
    assert 'torch 0.0+stand-in' in header['peers_versions']
    assert (run['default'], run['real_on'], run['batch_size']) == (default, device, 4)
    assert run['script'] == 'torch_dcgan.py'


def _without_tensorflow(tmp_path, code):
  env = dict(os.environ, JAXGAN_ARRAYS_DIR=str(tmp_path / 'arrays'),
             PYTHONPATH=f'{REPO / "benchmarks" / "without_tensorflow"}{os.pathsep}{REPO}')
  return subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                        text=True, timeout=120, env=env)


def test_exported_arrays_stand_in_for_tfds(tmp_path):
  """The export writes what load_split gives; with JAXGAN_ARRAYS_DIR set, a fresh Python loads
  the same arrays (balanced subsets too) without touching tfds, whose stand-in has no files."""
  arrays = write_manual_dir(tmp_path / 'manual', {'mnist': {'train': 30, 'test': 8}})
  env = dict(os.environ, JAXGAN_MANUAL_DIR=str(tmp_path / 'manual'),
             TFDS_DATA_DIR=str(tmp_path / 'tfds'))
  export = subprocess.run(
      [sys.executable, 'benchmarks/without_tensorflow/sitecustomize.py',
       f'--out={tmp_path / "arrays"}', 'mnist:train'],
      cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
  assert export.returncode == 0, export.stderr[-3000:]
  assert export.stdout.strip().endswith('mnist_train.npz: 30 examples')
  result = _without_tensorflow(tmp_path, (
      'import numpy as np, tensorflow_datasets as tfds\n'
      'from jaxgan import data\n'
      'images, labels = data.load_split("mnist", "train")\n'
      'subset = data.load_split("mnist", "train", num_examples=10)\n'
      'np.savez("loaded.npz", images=images, labels=labels, sub_labels=subset[1])\n'
      'print(getattr(tfds, "__file__", None))\n'))
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == 'None'
  images, labels = arrays['mnist']['train']
  with np.load(tmp_path / 'loaded.npz') as loaded:  # tfds stores the split shuffled
    assert sorted(zip(loaded['labels'], map(bytes, loaded['images']))) == sorted(
        zip(labels, map(bytes, images[..., None])))
    assert loaded['sub_labels'].shape == (10,)


def test_a_split_not_exported_names_the_export_command(tmp_path):
  (tmp_path / 'arrays').mkdir()
  result = _without_tensorflow(tmp_path, 'from jaxgan import data\n'
                                         'data.load_split("kannada_mnist", "test")\n')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'jaxgan.data.idx.DataError: no exported kannada_mnist \'test\' split at '
      f'{tmp_path / "arrays" / "kannada_mnist_test.npz"}: export it with python '
      f'benchmarks/without_tensorflow/sitecustomize.py --out={tmp_path / "arrays"} '
      f'kannada_mnist:test where tfds works')


def test_profile_step_sums_the_traced_ops_per_step(tmp_path):
  """A header with the step times, then each timeline's top ops with their time and count per
  step; the trace stays where --trace-dir says."""
  result = subprocess.run(
      [sys.executable, 'benchmarks/profile_step.py', '--model=mlp', '--batch=4', '--steps=2',
       '--warmup=1', '--top=2', f'--trace-dir={tmp_path}'],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={key: value for key, value in os.environ.items() if key != 'XLA_FLAGS'})
  assert result.returncode == 0, result.stderr[-3000:]
  header, *rows = (json.loads(line) for line in result.stdout.splitlines())
  assert header['benchmark'] == 'profile_step' and header['steps'] == 2
  assert header['step_ms_read_back'] > 0 and header['trace'].startswith(str(tmp_path))
  timelines = {(row['plane'], row['timeline']) for row in rows}
  assert rows and all(sum(1 for r in rows if (r['plane'], r['timeline']) == t) <= 2
                      for t in timelines)
  assert all(row['ms_per_step'] >= 0 and row['count_per_step'] > 0
             and 0 <= row['share_of_timeline'] <= 1 for row in rows)


def test_conv_ceiling_times_each_form_of_one_layer_and_checks_the_laid_out_gradient():
  """A header naming the layer, then the four forms in order; the kernel gradient from
  laid-out operands equals training's (a batch of 40: a full chunk of 32 and a ragged one)."""
  result = subprocess.run(
      [sys.executable, 'benchmarks/conv_ceiling.py', '--batch=40', '--calls=1', '--repeats=1',
       '--max-wait=0'],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={key: value for key, value in os.environ.items() if key != 'XLA_FLAGS'})
  assert result.returncode == 0, result.stderr[-3000:]
  header, *lines = (json.loads(line) for line in result.stdout.splitlines())
  assert header['benchmark'] == 'conv_ceiling' and header['devices'] == 1
  assert (header['input'], header['output'], header['kernel']) == ([14, 14, 32], [7, 7, 64], 5)
  assert header['mflop'] == round(2 * 40 * 7 * 7 * 5 * 5 * 32 * 64 / 1e6, 1)
  assert [line['form'] for line in lines] == ['forward', 'matmul', 'kernel_grad',
                                              'kernel_grad_laid_out']
  assert all(line['ms'] > 0 and line['gflop_per_s'] > 0 for line in lines)
  assert lines[-1]['max_abs_diff'] < 1e-3
