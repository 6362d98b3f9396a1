"""The benchmark scripts run end to end and print the JSON they document (no timings are
asserted: they are measurements, not properties)."""
import json
import subprocess
import sys
from pathlib import Path

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
