"""End to end: experiments.train / experiments.sample on tiny IDX data written here, resume
after a finished run, after an interrupted one and after SIGKILL, and bad input.

The tiny config trains the MLP GAN on 256 examples (8 steps per epoch) in seconds.
"""
from __future__ import annotations

import copy
import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import zipfile
import sys
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import app

from experiments.configs import tiny
from jaxgan import console, data, generate, locks, optim, provenance, run_folder, trainer
from jaxgan.checkpoint import CheckpointStore
from jaxgan.data import DataError
from tests.idx_files import write_manual_dir

REPO = Path(__file__).resolve().parent.parent
TINY_MNIST = {'mnist': {'train': 300, 'test': 50}}


@pytest.fixture(scope='module')
def data_dirs(tmp_path_factory):
  """(manual_dir with tiny mnist IDX files, tfds data_dir)."""
  manual = tmp_path_factory.mktemp('manual')
  write_manual_dir(manual, TINY_MNIST)
  return manual, tmp_path_factory.mktemp('tfds')


def tiny_config(data_dirs, **overrides):
  config = tiny.get_config()
  config.data.manual_dir, config.data.data_dir = map(str, data_dirs)
  for field, value in overrides.items():
    config[field] = value
  return config


def cli(module: str, *args: str, timeout: int = 300, log=None):
  """Run `python -m experiments.<module> args` from the repo root, or start it in the
  background with its output going to the open file `log`."""
  command = [sys.executable, '-m', f'experiments.{module}', *args]
  if log is not None:
    return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def train_args(data_dirs, workdir, *extra):
  manual, data_dir = data_dirs
  return ('--config=experiments/configs/tiny.py', f'--workdir={workdir}',
          f'--config.data.manual_dir={manual}', f'--config.data.data_dir={data_dir}', *extra)


def read_metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def checkpoint_steps(workdir) -> list[int]:
  folder = os.path.join(workdir, 'checkpoints')
  return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


@pytest.fixture(scope='module')
def trained_run(data_dirs, tmp_path_factory):
  """A tiny run trained through the CLI: (workdir, completed process)."""
  workdir = tmp_path_factory.mktemp('run')
  result = cli('train', *train_args(data_dirs, workdir))
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


def test_train_writes_the_run_folder(trained_run):
  workdir, result = trained_run
  config = json.loads((workdir / 'config.json').read_text())
  assert config['model']['name'] == 'mlp' and config['batch_size'] == 32
  metrics = read_metrics(workdir)
  assert [m['step'] for m in metrics] == list(range(2, 17, 2))  # log_every=2, 2 epochs of 8
  assert metrics[-1]['epoch'] == 2.0
  for record in metrics:
    assert {'d_loss', 'g_loss', 'd_real', 'd_fake', 'images_per_s', 'g_lr'} <= record.keys()
    assert all(np.isfinite(v) for v in record.values())
  samples = sorted(os.listdir(workdir / 'samples'))
  assert samples == ['epoch_001.png', 'epoch_002.png', 'final.png', 'progress.gif']
  assert checkpoint_steps(workdir) == [12, 16]  # every 4 steps and per epoch, keep 2
  assert 'step 16/16' in result.stderr and 'img/s' in result.stderr and 'eta' in result.stderr


def test_config_json_names_the_data_folders_absolutely(data_dirs, tmp_path, monkeypatch):
  """A relative --config.data.manual_dir (the quick start's ../shared/datasets) would point
  elsewhere for a script run later from another directory."""
  manual, data_dir = data_dirs
  monkeypatch.chdir(manual.parent)
  config = tiny_config((manual.name, os.path.relpath(data_dir)), num_steps=1)
  trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  recorded = json.loads((tmp_path / 'run' / 'config.json').read_text())['data']
  assert (recorded['manual_dir'], recorded['data_dir']) == (str(manual), str(data_dir))
  assert config.data.manual_dir == manual.name  # the caller's config is left as it was
  empty = trainer.with_absolute_data_folders(tiny_config(('', ''))).data
  assert (empty.manual_dir, empty.data_dir) == ('', '')  # tfds's default data dir stays so


def test_metrics_lines_are_strict_json_with_null_where_nothing_was_timed(data_dirs, tmp_path):
  trainer.train_and_evaluate(tiny_config(data_dirs, num_steps=3, log_every=1), str(tmp_path))

  def refuse(constant):
    raise ValueError(f'{constant} is not JSON')

  with open(tmp_path / 'metrics.jsonl') as f:
    lines = [json.loads(line, parse_constant=refuse) for line in f]
  # Step 1 compiles, so its interval times nothing.
  assert [line['images_per_s'] is None for line in lines] == [True, False, False]


def test_images_per_s_leaves_out_the_first_call_of_each_compiled_program(data_dirs, tmp_path):
  """With steps_per_call > 1 a run has two programs; the single-step one first runs at step 4
  (steps 4 and 5 end at the checkpoint at 5). Its compilation was timed as a step (1.3 img/s
  against ~400), and the steps after the first of the opening 3-step call as taking no time."""
  config = tiny_config(data_dirs, num_steps=7, log_every=1, checkpoint_every=5,
                       steps_per_call=3)
  trainer.train_and_evaluate(config, str(tmp_path))
  lines = read_metrics(str(tmp_path))
  assert [line['step'] for line in lines] == list(range(1, 8))
  # Steps 1-3: the 3-step program's first call; step 4: the 1-step program's.
  assert [line['images_per_s'] is None for line in lines] == [True] * 4 + [False] * 3


def test_progress_gif_orders_epochs_by_number_and_leaves_out_damaged_grids(tmp_path, caplog):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  epochs = (14055, 141, 1128, 987)
  for shade, epoch in enumerate(epochs):
    Image.fromarray(np.full((4, 4), 50 * shade, np.uint8)).save(tmp_path / f'epoch_{epoch:03d}.png')
  damaged = tmp_path / 'epoch_500.png'
  damaged.write_bytes((tmp_path / 'epoch_141.png').read_bytes()[:50])
  with caplog.at_level(logging.WARNING):
    trainer.write_progress_gif(str(tmp_path))
  assert f'{damaged} left out of progress.gif: it cannot be read' in caplog.text
  with Image.open(tmp_path / trainer.PROGRESS_GIF) as gif:
    shades = []
    for frame in range(gif.n_frames):
      gif.seek(frame)
      shades.append(int(np.asarray(gif.convert('L'))[0, 0]))
  assert shades == [50 * epochs.index(epoch) for epoch in sorted(epochs)]


def test_runs_of_many_epochs_write_at_most_max_epoch_grids(data_dirs, tmp_path):
  """Few real digits make many short epochs: grids and epoch-end checkpoints then come every
  k-th epoch, k = ceil(epochs / max_epoch_grids), here every 2nd of 6."""
  config = tiny_config(data_dirs, num_epochs=6, max_epoch_grids=3, checkpoint_every=1000,
                       keep_checkpoints=5)
  trainer.train_and_evaluate(config, str(tmp_path))
  steps_per_epoch = read_metrics(tmp_path)[-1]['step'] // 6
  assert sorted(os.listdir(tmp_path / 'samples')) == [
      'epoch_002.png', 'epoch_004.png', 'epoch_006.png', 'final.png', 'progress.gif']
  assert checkpoint_steps(tmp_path) == [2 * steps_per_epoch, 4 * steps_per_epoch,
                                        6 * steps_per_epoch]
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(tmp_path / 'samples' / 'progress.gif') as gif:
    assert gif.n_frames == 3
  config.max_epoch_grids = 0
  with pytest.raises(ValueError, match='max_epoch_grids must be > 0, got 0'):
    trainer.validate(config)


@pytest.mark.parametrize('fields, problem', [
    ({'num_steps': -1}, 'num_steps must be >= 0 (0: num_epochs decides), got -1'),
    ({'num_steps': 0, 'num_epochs': 0},
     'set num_epochs > 0 or num_steps > 0 (got num_epochs=0, num_steps=0)'),
    ({'data.num_train_examples': -5},
     'data.num_train_examples must be >= 0 (0: the whole split), got -5'),
])
def test_bad_lengths_name_the_field_to_fix(data_dirs, fields, problem):
  config = tiny_config(data_dirs)
  config.update_from_flattened_dict(fields)
  with pytest.raises(ValueError, match=re.escape(problem)):
    trainer.validate(config)


