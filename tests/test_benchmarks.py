"""The benchmark scripts run end to end and print the JSON they document (no timings are
asserted: they are measurements, not properties)."""
import json
import os
import subprocess
import sys
from pathlib import Path

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
  pipeline/device; nothing recompiles after the first step."""
  write_manual_dir(tmp_path / 'manual', {'mnist': {'train': 64, 'test': 8}})
  env = {key: value for key, value in os.environ.items() if key != 'XLA_FLAGS'}
  env.update(JAXGAN_MANUAL_DIR=str(tmp_path / 'manual'), TFDS_DATA_DIR=str(tmp_path / 'tfds'))
  result = subprocess.run(
      [sys.executable, 'benchmarks/train_throughput.py', '--models=mlp', '--batches=8',
       '--steps=3', '--repeats=2', '--warmup=0', '--cpu-devices=2', '--max-in-flight=2',
       '--max-wait=0'],
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
    assert line['steps'] == 3 and len(line['images_per_s_repeats']) == 2
    assert line['images_per_s'] > 0 and line['recompiled_after_first_step'] is False
  ratio = by_feed[None]['pipeline_over_device']
  assert ratio == round(by_feed['pipeline']['images_per_s'] / by_feed['device']['images_per_s'],
                        3)


def test_train_throughput_rejects_a_pacing_limit_below_one():
  result = subprocess.run(
      [sys.executable, 'benchmarks/train_throughput.py', '--max-in-flight=0'],
      cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 2
  assert '--max-in-flight=0 must be >= 1' in result.stderr
