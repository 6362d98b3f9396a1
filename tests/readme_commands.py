"""The README's commands, and a parser that checks one script's commands against that script.

`commands()` finds every `python -m experiments.NAME ...` and `python benchmarks/NAME.py ...` in
README.md, in fenced blocks and in inline code (which the prose wraps over lines). Run as
`python -m tests.readme_commands MODULE` with a JSON list of argument strings on stdin, it parses
each one with MODULE's own flags (absl, config overrides included) or argparse parser and prints
a JSON list of errors (null where the command parses). One process per script, because several
scripts define flags of the same names.
"""
from __future__ import annotations

import collections
import importlib
import json
import re
import shlex
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / 'README.md'

# Values the README writes as placeholders (`--config.seed=S`, a shell loop's `$i`), by flag: the
# value parsed in their place. A placeholder for a flag not listed here is reported as an error.
PLACEHOLDER_VALUES = {
    'config.seed': '0', 'config.data.num_train_examples': '1000', 'process_id': '0',
    'latent_scale': '1.2', 'truncation': '1.0', 'seed': '1', 'resample_percentile': '99',
    'resample_candidates': '20000', 'config.num_steps': '8000',
}
_PLACEHOLDER = re.compile(r'[A-Z]|\$\w+')


def commands() -> dict[str, list[str]]:
  """{script: [its arguments, as one string per command]} for every command in the README."""
  text = README.read_text()
  fenced = re.compile(r'```[a-z]*\n(.*?)```', re.S)
  pieces = [line for block in fenced.findall(text)
            for line in block.replace('\\\n', ' ').splitlines()]
  pieces += [span.replace('\n', ' ') for span in re.findall(r'`([^`]+)`', fenced.sub('', text))]
  found = collections.defaultdict(list)
  for piece in pieces:
    for match in re.finditer(r'python3? (?:-m (experiments\.\w+)|(benchmarks/\w+)\.py)(.*)', piece):
      script = match.group(1) or match.group(2).replace('/', '.')
      found[script].append(match.group(3))
  return dict(found)


def _arguments(rest: str) -> list[str]:
  """The command's arguments up to a shell operator, placeholders replaced."""
  arguments = []
  for token in shlex.split(rest):
    if token in ('&&', '||', ';', '|', '&') or token.startswith('>'):
      break
    name, equals, value = token.partition('=')
    if equals and _PLACEHOLDER.fullmatch(value):
      flag = name.lstrip('-')
      if flag not in PLACEHOLDER_VALUES:
        raise ValueError(f'{token}: a placeholder value for a flag that tests/readme_commands.py '
                         "PLACEHOLDER_VALUES does not list: add the value it stands for")
      token = f'{name}={PLACEHOLDER_VALUES[flag]}'
    arguments.append(token)
  return arguments


def _parse_absl(module, arguments: list[str]) -> None:
  from absl import flags
  from jaxgan.evaluation import suite
  # config_flags defines one flag per override while it parses (reading sys.argv), so the
  # overrides of the previous command go first.
  for name in [name for name in flags.FLAGS if name.startswith('config.')]:
    delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()
  sys.argv = ['prog', *arguments]
  flags.FLAGS(sys.argv)
  if 'metrics' in flags.FLAGS and flags.FLAGS.metrics and flags.FLAGS.metrics != ['...']:
    suite.resolve_metric_names(flags.FLAGS.metrics, has_labels=True)
  del module


def _parse_argparse(module, arguments: list[str]) -> None:
  try:
    module.parse_args(arguments)
  except SystemExit as error:  # argparse printed its message to stderr
    raise ValueError(f'argparse refused the arguments (exit {error.code})') from None


def main() -> None:
  name = sys.argv[1]
  module = importlib.import_module(name)
  if hasattr(module, 'define_flags'):  # experiments.independent_check defines its flags in main
    module.define_flags()
  parse = _parse_argparse if hasattr(module, 'parse_args') else _parse_absl
  errors = []
  for rest in json.load(sys.stdin):
    try:
      parse(module, _arguments(rest))
      errors.append(None)
    except Exception as error:  # every refusal is reported with its command
      errors.append(f'{type(error).__name__}: {error}')
  print(json.dumps(errors))


if __name__ == '__main__':
  main()