def test_an_empty_workdir_is_a_one_line_error(data_dirs):
  with pytest.raises(ValueError, match=re.escape(
      '--workdir is empty: name the run folder, e.g. --workdir=runs/dcgan_mnist')):
    trainer.train_and_evaluate(tiny_config(data_dirs), '')


def test_sample_grid_is_8x8_digits_scaled_up(trained_run):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  workdir, _ = trained_run
  picture = Image.open(workdir / 'samples' / 'final.png')
  # tiny: 4x4 grid of 28x28 digits with 1-pixel gaps, scale 1.
  assert picture.size == (4 * 29 + 1, 4 * 29 + 1) and picture.mode == 'L'


def test_running_a_finished_run_again_says_so_and_exits_0(trained_run, data_dirs):
  workdir, _ = trained_run
  before = (workdir / 'metrics.jsonl').read_text()
  result = cli('train', *train_args(data_dirs, workdir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'already finished at step 16 of 16' in result.stderr
  assert (workdir / 'metrics.jsonl').read_text() == before


def test_sample_writes_uint8_digits_and_a_grid(trained_run, tmp_path):
  workdir, _ = trained_run
  out, grid = tmp_path / 'digits.npz', tmp_path / 'digits.png'
  result = cli('sample', f'--workdir={workdir}', '--num=50', f'--out={out}', f'--grid={grid}')
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(out) as data:
    assert data['images'].shape == (50, 28, 28) and data['images'].dtype == np.uint8
    first = data['images']
    drawn = json.loads(str(data['provenance']))
  assert grid.exists()
  # How they were drawn and on what, for whoever trains on them later.
  assert (drawn['workdir'], drawn['dataset'], drawn['step'], drawn['num'], drawn['seed']) == (
      str(workdir.resolve()), 'mnist', 16, 50, 0)
  assert drawn['latent_scale'] == 1.0 and drawn['truncation'] == 0.0
  assert drawn['resampling'] is None and drawn['labels'] is None
  # The real labels it trained on (augmentation_gain's meaning depends on them) and the batch
  # size, which may round a pixel otherwise.
  assert (drawn['num_train_examples'], drawn['batch_size']) == (256, generate.DEFAULT_BATCH)
  assert drawn['split'] == 'train'
  assert drawn['machine']['cpu'] == provenance.cpu()['cpu']
  # experiments.evaluate --samples copies it into its record.
  scored = tmp_path / 'digits.eval.json'
  result = cli('evaluate', f'--samples={out}', '--dataset=mnist', '--metrics=classifier_score',
               f'--out={scored}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(scored.read_text())['samples_provenance'] == drawn
  result = cli('evaluate', f'--samples={out}', '--dataset=mnist', '--metrics=classifier_score',
               f'--out={scored}')  # again: said before the scoring, not replaced unnoticed
  assert result.returncode == 0, result.stderr[-3000:]
  assert (f'{scored} holds an earlier record, which this one replaces when it is done (pass '
          '--out=FILE to keep both)') in result.stderr
  # ... and refuses to score them against another dataset's digits (fcd 762 "on Kannada").
  result = cli('evaluate', f'--samples={out}', '--dataset=kannada_mnist',
               '--metrics=classifier_score', f'--out={tmp_path / "kannada.eval.json"}')
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: --dataset=kannada_mnist but {out} holds digits of a run trained on mnist (its '
      'provenance): pass --dataset=mnist')
  assert not (tmp_path / 'kannada.eval.json').exists()
  with zipfile.ZipFile(out) as archive:  # stored: the fast default
    assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
  # The same seed gives the same digits; --num only extends the list. --compress deflates.
  result = cli('sample', f'--workdir={workdir}', '--num=60', f'--out={out}', '--compress',
               f'--grid={grid}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert (f'{out} holds earlier digits, which these replace when they are done; {scored} '
          f'scored those, not these: run experiments.evaluate --samples={out} again'
          ) in result.stderr
  assert (f'{grid} holds an earlier grid, which these digits\' grid replaces when it is done'
          in result.stderr)
  with np.load(out) as data:
    np.testing.assert_array_equal(data['images'][:50], first)
  with zipfile.ZipFile(out) as archive:
    assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
  # A bad flag is the only thing said: the file stays, so no word of replacing it.
  before = out.read_bytes()
  result = cli('sample', f'--workdir={workdir}', '--labels=3', f'--out={out}')
  assert result.returncode == 1 and 'holds earlier digits' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith('error: --labels')
  assert out.read_bytes() == before


def test_sample_without_a_run_folder_is_a_one_line_error(tmp_path):
  result = cli('sample', f'--workdir={tmp_path}', f'--out={tmp_path / "x.npz"}')
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: {tmp_path}/config.json not found: --workdir must be a run folder written by '
      'experiments.train')


def test_a_run_without_checkpoints_is_a_one_line_error_and_stays_as_it_was(data_dirs, tmp_path):
  trainer.record_config(tiny_config(data_dirs), str(tmp_path))
  result = cli('sample', f'--workdir={tmp_path}', f'--out={tmp_path / "x.npz"}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: no checkpoint in {tmp_path / "checkpoints"}: train first (python -m '
      'experiments.train --workdir=...)')
  result = cli('evaluate', f'--workdir={tmp_path}', '--checkpoint=best', '--metrics=fcd')
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: no checkpoint in {tmp_path / "best"}: train with --config.eval_every=N (> 0) to '
      'keep the best checkpoint')
  assert sorted(os.listdir(tmp_path)) == ['config.json']  # no empty checkpoint folders


def test_a_run_trained_longer_than_the_config_asks_is_refused_as_it_is(trained_run, data_dirs,
                                                                       tmp_path):
  workdir, _ = trained_run
  run = tmp_path / 'run'
  shutil.copytree(workdir, run)
  config_before = (run / 'config.json').read_text()
  result = cli('train', *train_args(data_dirs, run, '--config.num_epochs=1'))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: {run} holds a run trained for 16 steps, more than the 8 this config asks for: '
      'ask for at least 16 steps (num_epochs or num_steps), or use a new --workdir')
  assert (run / 'config.json').read_text() == config_before


def test_outputs_in_place_of_a_runs_own_files_are_refused(trained_run, tmp_path):
  """`sample --grid=RUN/samples/final.png` replaced the training's grid."""
  workdir, _ = trained_run
  for flag, path in (('grid', workdir / 'samples' / 'final.png'),
                     ('grid', workdir / 'samples' / 'epoch_003.png'),
                     ('out', workdir / 'checkpoints' / 'x.npz'),
                     ('out', workdir / 'checkpoints' / '16' / 'x.npz'),  # pruned with the step
                     ('out', workdir / 'config.json')):
    with pytest.raises(app.UsageError) as error:
      console.check_export_args(*((None, str(path)) if flag == 'grid' else (str(path), None)))
    assert str(error.value) == (f'--{flag}={path} is where the training of the run {workdir} '
                                'writes its own files: name a file elsewhere')
  # Beside the training's files, and a folder named samples outside a run, are the user's.
  console.check_export_args(str(workdir / 'samples' / 'digits.npz'),
                            str(workdir / 'samples' / 'grid.png'))
  console.check_export_args(str(workdir / 'digits.npz'), str(tmp_path / 'samples' / 'final.png'))
  console.check_file_to_write('out', str(workdir / 'eval.json'))  # evaluate's default record


