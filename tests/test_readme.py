"""The README's library example runs as printed (on the 8 fake CPU devices of the test session)."""
import ast
import json
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


def test_every_readme_command_names_flags_and_config_fields_its_script_has():
  """Commands copied from the README must run: each parses with its script's flags (config
  overrides checked against the config file it names, --metrics against the registry)."""
  from tests import readme_commands
  found = readme_commands.commands()
  assert len(found.get('experiments.train', ())) > 10, sorted(found)
  failures = []
  for script, rests in sorted(found.items()):
    result = subprocess.run([sys.executable, '-m', 'tests.readme_commands', script], cwd=REPO,
                            input=json.dumps(rests), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    failures += [f'{script}{rest}\n  -> {error}' for rest, error in zip(rests, errors) if error]
  assert not failures, '\n'.join(failures)
