"""The README's library example runs as printed (on the 8 fake CPU devices of the test session)."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _python_block_after(heading: str) -> str:
  text = (REPO / 'README.md').read_text()
  start = text.index('```python\n', text.index(heading)) + len('```python\n')
  return text[start:text.index('```', start)]


def test_the_using_the_library_example_trains_and_prints_finite_losses():
  code = _python_block_after('## Using the library')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  measurements = ast.literal_eval(result.stdout.strip().splitlines()[-1])
  assert {'d_loss', 'g_loss', 'd_real', 'd_fake'} <= set(measurements)
  assert all(0 < measurements[name] < 10 for name in ('d_loss', 'g_loss'))