def test_a_config_json_of_other_networks_is_named_not_called_damage(trained_run, tmp_path):
  """A config.json copied from another run: orbax's failure read as a damaged checkpoint, whose
  advice (move it away) would have had the good checkpoints moved one by one."""
  workdir, _ = trained_run
  mixed = tmp_path / 'mixed'
  shutil.copytree(workdir, mixed)
  config = json.loads((mixed / 'config.json').read_text())
  config['model']['num_classes'] = 10  # a conditional run's
  (mixed / 'config.json').write_text(json.dumps(config))
  result = cli('sample', f'--workdir={mixed}', f'--out={tmp_path / "x.npz"}')
  assert result.returncode == 1
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith(f'error: the checkpoint at step 16 in {mixed / "checkpoints"} holds '
                         "other networks than the run's config.json describes (g_params[")
  assert line.endswith('): the config.json is not the one the run trained with (restore it '
                       'from a copy of the run folder), or another jaxgan version wrote the '
                       'checkpoint (use that version)')
  assert checkpoint_steps(mixed) == checkpoint_steps(workdir)


def test_a_damaged_run_folder_is_a_one_line_error_naming_the_file(trained_run, tmp_path):
  workdir, _ = trained_run
  damaged = tmp_path / 'damaged'
  shutil.copytree(workdir, damaged)
  step = max(checkpoint_steps(damaged))
  (damaged / 'checkpoints' / str(step) / 'default' / '_METADATA').write_text('')
  result = cli('sample', f'--workdir={damaged}', f'--out={tmp_path / "x.npz"}')
  assert result.returncode == 1
  folder = damaged / 'checkpoints'
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: the checkpoint at step {step} in {folder} cannot be read (JSONDecodeError: '
      f'Expecting value: line 1 column 1 (char 0)): it is damaged; move {folder / str(step)} '
      'away to use the checkpoint before it')
  # Arrays cut short: orbax's other reads still run after the failure; the error stays the
  # last line (their callbacks printed tracebacks after it, and into it).
  shutil.rmtree(damaged / 'checkpoints' / str(step))
  step = max(checkpoint_steps(damaged))
  for data_file in (folder / str(step) / 'default').glob('ocdbt.process_0/d/*'):
    data_file.write_bytes(data_file.read_bytes()[:100])
  result = cli('sample', f'--workdir={damaged}', f'--out={tmp_path / "x.npz"}')
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert re.fullmatch(rf'error: the checkpoint at step {step} in {re.escape(str(folder))} cannot '
                      r'be read \(.+\): it is damaged; move .+ away to use the checkpoint '
                      'before it', lines[-1]), result.stderr[-3000:]
  assert not any(line.startswith('error:') for line in lines[:-1])
  config_text = (damaged / 'config.json').read_text()
  for text, problem in (('{not json', 'not JSON: Expecting property name enclosed in double '
                                      'quotes: line 1 column 2 (char 1)'),
                        ('[]', 'JSON without its model, data, loss, optimizer and schedule '
                               'sections'),
                        # Deleted by hand: an AttributeError's traceback before.
                        (json.dumps({k: v for k, v in json.loads(config_text).items()
                                     if k != 'optimizer'}), 'JSON without its optimizer section')):
    (damaged / 'config.json').write_text(text)
    result = cli('sample', f'--workdir={damaged}', f'--out={tmp_path / "x.npz"}')
    assert result.stderr.strip().splitlines()[-1] == (
        f'error: {damaged / "config.json"} is not the config experiments.train writes '
        f'({problem}): restore it from a copy of the run folder')
  assert not (tmp_path / 'x.npz').exists()


def test_unknown_model_is_a_one_line_error(data_dirs, tmp_path):
  result = cli('train', *train_args(data_dirs, tmp_path / 'run', '--config.model.name=resnet'))
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      "error: unknown model 'resnet': choose one of mlp, dcgan, kannada, progressive "
      "(config field "
      'model.name)')
  assert not (tmp_path / 'run').exists()


_HELPER_FLAGS_NOT_IN_HELP = """
import importlib, sys
from absl import flags
script = importlib.import_module(sys.argv[1])
getattr(script, 'define_flags', lambda: None)()  # independent_check defines its flags in main
helpers = {flag.name for module, defined in flags.FLAGS.flags_by_module_dict().items()
           if module.startswith('jaxgan.') for flag in defined}
listed = {flag.name for flag in flags.FLAGS.get_key_flags_for_module(script.__name__)}
print(sorted(helpers - listed))
"""


@pytest.mark.parametrize('script', sorted(
    path.stem for path in (REPO / 'experiments').glob('*.py') if path.stem != '__init__'))
