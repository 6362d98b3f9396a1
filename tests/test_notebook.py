"""experiments/colab_tpu.ipynb runs to completion headless (nbclient) on CPU with the tiny
config, on IDX data written here: no network (jaxgan is importable, so the install cell skips)."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.idx_files import write_manual_dir

REPO = Path(__file__).resolve().parent.parent


def test_colab_notebook_trains_and_shows_grids_and_metrics(tmp_path, monkeypatch):
  manual = tmp_path / 'manual'
  write_manual_dir(manual, {'mnist': {'train': 300, 'test': 50}})
  workdir = tmp_path / 'run'
  # The kernel inherits this environment: the tiny config, local data, 8 fake CPU devices
  # (conftest's XLA_FLAGS), and jaxgan from this checkout.
  monkeypatch.setenv('JAXGAN_NOTEBOOK_TINY', '1')
  monkeypatch.setenv('JAXGAN_NOTEBOOK_WORKDIR', str(workdir))
  monkeypatch.setenv('JAXGAN_MANUAL_DIR', str(manual))
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [str(REPO),
                                                                 os.environ.get('PYTHONPATH')])))
  notebook = nbformat.read(REPO / 'experiments' / 'colab_tpu.ipynb', as_version=4)
  NotebookClient(notebook, timeout=300, kernel_name='python3',
                 resources={'metadata': {'path': str(REPO)}}).execute()

  outputs = [out for cell in notebook.cells if cell.cell_type == 'code' for out in cell.outputs]
  text = ''.join(out.get('text', '') for out in outputs if out.output_type == 'stream')
  assert 'backend: cpu, 8 device(s)' in text
  assert '16 steps in' in text  # tiny: 256 examples, batch 32, 2 epochs
  shown = [mime for out in outputs if out.output_type == 'display_data' for mime in out.data
           if mime.startswith('image/')]
  assert sorted(os.listdir(workdir / 'samples')) == ['epoch_001.png', 'epoch_002.png',
                                                     'final.png', 'progress.gif']
  assert sorted(shown) == ['image/gif'] + ['image/png'] * 3  # every grid, and the progress GIF
  assert 'd_loss' in text and 'g_loss' in text