def test_help_lists_the_flags_that_jaxgan_modules_define_for_a_script(script):
  """absl's --help lists a script's own flags only; --latent_scale, --manual_dir, ... are
  defined by helpers in jaxgan (the rest only under --helpfull)."""
  result = subprocess.run(
      [sys.executable, '-c', _HELPER_FLAGS_NOT_IN_HELP, f'experiments.{script}'], cwd=REPO,
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == '[]'


@pytest.mark.parametrize('flag', ['--help', '--helpfull'])
def test_asking_for_help_prints_it_and_succeeds(flag):
  """absl ends --help and --helpfull with status 1, which reads as a failure in scripts."""
  result = cli('train', flag)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.startswith('Train a GAN: python -m experiments.train')
  assert '--workdir: Run folder' in result.stdout


@pytest.mark.parametrize('module, override', [('train', ()), ('sweep', ()),
                                              ('train', ('--config.num_epochs=1',))])
def test_a_missing_config_file_is_a_one_line_error(module, override, tmp_path):
  """With an override too: ml_collections then failed the override, in four lines blaming it."""
  extra = ['--seeds=0'] if module == 'sweep' else []
  result = cli(module, '--config=experiments/configs/dcgan.py', f'--workdir={tmp_path / "run"}',
               *override, *extra)
  assert result.returncode != 0
  errors = [line for line in result.stderr.splitlines()  # all but absl's log lines
            if line and not re.match(r'[IW]\d{4} ', line)]
  assert errors == [f'error: --config=experiments/configs/dcgan.py: no such config file '
                    f'(relative to this folder, {REPO}); pass one of the files under '
                    'experiments/configs/ (README, Configs)'], errors
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('module, config, problem', [
    ('train', 'experiments/configs/classifier_mnist.py',
     ' is not a GAN config (it has no num_steps, model, loss, optimizer, data): pass a GAN config '
     'such as experiments/configs/dcgan_mnist.py'),
    ('train_classifier', 'experiments/configs/tiny.py',
     ' is not a classifier config (it has no dataset, learning_rate, max_shift): pass a '
     'classifier config such as experiments/configs/classifier_mnist.py'),
    ('train', '{tmp}/as_dict.py', ': get_config() returned a dict, not an '
     'ml_collections.ConfigDict: return one, as experiments/configs/dcgan_mnist.py does'),
])
def test_a_config_of_the_wrong_kind_is_a_one_line_error(module, config, problem, tmp_path):
  (tmp_path / 'as_dict.py').write_text('def get_config():\n  return {"batch_size": 64}\n')
  config = config.format(tmp=tmp_path)
  folder_flag = '--workdir' if module == 'train' else '--out_dir'
  result = cli(module, f'--config={config}', f'{folder_flag}={tmp_path / "run"}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == f'error: --config={config}{problem}'
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('code, problem', [
    ('x = 1\n', "AttributeError: module 'config_config' has no attribute 'get_config'"),
    ('def get_config():\n  return undefined\n',
     "NameError: name 'undefined' is not defined ({config}, line 2)"),
    ('def get_config(:\n', 'SyntaxError: invalid syntax (broken.py, line 1)'),
    # ml_collections wraps a ValueError or TypeError from get_config in a multi-line flag error
    ('def get_config():\n  raise ValueError("no such model")\n',
     'ValueError: no such model ({config}, line 2)'),
])
def test_a_config_file_that_fails_to_load_is_a_one_line_error(code, problem, tmp_path):
  config = tmp_path / 'broken.py'
  config.write_text(code)
  result = cli('train', f'--config={config}', f'--workdir={tmp_path / "run"}')
  assert result.returncode != 0
  errors = [line for line in result.stderr.splitlines()  # all but absl's log lines
            if line and not re.match(r'[IW]\d{4} ', line)]
  assert errors == [f'error: --config={config}: the config file did not load: '
                    f'{problem.format(config=config)}; fix it: it must define get_config() '
                    'returning an ml_collections.ConfigDict, as the files under '
                    'experiments/configs/ do'], errors
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('override, problem', [
    ('--config.num_epoch=3', """--config.num_epoch: the config has no field 'num_epoch' (Did you """
     """mean "num_epochs" instead of "num_epoch"?)"""),
    ('--config.dota.rarity_power=1', """--config.dota.rarity_power: the config has no field """
     """'dota' (Did you mean "data" instead of "dota"?)"""),
    ('--config.no_such_field=1', "--config.no_such_field: the config has no field "
     "'no_such_field'"),
])
def test_an_override_of_a_field_the_config_lacks_is_a_one_line_error(override, problem,
                                                                     tmp_path):
  result = cli('train', '--config=experiments/configs/tiny.py', f'--workdir={tmp_path / "run"}',
               override)
  assert result.returncode != 0
  errors = [line for line in result.stderr.splitlines() if line]
  assert errors == [f'error: {problem}; the fields are those of the --config file (README, '
                    'Configs)'], errors
  assert not (tmp_path / 'run').exists()


def test_a_model_too_big_for_memory_leaves_no_workdir(data_dirs, tmp_path, monkeypatch):
  """A new run's parameters are made before anything is written (model.label_embed_dim=2e9 ran
  out of memory after config.json, which then refused the corrected config)."""
  def out_of_memory(self, key):
    raise MemoryError('Unable to allocate 74.5 GiB for the parameters')

  monkeypatch.setattr(trainer._MeshRunner, 'init', out_of_memory)
  with pytest.raises(MemoryError):
    trainer.train_and_evaluate(tiny_config(data_dirs), str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('override, error', [
    # absl's line showed ml_collections' parse of it: "ValueError('malformed node or string on
    # line 1: <ast.Name object at 0x7f...>')".
    ('--config.model=dcgan', 'error: --config.model: model is a group of fields, not one value: '
     'set them one by one, --config.model.FIELD=VALUE (README, Configs); see --helpshort'),
    # A dict replaced the group: a traceback at its first missing field (KeyError 'b1'), or, with
    # every field named, misspelt ones trained and were recorded.
    ("--config.optimizer.generator={'lr': 1e-4}", 'error: --config.optimizer.generator={...} '
     'replaces the whole group optimizer.generator, dropping the fields it leaves out: set them '
     'one by one, e.g. --config.optimizer.generator.lr=VALUE'),
    ("--config.optimizer={'generator': {'lr': 1e-4}}", 'error: --config.optimizer={...} replaces '
     'the whole group optimizer, dropping the fields it leaves out: set them one by one, e.g. '
     '--config.optimizer.generator.lr=VALUE'),
])
def test_a_group_of_config_fields_given_one_value_is_a_one_line_error(override, error, tmp_path):
  result = cli('train', '--config=experiments/configs/tiny.py', f'--workdir={tmp_path / "run"}',
               override)
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines()  # all but absl's log lines
            if line and not re.match(r'[IW]\d{4} ', line)]
  assert errors == [error], errors
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('module', ['sample', 'interpolate', 'sample_strings', 'evaluate'])
def test_seeds_jax_cannot_take_are_refused_by_the_flag(module, tmp_path):
  """jax.random.key takes an int64: a larger seed was an OverflowError traceback."""
  result = cli(module, f'--workdir={tmp_path}', '--seed=9223372036854775808')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'error: flag --seed=9223372036854775808: 9223372036854775808 is not an integer in the '
      'range [0, 9223372036854775807]; see --helpshort')


def test_an_epoch_count_a_step_count_overrides_is_refused(tmp_path):
  """progressive_mnist.py counts steps (its growth is set in steps): --config.num_epochs alone
  would be ignored."""
  result = cli('train', '--config=experiments/configs/progressive_mnist.py',
               f'--workdir={tmp_path / "run"}', '--config.num_epochs=1')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'error: --config.num_epochs has no effect: num_steps=2340 counts instead; add '
      '--config.num_steps=0 to train by epochs')
  assert not (tmp_path / 'run').exists()


def test_a_bad_flag_value_is_a_one_line_error(tmp_path):
  result = cli('train', '--config=experiments/configs/tiny.py', f'--workdir={tmp_path / "run"}',
               '--config.num_epochs=three')
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [
      "error: flag --config.num_epochs=three: invalid literal for int() with base 10: 'three'; "
      'see --helpshort']
  assert not (tmp_path / 'run').exists()


def test_a_workdir_of_another_experiment_is_refused_and_left_alone(trained_run, data_dirs):
  workdir, _ = trained_run
  before = {p: p.read_bytes() for p in (workdir / 'config.json', workdir / 'metrics.jsonl')}
  result = cli('train', *train_args(data_dirs, workdir, '--config.seed=7'))
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f'error: {workdir} holds a run with a different config (seed: 0 there, '
                         '7 now)'), last
  # Fewer examples also make the run shorter than it was trained: the field is named first,
  # not the length (whose fix, more epochs, was then refused for the field).
  result = cli('train', *train_args(data_dirs, workdir, '--config.data.num_train_examples=128'))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: {workdir} holds a run with a different config (data.num_train_examples: 256 '
      'there, 128 now): use a new --workdir, or the same config to resume it')
  assert {p: p.read_bytes() for p in before} == before
  assert checkpoint_steps(workdir) == [12, 16]


@pytest.mark.parametrize('overrides, message', [
    (['--config.loss.n_critic=100'], 'error: 256 training examples are fewer than one step '
     'needs (batch_size x loss.n_critic = 3200): lower batch_size or loss.n_critic, or train on '
     'more (data.num_train_examples)'),
    # Named by the step when traced: 40 rows over the tests' 8 devices are 5 per device.
    (['--config.loss.mode_seeking=0.2', '--config.batch_size=40'],
     'error: the mode-seeking term pairs rows, so the per-device batch must be even, got 5'),
])
def test_a_config_refused_at_setup_leaves_no_workdir(data_dirs, tmp_path, overrides, message):
  """Otherwise its config.json would make the folder refuse the corrected command."""
  result = cli('train', *train_args(data_dirs, tmp_path / 'run', *overrides))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]
  assert not (tmp_path / 'run').exists()


def test_a_run_folder_without_or_with_a_damaged_config_is_refused_and_left_alone(
    trained_run, data_dirs, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(trained_run[0], workdir)
  (workdir / 'config.json').unlink()
  before = {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()}
  result = cli('train', *train_args(data_dirs, workdir))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: {workdir} holds checkpoints but no config.json, which this config would replace '
      "unchecked: put the run's config.json back, or use a new --workdir")
  (workdir / 'config.json').write_text('{"model": ')
  before[workdir / 'config.json'] = b'{"model": '
  result = cli('train', *train_args(data_dirs, workdir))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: {workdir / "config.json"} is not the config experiments.train writes (not JSON: '
      'Expecting value: line 1 column 11 (char 10)): restore it from a copy of the run folder')
  assert {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()} == before


def test_a_workdir_that_is_a_file_is_a_one_line_error_and_left_alone(data_dirs, tmp_path):
  workdir = tmp_path / 'notes.txt'
  workdir.write_text('mine')
  result = cli('train', *train_args(data_dirs, workdir))
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: --workdir {workdir} is a file, not a run folder: pass a new folder or a run '
      'folder to resume')
  assert workdir.read_text() == 'mine'


def test_missing_data_folder_is_a_one_line_error(tmp_path):
  result = cli('train', '--config=experiments/configs/tiny.py', f'--workdir={tmp_path / "run"}',
               f'--config.data.manual_dir={tmp_path / "nowhere"}',
               f'--config.data.data_dir={tmp_path / "tfds"}')
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and str(tmp_path / 'nowhere') in last, last


def final_state(workdir, config):
  return jax.device_get(trainer.restore_run_state(str(workdir), config)[1])


def test_a_run_with_a_cosine_warmup_restores_for_sampling(data_dirs, tmp_path):
  """sample, evaluate and interpolate rebuild the run's optimizer without knowing the run's
  length (it needs the data's size); a warmup longer than one step used to stop them."""
  config = tiny_config(data_dirs, num_epochs=1)
  config.schedule.name, config.schedule.warmup_steps = 'cosine', 4
  trained = jax.device_get(trainer.train_and_evaluate(config, str(tmp_path / 'run')))
  restored = final_state(tmp_path / 'run', config)
  jax.tree.map(np.testing.assert_array_equal, trained, restored)
  # A run whose schedule a later check refuses (an end factor above 1, accepted until
  # 2026-12-07) still restores: its schedules never run there.
  bygone = copy.deepcopy(config)
  bygone.schedule.end_factor = 2.0
  jax.tree.map(np.testing.assert_array_equal, trained, final_state(tmp_path / 'run', bygone))
  result = cli('sample', f'--workdir={tmp_path / "run"}', '--num=10',
               f'--out={tmp_path / "digits.npz"}')
  assert result.returncode == 0, result.stderr[-3000:]


def test_a_diverging_run_stops_before_writing_anything_from_the_bad_state(data_dirs, tmp_path,
                                                                          monkeypatch):
  """Learning rates that grow 1e10-fold per step after 5 steps make the losses NaN within a
  few steps; the run stops with the step and what is not finite, and its folder keeps only
  what came before."""
  config = tiny_config(data_dirs)
  # No config's schedule grows (a decay rate above 1 is refused): a schedule of the test's own.
  monkeypatch.setattr(optim, 'make_schedule', lambda lr, *args, **kwargs: (
      lambda count: lr * jnp.float32(1e10) ** jnp.maximum(count - 5, 0)))
  workdir = str(tmp_path / 'run')
  with pytest.raises(trainer.TrainingDiverged) as excinfo:
    trainer.train_and_evaluate(config, workdir)
  message = str(excinfo.value)
  match = re.fullmatch(rf'training diverged by step (\d+) in {re.escape(workdir)}: (.+) not '
                       r'finite; its checkpoints up '
                       r'to step (\d+) are kept\. Lower the learning rates '
                       r'\(optimizer\.generator\.lr, optimizer\.discriminator\.lr\) and '
                       r'train into a new run folder', message)
  assert match, message
  diverged, saved = int(match[1]), int(match[3])
  assert 'd_loss' in match[2].split(', ')
  assert checkpoint_steps(workdir)[-1] == saved < diverged
  last = read_metrics(workdir)[-1]  # the failing step's losses stay on record
  assert last['step'] == diverged and not np.isfinite(last['d_loss'])
  grids = sorted(os.listdir(os.path.join(workdir, 'samples')))
  assert all(int(name[len('epoch_'):-len('.png')]) * 8 < diverged for name in grids), grids
  restored = final_state(workdir, config)
  assert int(restored.step) == saved
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(restored.g_params))
  # Diverging again within the first log interval after a resume, the message also names the
  # checkpoint it resumed from, which may be damaged (orbax keeps no checksums).
  with pytest.raises(trainer.TrainingDiverged) as excinfo:
    trainer.train_and_evaluate(config, workdir)
  assert str(excinfo.value).endswith(
      f'train into a new run folder; right after resuming from step {saved}: if the run did not '
      f'diverge there before, that checkpoint may be damaged (move '
      f'{os.path.join(workdir, "checkpoints", str(saved))} away to resume from the one before '
      'it)'), str(excinfo.value)


def test_an_interrupted_run_resumes_to_the_same_result(data_dirs, tmp_path):
  """1 epoch, then resumed to 3, equals 3 epochs straight: bit for bit (same data order,
  same per-step keys), and metrics.jsonl reads as one run (the half line a session killed while
  appending leaves is dropped); machine.jsonl holds a line per training session (none for a
  finished run run again)."""
  straight = trainer.train_and_evaluate(tiny_config(data_dirs, num_epochs=3), str(tmp_path / 'a'))
  first = trainer.train_and_evaluate(tiny_config(data_dirs, num_epochs=1), str(tmp_path / 'b'))
  with open(tmp_path / 'b' / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 10, "d_lo')
  resumed = trainer.train_and_evaluate(tiny_config(data_dirs, num_epochs=3), str(tmp_path / 'b'))
  jax.tree.map(np.testing.assert_array_equal, straight, resumed)
  drop_timing = lambda rows: [{k: v for k, v in r.items() if k != 'images_per_s'} for r in rows]
  assert drop_timing(read_metrics(tmp_path / 'a')) == drop_timing(read_metrics(tmp_path / 'b'))
  machine_log = (tmp_path / 'b' / 'machine.jsonl').read_text()
  sessions = [json.loads(line) for line in machine_log.splitlines()]
  assert [s['step'] for s in sessions] == [0, int(first.step)] and int(first.step) > 0
  assert provenance.differences(*sessions) == []
  assert sessions[0]['devices'] == jax.device_count()
  trainer.train_and_evaluate(tiny_config(data_dirs, num_epochs=3), str(tmp_path / 'b'))
  assert (tmp_path / 'b' / 'machine.jsonl').read_text() == machine_log  # finished: no session


def test_a_damaged_metrics_line_before_the_last_is_named(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{"step": 2}\n{"step": 4, "d_l\n{"step": 6}\n')
  with pytest.raises(ValueError, match=rf'^{re.escape(str(tmp_path / "metrics.jsonl"))} line 2 '
                                       r'is not JSON \(.*\): restore the file from a copy of the '
                                       r'run folder, or delete that line$'):
    trainer.MetricsLog(str(tmp_path)).drop_after(4)
  # JSON, but not a metrics line (added by hand): a KeyError's traceback before.
  for line in ('{"note": "hand added"}', '[2]', '{"step": "4"}'):
    (tmp_path / 'metrics.jsonl').write_text(f'{{"step": 2}}\n{line}\n{{"step": 6}}\n')
    with pytest.raises(ValueError, match='^' + re.escape(
        f'{tmp_path / "metrics.jsonl"} line 2 is not a line experiments.train writes (no step): '
        'restore the file from a copy of the run folder, or delete that line') + '$'):
      trainer.MetricsLog(str(tmp_path)).drop_after(4)


def test_pmap_path_trains_like_the_mesh_path(data_dirs, tmp_path):
  mesh = trainer.train_and_evaluate(tiny_config(data_dirs, num_epochs=1), str(tmp_path / 'm'))
  pmap = trainer.train_and_evaluate(tiny_config(data_dirs, num_epochs=1, parallel='pmap'),
                                    str(tmp_path / 'p'))
  for a, b in zip(jax.tree.leaves(mesh), jax.tree.leaves(pmap)):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), atol=1e-6)
  assert int(pmap.step) == 8


def test_sigkill_mid_training_then_rerun_continues_from_the_last_checkpoint(data_dirs, tmp_path):
  workdir = tmp_path / 'run'
  # Long enough to be killed mid-run; checkpoints every 4 steps.
  log_path = tmp_path / 'killed.log'
  with open(log_path, 'w') as log:
    process = cli('train', *train_args(data_dirs, workdir, '--config.num_epochs=100000'), log=log)
  deadline = time.time() + 240
  while time.time() < deadline and not (
      (workdir / 'checkpoints').exists() and any(s >= 8 for s in checkpoint_steps(workdir))):
    assert process.poll() is None, log_path.read_text()[-3000:]
    time.sleep(0.2)
  # A second training of the folder meanwhile is refused, naming the first, and writes nothing.
  metrics_before = (workdir / 'metrics.jsonl').read_bytes()
  second = cli('train', *train_args(data_dirs, workdir, '--config.num_epochs=100000'))
  assert second.returncode == 1
  assert re.fullmatch(
      rf'error: {re.escape(str(workdir))} is being trained by another process \(pid '
      rf'{process.pid} on {re.escape(socket.gethostname())} since \S+\): two trainings of one '
      'folder would mix their checkpoints and metrics; wait for it to end or stop it, or use a '
      'new --workdir', second.stderr.strip().splitlines()[-1]), second.stderr[-2000:]
  assert (workdir / 'metrics.jsonl').read_bytes().startswith(metrics_before)
  assert len((workdir / provenance.FILE).read_text().splitlines()) == 1
  os.killpg(process.pid, signal.SIGKILL)
  process.wait()
  killed_at = checkpoint_steps(workdir)[-1]
  assert killed_at >= 8
  logged = read_metrics(workdir)  # may run past the checkpoint: those lines are replaced

  stop = killed_at + 6
  result = cli('train', *train_args(data_dirs, workdir, f'--config.num_steps={stop}'))
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'from its checkpoint at step {killed_at}' in result.stderr
  steps = [m['step'] for m in read_metrics(workdir)]
  assert steps == list(range(2, stop + 1, 2))
  kept = [m for m in logged if m['step'] <= killed_at]
  assert read_metrics(workdir)[:len(kept)] == kept
  assert checkpoint_steps(workdir)[-1] == stop


def test_a_save_a_killed_run_left_unfinished_is_removed_by_its_training_only(
    trained_run, data_dirs, tmp_path):
  """Orbax saves into `<step>.orbax-checkpoint-tmp` and renames it when complete; a run killed
  mid-save leaves that folder. Sampling (a reader: a training may be saving) keeps it; the
  resumed training removes it."""
  workdir = tmp_path / 'run'
  shutil.copytree(trained_run[0], workdir)
  unfinished = workdir / 'checkpoints' / '14.orbax-checkpoint-tmp'
  shutil.copytree(workdir / 'checkpoints' / '16', unfinished)
  result = cli('sample', f'--workdir={workdir}', '--num=10', f'--out={tmp_path / "d.npz"}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert unfinished.is_dir()
  result = cli('train', *train_args(data_dirs, workdir, '--config.num_steps=20'))
  assert result.returncode == 0, result.stderr[-2000:]
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['16', '20']


def test_an_old_checkpoint_left_half_pruned_is_removed_by_a_training_only(trained_run,
                                                                             data_dirs, tmp_path,
                                                                             caplog):
  """Orbax prunes an old checkpoint by deleting its files: a run killed meanwhile leaves its step
  folder without some of them, and every command that opened the run warned about it. A store
  that only reads keeps it (a training may be pruning it); the run's training removes it, also
  when the run is finished and saves no more. A newest step without its metadata is not such a
  leftover: kept."""
  workdir = tmp_path / 'run'
  shutil.copytree(trained_run[0], workdir)
  (workdir / 'checkpoints' / '12' / '_CHECKPOINT_METADATA').unlink()
  warned = lambda: any('_CHECKPOINT_METADATA' in r.getMessage() for r in caplog.records)
  CheckpointStore(str(workdir), create=False)
  assert checkpoint_steps(workdir) == [12, 16] and warned()
  result = cli('train', *train_args(data_dirs, workdir))  # finished: nothing more to train
  assert result.returncode == 0, result.stderr[-2000:]
  assert checkpoint_steps(workdir) == [16]
  caplog.clear()
  CheckpointStore(str(workdir), create=False)
  assert not warned()
  newest = tmp_path / 'newest'
  shutil.copytree(trained_run[0], newest)
  (newest / 'checkpoints' / '16' / '_CHECKPOINT_METADATA').unlink()
  CheckpointStore(str(newest))
  assert checkpoint_steps(newest) == [12, 16]


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_saying_what_to_do(trained_run,
                                                                              monkeypatch):
  store = CheckpointStore(str(trained_run[0]), create=False)
  # TensorStore's message, as orbax raised it when a 3 MB tmpfs filled up mid-run.
  def disk_full(*args, **kwargs):
    raise ValueError('RESOURCE_EXHAUSTED: Error writing "step/0" in OCDBT database at local '
                     'file ".../ocdbt.process_0/": Failed to write 1754949 bytes to file 5: No '
                     "space left on device [os_error_code='28']")
  monkeypatch.setattr(store._manager, 'save', disk_full)
  monkeypatch.setattr(store._manager, 'wait_until_finished', disk_full)
  for write in (lambda: store.save(types.SimpleNamespace(step=99)), store.wait):
    with pytest.raises(OSError, match=(
        rf'^no space left on the disk holding {re.escape(store.directory)} to save a checkpoint: '
        'free some, then run the same command again; the run resumes from its newest complete '
        'checkpoint, if any$')):
      write()
  def other_failure():
    raise ValueError('another failure')
  monkeypatch.setattr(store._manager, 'wait_until_finished', other_failure)
  with pytest.raises(ValueError, match='^another failure$'):  # passed on as it is
    store.wait()


def test_a_checkpoint_pruned_while_being_read_gives_way_to_the_newer_one(trained_run, tmp_path):
  """A script reading a run that trains: the training saves newer checkpoints and deletes the
  one being read (keep_checkpoints). That is no damage: the newest is read instead."""
  workdir = tmp_path / 'run'
  shutil.copytree(trained_run[0], workdir)
  config = run_folder.load_run_config(str(workdir))
  components = trainer.build_components(config, total_steps=config.schedule.warmup_steps + 1)
  store = CheckpointStore(str(workdir), create=False)
  assert store.latest_step() == 16
  read_metadata = store._manager.item_metadata
  def training_saves_and_prunes(step):
    if step == 16:
      shutil.copytree(workdir / 'checkpoints' / '16', workdir / 'checkpoints' / '20')
      shutil.rmtree(workdir / 'checkpoints' / '16')
    return read_metadata(step)
  store._manager.item_metadata = training_saves_and_prunes
  state = store.restore(trainer.abstract_state(components))
  assert store.latest_step() == 20 and int(state.step) == 16  # 20 is a copy of 16
  # Damage (the folder still there) is still named as such.
  (workdir / 'checkpoints' / '20' / 'default' / '_METADATA').write_text('')
  with pytest.raises(ValueError, match='^the checkpoint at step 20 .* it is damaged; move '):
    store.restore(trainer.abstract_state(components))


def test_unwritable_places_are_refused_before_any_work(trained_run, data_dirs, tmp_path,
                                                       monkeypatch):
  """A shared, read-only run folder (or a new one below a read-only folder): training refuses
  it before loading data or writing; an output flag is refused before the scoring it follows.
  (os.access is faked: it is what a read-only mount fails, and root passes permission bits.)"""
  locked = tmp_path / 'shared'
  shutil.copytree(trained_run[0], locked / 'run')
  real_access = os.access
  monkeypatch.setattr(os, 'access',
                      lambda path, mode: not str(path).startswith(str(locked)) and real_access(
                          path, mode))
  for workdir, unwritable in ((locked / 'run', locked / 'run'), (locked / 'new_run', locked)):
    with pytest.raises(OSError, match=rf'^--workdir {re.escape(str(workdir))}: '
                                      rf'{re.escape(str(unwritable))} is not writable here, and '
                                      'training writes the run folder: name a folder you can '
                                      r'write \(copy a run there to resume it\)$'):
      trainer.train_and_evaluate(tiny_config(data_dirs), str(workdir))
  assert not (locked / 'new_run').exists()
  out = locked / 'run' / 'eval.json'
  with pytest.raises(app.UsageError, match=rf'^--out={re.escape(str(out))}: '
                                           rf'{re.escape(str(out.parent))} is not writable here: '
                                           'name a file in a folder you can write$'):
    console.check_file_to_write('out', str(out))
  # A run folder whose checkpoints/ alone is read-only failed at its first save, in orbax's
  # 200 lines.
  run = tmp_path / 'run'
  shutil.copytree(trained_run[0], run)
  for folder in ('checkpoints', 'samples'):
    monkeypatch.setattr(os, 'access', lambda path, mode, folder=folder: (
        str(path) != str(run / folder) and real_access(path, mode)))
    with pytest.raises(OSError, match=rf'^--workdir {re.escape(str(run))}: '
                                      rf'{re.escape(str(run / folder))} is not writable here'):
      trainer.train_and_evaluate(tiny_config(data_dirs, num_epochs=3), str(run))


def test_a_data_folder_that_cannot_hold_the_prepared_data_names_the_settings(tmp_path):
  not_a_folder = tmp_path / 'tfds'
  not_a_folder.write_text('')
  write_manual_dir(tmp_path / 'manual', {'mnist': {'train': 3, 'test': 2}})
  with pytest.raises(DataError, match=rf'^cannot prepare mnist in {re.escape(str(not_a_folder))} '
                                      r'\(file exists\): set TFDS_DATA_DIR or '
                                      r'--config.data.data_dir \(scripts that read a run: '
                                      r'--data_dir\) to a folder you can write$'):
    data.prepare('mnist', data_dir=not_a_folder, manual_dir=tmp_path / 'manual')


def test_the_training_lock_names_its_holder_and_is_let_go_on_any_exit(tmp_path):
  lock = tmp_path / run_folder.LOCK_FILE
  with pytest.raises(KeyError):
    with run_folder.training_lock(str(tmp_path)):
      assert re.fullmatch(rf'pid {os.getpid()} on \S+ since \S+\n', lock.read_text())
      # Another open of the file is another holder, even in this process.
      with pytest.raises(BlockingIOError, match=rf'^{re.escape(str(tmp_path))} is being trained by '
                                             rf'another process \(pid {os.getpid()} on '):
        with run_folder.training_lock(str(tmp_path)):
          pass
      raise KeyError('a failed training')
  assert lock.read_text() == ''
  with run_folder.training_lock(str(tmp_path)):
    pass


def test_without_locks_training_goes_unguarded_with_a_warning(tmp_path, monkeypatch, caplog):
  def no_locks(*args):
    raise OSError(errno.ENOLCK, 'No locks available')
  monkeypatch.setattr(locks.fcntl, 'flock', no_locks)
  with run_folder.training_lock(str(tmp_path)):
    pass
  assert (f'{tmp_path / run_folder.LOCK_FILE} cannot be locked ([Errno {errno.ENOLCK}] No '
          f'locks available): a second training of {tmp_path} at the same time would not be '
          'refused') in caplog.text
  monkeypatch.setattr(locks, 'fcntl', None)  # as on Windows
  with run_folder.training_lock(str(tmp_path)):
    pass
  assert (f'{tmp_path / run_folder.LOCK_FILE} cannot be locked (this system has no flock)'
          in caplog.text)


@pytest.mark.real_data
@pytest.mark.skipif(not os.environ.get('JAXGAN_MANUAL_DIR'),
                    reason='set JAXGAN_MANUAL_DIR to the folder holding mnist/')
def test_dcgan_smoke_run_on_real_mnist(tmp_path):
  """50 steps of the default DCGAN on the real MNIST files (prepared once per TFDS_DATA_DIR)."""
  from experiments.configs import dcgan_mnist  # pylint: disable=g-import-not-at-top
  config = dcgan_mnist.get_config()
  config.data.manual_dir = os.environ['JAXGAN_MANUAL_DIR']
  config.data.data_dir = os.environ.get('TFDS_DATA_DIR') or str(tmp_path / 'tfds')
  config.num_steps, config.log_every = 50, 10
  state = trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert int(state.step) == 50
  metrics = read_metrics(tmp_path / 'run')
  assert [m['step'] for m in metrics] == [10, 20, 30, 40, 50]
  assert all(np.isfinite(m['d_loss']) and np.isfinite(m['g_loss']) for m in metrics)
  # The discriminator learns to tell real from fake within 50 steps.
  assert metrics[-1]['d_real'] > metrics[-1]['d_fake']
  assert (tmp_path / 'run' / 'samples' / 'final.png').exists()


@pytest.mark.parametrize('signal_name, status', [('SIGTERM', 143), ('SIGINT', 130)])
def test_a_stopped_script_says_so_in_one_line_and_leaves_no_half_file(tmp_path, signal_name,
                                                                      status):
  """The scripts' main runs under console.run: a signal that arrives while a file is being
  written (here: the script signals itself there) leaves neither the file nor its temporary."""
  script = tmp_path / 'script.py'
  script.write_text(f'''
import os, signal
from jaxgan import atomic, console

# As started from a terminal: a background job (CI's shell) inherits SIGINT ignored, which
# Python then keeps, as it should.
signal.signal(signal.SIGINT, signal.default_int_handler)

def main(argv):
  with atomic.replacing({str(tmp_path / "out.npz")!r}) as tmp, open(tmp, 'w') as f:
    f.write('half')
    os.kill(os.getpid(), signal.{signal_name})
    f.write(' and the rest')

console.run(main)
''')
  result = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert result.returncode == status
  assert result.stderr.strip().splitlines() == [
      f'stopped by {signal_name}: files already written are whole; a training run resumes from '
      'its last checkpoint']
  assert os.listdir(tmp_path) == ['script.py']


@pytest.mark.parametrize('signal_name, status', [('SIGTERM', 143), ('SIGINT', 130)])
def test_a_stop_that_a_garbage_collection_callback_drops_still_stops_the_script(signal_name,
                                                                               status):
  """Python drops an exception raised in a gc callback (jax registers one) with an "Exception
  ignored" report: a Ctrl-C in a training's first seconds trained it to the end, exit 0."""
  script = f'''
import gc, os, signal, time
from jaxgan import console
console.take_stop_signals()
signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal

def main(argv):
  def callback(phase, info):
    if phase == 'start':
      gc.callbacks.remove(callback)
      os.kill(os.getpid(), signal.{signal_name})
      sum(range(1000))  # the signal's handler raises here, in the callback
  gc.callbacks.append(callback)
  gc.collect()
  time.sleep(10)  # the stop, delivered again, ends it here
  print('ran on')

console.run(main)
'''
  result = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert result.returncode == status, result.stderr[-2000:]
  assert 'ran on' not in result.stdout
  assert result.stderr.strip().splitlines()[-1] == (
      f'stopped by {signal_name}: files already written are whole; a training run resumes from '
      'its last checkpoint')


@pytest.mark.parametrize('signal_name, status', [('SIGTERM', 143), ('SIGINT', 130)])
def test_a_stop_while_a_script_loads_its_modules_is_one_line(signal_name, status):
  """Before console.run: a SIGINT was a 39-line traceback (status -2), a SIGTERM no line."""
  script = f'''
import os, signal
from jaxgan import console
console.take_stop_signals()
signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal
os.kill(os.getpid(), signal.{signal_name})  # while the modules below would load
import json
'''
  result = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert result.returncode == status, result.stderr[-2000:]
  assert result.stderr.strip().splitlines() == [
      f'stopped by {signal_name}: files already written are whole; a training run resumes from '
      'its last checkpoint']


def test_the_scripts_take_stop_signals_before_their_libraries_load():
  for script in sorted((REPO / 'experiments').glob('*.py')):
    text = script.read_text()
    if 'console.run(' not in text:
      continue
    early = text.index('console.take_stop_signals()')
    assert all(text.find(f'\nimport {lib}') in (-1,) or text.find(f'\nimport {lib}') > early
               for lib in ('jax', 'numpy', 'flax', 'tensorflow')), script.name
    assert text.find('\nfrom absl') > early, script.name


def test_a_full_disk_anywhere_is_one_line_with_what_to_do(tmp_path):
  """Where no writer names it (appending a metrics line, a library's write): errno's line
  alone said what but not what to do."""
  script = tmp_path / 'script.py'
  script.write_text('''
import errno, os
from jaxgan import console

def main(argv):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

console.run(main)
''')
  result = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      'error: no space left on device: free some disk space, then run the same command again (a '
      'training resumes from its newest checkpoint)']
  # A write to a file already open (metrics.jsonl's append, the training lock) names it.
  log = tmp_path / 'metrics.jsonl'
  script.write_text(f'''
import errno, os
from jaxgan import atomic, console

def main(argv):
  with atomic.naming({str(log)!r}):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

console.run(main)
''')
  result = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert result.stderr.strip().splitlines() == [
      f'error: no space left on device to write {log}: free some disk space, then run the same '
      'command again (a training resumes from its newest checkpoint)']


@pytest.mark.parametrize('allocate, reason', [
    ('np.zeros((2**40, 2**20), np.float32)',
     'Unable to allocate 4.00 EiB for an array with shape (1099511627776, 1048576) and data type '
     'float32'),
    ('jnp.zeros((2**40, 2**20), jnp.float32).block_until_ready()', 'RESOURCE_EXHAUSTED: ')])
def test_running_out_of_memory_is_one_line_that_says_to_ask_for_less(tmp_path, allocate, reason):
  """`sample --num=10000000000` and the like ended in numpy's or jax's traceback."""
  script = tmp_path / 'script.py'
  script.write_text(f'''
import numpy as np
import jax.numpy as jnp
from jaxgan import console

def main(argv):
  {allocate}

console.run(main)
''')
  result = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, 'PYTHONPATH': str(REPO)})
  assert result.returncode == 1
  [line] = [line for line in result.stderr.strip().splitlines()  # all but absl's log lines
            if not re.match(r'[IW]\d{4} ', line)]
  assert line.startswith(f'error: out of memory ({reason}')
  assert line.endswith('): ask for less at once: fewer digits (--num, --num_samples, '
                       '--per_class, --steps) or a smaller batch (--config.batch_size)')


@pytest.mark.parametrize('reader_of_stdout', ['gone', 'reading'])
def test_a_broken_pipe_is_quiet_only_when_it_is_stdouts(tmp_path, reader_of_stdout):
  """`script | head`: the reader stopped early, which is no failure; a pipe to a subprocess
  that died is one, and is reported."""
  script = tmp_path / 'script.py'
  script.write_text('''
import os, sys
from jaxgan import console

def main(argv):
  if os.environ['READER'] == 'gone':
    for _ in range(1000):
      print('a line of the table', flush=True)
  read, write = os.pipe()
  os.close(read)  # the subprocess that would have read it died
  os.write(write, b'x')

console.run(main)
''')
  process = subprocess.Popen(
      [sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      env={**os.environ, 'PYTHONPATH': str(REPO), 'READER': reader_of_stdout})
  if reader_of_stdout == 'gone':
    process.stdout.close()
    stderr = process.communicate(timeout=120)[1].decode()
    assert (process.returncode, stderr) == (141, '')
  else:
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1 and stdout == b''
    assert stderr.decode().strip().splitlines() == ['error: [Errno 32] Broken pipe']


def test_a_workdir_path_too_long_for_its_checkpoints_is_refused_before_any_work(data_dirs,
                                                                                 tmp_path):
  """A path within the file system's limit (4,096 bytes on Linux) whose checkpoint files are
  not: the first save failed, after an epoch, in hundreds of orbax lines."""
  limit = os.pathconf(tmp_path, 'PC_PATH_MAX')
  length = limit - 100  # within the limit, not within 160 bytes of it
  workdir = str(tmp_path)
  while len(workdir) < length - 201:  # components within a name's 255 bytes
    workdir += '/' + 'd' * 200
  workdir += '/' + 'e' * (length - len(workdir) - 1)
  assert len(workdir) == length
  with pytest.raises(ValueError, match=rf'^--workdir {re.escape(workdir[:48])}\.\.\.'
                                       rf'{re.escape(workdir[-48:])}: its path is {length} '
                                       'bytes long and checkpoints write up to 160 bytes deeper, '
                                       f"past the file system's limit of {limit} bytes for a "
                                       'path: use a shorter --workdir$'):
    trainer.train_and_evaluate(tiny_config(data_dirs), workdir)
  assert os.listdir(tmp_path) == []


def _not_utf8_problem(encoding: str) -> str:
  fix = ('rename it (or name another folder) in UTF-8' if encoding == 'utf-8' else
         'run with PYTHONUTF8=1 or in a UTF-8 locale (LC_ALL=C.UTF-8)')
  return (f"its name is not UTF-8 text in this process's file-name encoding ({encoding}), and "
          f'the checkpoint library takes UTF-8 names only: {fix}')


def test_a_run_folder_name_that_is_not_utf8_text_is_one_line_before_any_work(data_dirs,
                                                                             tmp_path):
  """A name whose bytes are not UTF-8 (`ü` in Latin-1, copied from an older system): Python
  holds them as surrogates, which TensorStore cannot take. A training failed at its first
  checkpoint save (a pybind11 cast error), a reader called the run damaged."""
  workdir = str(tmp_path / os.fsdecode(b'\xfc'))
  problem = re.escape(_not_utf8_problem(sys.getfilesystemencoding()))
  with pytest.raises(ValueError, match=rf'^--workdir {re.escape(workdir)}: {problem}$'):
    trainer.train_and_evaluate(tiny_config(data_dirs), workdir)
  assert os.listdir(tmp_path) == []
  with pytest.raises(ValueError, match=rf'^run folder {re.escape(workdir)}: {problem}$'):
    CheckpointStore(workdir, create=False)


def test_a_utf8_run_folder_name_in_an_ascii_locale_names_the_locale_fix(tmp_path):
  """`runs/ü` in a C locale with UTF-8 mode off: there the UTF-8 name is what cannot be read."""
  workdir = tmp_path / 'ü'
  result = subprocess.run(
      [sys.executable, '-c', 'import sys; from jaxgan import run_folder; '
       'print(run_folder.path_problem(sys.argv[1], training=False))', str(workdir)],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env={**os.environ, 'LC_ALL': 'C', 'PYTHONUTF8': '0', 'PYTHONCOERCECLOCALE': '0',
           'PYTHONPATH': str(REPO), 'PYTHONIOENCODING': 'utf-8'})
  assert result.stdout.strip() == _not_utf8_problem('ascii'), result.stderr[-2000:]


def test_the_log_hides_library_chatter_and_keeps_what_matters():
  """Libraries' INFO records and tfds's warning about the folder it is about to fill (three
  per dataset prepared, before every preparation's own lines) are hidden; the rest shows."""
  hide = console._HideLibraryChatter()  # pylint: disable=protected-access
  def shown(level, path, message, error=None):
    exc_info = None if error is None else (type(error), error, None)
    return hide.filter(logging.LogRecord('absl', level, path, 1, message, None, exc_info))
  tfds_utils = '/venv/site-packages/tensorflow_datasets/core/utils/file_utils.py'
  assert not shown(logging.WARNING, tfds_utils,
                   'Variant folder /data/mnist/3.0.1 has no dataset_info.json')
  assert shown(logging.WARNING, tfds_utils, 'another warning')
  assert not shown(logging.INFO, '/venv/site-packages/orbax/checkpoint/manager.py', 'saved')
  orbax = '/venv/site-packages/orbax/checkpoint/manager.py'
  assert shown(logging.ERROR, orbax, 'failed')
  # Orbax's tracebacks of a full disk or of a stop in a checkpoint's wait (100 to 400 lines)
  # say what the script's last line says.
  full = ValueError('RESOURCE_EXHAUSTED: Error writing "d/0": No space left on device')
  assert not shown(logging.ERROR, orbax, 'save failed: ' + str(full))
  assert not shown(logging.ERROR, orbax, 'Save Finalize thread failed.', full)
  chained = RuntimeError('3 Handler Commit operations failed')
  chained.__cause__ = full
  assert not shown(logging.ERROR, orbax, 'failed', chained)
  assert not shown(logging.ERROR, orbax, 'failed', KeyboardInterrupt())
  terminated = console._Terminated()  # pylint: disable=protected-access
  assert not shown(logging.ERROR, orbax, 'failed', terminated)
  assert shown(logging.ERROR, orbax, 'failed', ValueError('another failure'))
  assert shown(logging.ERROR, '/repo/jaxgan/trainer.py', 'failed', KeyboardInterrupt())
  assert shown(logging.INFO, '/repo/jaxgan/trainer.py', 'epoch 1.00 step 8/8')
  assert shown(logging.WARNING, '/repo/jaxgan/data/builders.py',
               'x has no dataset_info.json')  # jaxgan's own are never hidden
