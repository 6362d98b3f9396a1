"""Console I/O of the experiment scripts: readable progress lines, one-line errors for bad input."""
from __future__ import annotations

import errno
import json
import logging as std_logging
import math
import os
import re
import select
import signal
import sys
import threading
import traceback

from absl import flags, logging

from jaxgan import atomic

# Libraries whose INFO records (per-file checkpoint commits, dataset bookkeeping) would bury
# the training log; their warnings (but _HARMLESS_WARNINGS) and errors still show.
_CHATTY_LIBRARIES = ('/orbax/', '/tensorflow_datasets/', '/etils/')


# Warnings that say nothing wrong: (library, text). tfds warns three times of the folder it is
# about to fill whenever it prepares a dataset.
_HARMLESS_WARNINGS = (('/tensorflow_datasets/', 'has no dataset_info.json'),)


class _HideLibraryChatter(std_logging.Filter):

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno == std_logging.WARNING:
      return not any(lib in record.pathname and text in record.getMessage()
                     for lib, text in _HARMLESS_WARNINGS)
    if record.levelno >= std_logging.ERROR:
      return not ('/orbax/' in record.pathname and _said_in_the_last_line(record))
    return not any(lib in record.pathname for lib in _CHATTY_LIBRARIES)


def _said_in_the_last_line(record: std_logging.LogRecord) -> bool:
  """Whether a failure record's cause is one the script then reports in its last line: a full
  disk (checkpoint.CheckpointStore) or a stop (SIGINT, SIGTERM) that interrupted a checkpoint's
  wait. Orbax logs each with its traceback from three threads first: 100 to 400 lines."""
  if 'No space left on device' in record.getMessage():
    return True
  error = record.exc_info[1] if record.exc_info else None
  for _ in range(10):  # the chain of causes, bounded
    if error is None:
      return False
    if isinstance(error, (KeyboardInterrupt, _Terminated)) or (
        'No space left on device' in str(error)):
      return True
    error = error.__cause__ or error.__context__
  return False


def setup_logging() -> None:
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_HideLibraryChatter())


def run(main) -> None:
  """absl's app.run, with bad input (ValueError: config, data; OSError: paths, such as a
  missing file, a folder where a file should be, no permission; app.UsageError: flags that do
  not go together) reported as one line on stderr and exit status 1 instead of a traceback; so
  are flag errors (absl's message), a `--config=FILE.py` whose code fails to load and an
  override of a field the config lacks.
  The scripts take flags only: a stray argument is a usage error before `main` runs. Asking
  for help (--help, --helpfull) prints it and exits 0 (absl: 1).
  SIGINT (Ctrl-C) and SIGTERM stop a script with one line and exit status 130 / 143, after
  Python's clean-up has run (a file being written is removed, never left half-written), where
  SIGTERM would otherwise end the process at once. Running out of memory (numpy's
  MemoryError, jax's RESOURCE_EXHAUSTED) is one line that says to ask for less at once. A
  reader of stdout that stops early (`| head`) ends a script quietly with status 141, as
  SIGPIPE ends other tools. In a
  multi-process run any other exception ends the process after its traceback and a line
  naming the process, at once (jax's exit would first wait ~100 s for the other processes,
  then abort)."""
  from absl import app  # pylint: disable=g-import-not-at-top

  def guarded(argv):
    take_stop_signals()
    try:
      if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
      main(argv)
    except (ValueError, OSError, app.UsageError) as error:
      if isinstance(error, BrokenPipeError) and _stdout_reader_gone():
        # `evaluate ... | head`: the reader has what it wanted and files written are whole; end
        # quietly with the status of a tool that SIGPIPE ended.
        os._exit(128 + signal.SIGPIPE)  # pylint: disable=protected-access
      if isinstance(error, OSError) and error.errno == errno.ENOSPC:  # errno's line: no advice
        where = f' to write {error.filename}' if error.filename else ''
        _exit_now(1, f'error: {error.strerror.lower()}{where}: free some disk space, then run '
                  'the same command again (a training resumes from its newest checkpoint)')
      # absl would print a UsageError after the module's docstring and every flag's help.
      _exit_now(1, f'error: {error}')
    except MemoryError as error:  # numpy's names the size and shape it could not allocate
      _exit_now(1, _out_of_memory(str(error)))
    except (KeyboardInterrupt, _Terminated) as stop:
      name, status = ('SIGTERM', 143) if isinstance(stop, _Terminated) else ('SIGINT', 130)
      _exit_now(status, _stopped_line(name))
    except Exception as error:  # pylint: disable=broad-except
      import jax  # pylint: disable=g-import-not-at-top
      if isinstance(error, jax.errors.JaxRuntimeError) and 'RESOURCE_EXHAUSTED' in str(error):
        _exit_now(1, _out_of_memory(str(error).splitlines()[0]))
      if not jax.distributed.is_initialized():
        raise
      # jax's exit handler would wait at a shutdown barrier for processes that are stopping
      # because of this one, until its heartbeat timeout (~100 s), then abort the process.
      traceback.print_exc()
      _exit_now(1, f'error: {type(error).__name__} in process {jax.process_index()} of '
                f'{jax.process_count()} (traceback above; if another process failed first, its '
                'log says why): this one stops now, the others when they miss it')

  def parse_flags(argv):
    try:
      return flags.FLAGS(argv)
    except SystemExit as stop:
      # Only absl's help flags exit while parsing: after printing the help, with status 1.
      # Asking for help is not a failure; exit 0, as argparse and other tools do.
      raise SystemExit(0 if stop.code == 1 else stop.code) from None
    except flags.Error as error:
      # ml_collections re-raises a config's own ValueError or TypeError as a multi-line flag
      # error: report the original. Other flag errors are absl's own one-line messages.
      failure = _config_error_cause(error)
      if failure is None:
        raise SystemExit(f'error: {_group_given_a_value(str(error)) or str(error).rstrip(".")}'
                         '; see --helpshort') from None
    except Exception as error:  # pylint: disable=broad-except
      failure = error
    problem = (_missing_config_file(argv) or _override_problem(failure, argv)
               or _config_load_problem(failure, argv))
    if problem is None:
      raise failure
    raise SystemExit(f'error: {problem}') from None

  app.run(guarded, flags_parser=parse_flags)


def _out_of_memory(reason: str) -> str:
  return (f'error: out of memory ({reason}): ask for less at once: fewer digits (--num, '
          '--num_samples, --per_class, --steps) or a smaller batch (--config.batch_size)')


def _stdout_reader_gone() -> bool:
  """Whether stdout is a pipe or socket whose reading end is closed (poll reports an error
  on it): a BrokenPipeError from elsewhere, a subprocess's pipe, is a failure to report."""
  try:
    poller = select.poll()
    poller.register(sys.stdout.fileno(), 0)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
  except (AttributeError, OSError, ValueError):  # no poll (Windows), stdout closed or replaced
    return False


def _exit_now(status: int, line: str) -> None:
  """Print `line` and end the process at once. The failed work has unwound (files closed,
  temporaries removed, checkpoints waited for); what an ordinary exit would still run is the
  interpreter's shutdown, during which library threads left running by the failure (orbax's
  restore tasks after a damaged checkpoint) printed tracebacks after and into the line."""
  sys.stdout.flush()
  print(line, file=sys.stderr, flush=True)
  os._exit(status)  # pylint: disable=protected-access


class _Terminated(BaseException):
  """SIGTERM, raised in the main thread like KeyboardInterrupt is for SIGINT."""


def _raise_terminated(signum, frame):
  del signum, frame
  raise _Terminated()


def _stopped_line(name: str) -> str:
  return (f'stopped by {name}: files already written are whole; a training run resumes from its '
          'last checkpoint')


def take_stop_signals() -> None:
  """SIGINT (Ctrl-C) and SIGTERM stop the script from now on, in console.run's one line.

  The scripts call it first, before jax and TensorFlow load (seconds), and console.run again.
  SIGTERM raises `_Terminated` in the main thread, as SIGINT raises KeyboardInterrupt (unless
  SIGINT is ignored, as in a shell's background job). Either exception, raised while Python
  runs a garbage-collection callback (jax registers one) or a finaliser, is printed as
  "Exception ignored" and dropped, and the script ran on: a Ctrl-C in a training's first
  seconds trained it to the end. Such a dropped stop is delivered again. One that ends the
  script before console.run catches it (while modules load) still gets the one line."""
  if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, _raise_terminated):
    signal.signal(signal.SIGTERM, _raise_terminated)
  if not getattr(sys.unraisablehook, 'delivers_stops', False):
    sys.unraisablehook = _delivering_stops(sys.unraisablehook)
  if not getattr(sys.excepthook, 'reports_stops', False):
    sys.excepthook = _reporting_stops(sys.excepthook)


def _delivering_stops(previous):
  def hook(unraisable):
    if isinstance(unraisable.exc_value, (KeyboardInterrupt, _Terminated)):
      signum = signal.SIGTERM if isinstance(unraisable.exc_value, _Terminated) else signal.SIGINT
      # Soon, from another thread: signalled at once, the main thread would raise it in this
      # hook, which drops it again. One that lands in a callback again comes back here. A
      # signal, not _thread.interrupt_main, which waits for the main thread to run Python code.
      timer = threading.Timer(0.01, signal.pthread_kill,
                              args=(threading.main_thread().ident, signum))
      timer.daemon = True
      timer.start()
    else:
      previous(unraisable)
  hook.delivers_stops = True
  return hook


def _reporting_stops(previous):
  def hook(kind, value, tb):
    if issubclass(kind, (KeyboardInterrupt, _Terminated)):
      _exit_now(*((143, _stopped_line('SIGTERM')) if issubclass(kind, _Terminated)
                  else (130, _stopped_line('SIGINT'))))
    previous(kind, value, tb)
  hook.reports_stops = True
  return hook


def _override_problem(error: BaseException, argv: list[str]) -> str | None:
  """One line for a `--config.FIELD=VALUE` override that names no field of the config, or
  None if `error` did not come from resolving an override's field path."""
  frames = traceback.extract_tb(error.__traceback__)
  if not any(frame.filename.endswith(os.path.join('config_flags', 'config_path.py'))
             for frame in frames):
    return None
  # ml_collections raises KeyError(message), or AttributeError(that KeyError); the message is
  # "'FIELD'" and, for a near miss, a second line "Did you mean ...?".
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  missing, _, suggestion = str(error.args[0] if error.args else '').partition('\n')
  missing = missing.strip('\'"')
  for arg in argv[1:]:
    name = arg[2:].partition('=')[0]
    if arg.startswith('--') and missing in name.split('.')[1:]:
      hint = f' ({suggestion.strip()})' if suggestion.strip() else ''
      return (f'--{name}: the config has no field {missing!r}{hint}; the fields are those of '
              'the --config file (README, Configs)')
  return (f'a --config.FIELD override does not fit the config: {type(error).__name__}: '
          f'{error}; the fields are those of the --config file (README, Configs)')


def _group_given_a_value(message: str) -> str | None:
  """One line for `--config.model=dcgan` (a group of fields given one value), whose absl
  message shows ml_collections' parse of it as a dict, or None for another flag error."""
  given = re.match(r"flag --([\w.]+)=.*Failed to parse .* as a ConfigDict", message)
  if given is None:
    return None
  name = given[1]
  return (f'--{name}: {name.partition(".")[2]} is a group of fields, not one value: set them '
          f'one by one, --{name}.FIELD=VALUE (README, Configs)')


def _config_error_cause(error: BaseException) -> BaseException | None:
  """The exception raised by a config file's code that a flag error was raised from, if any
  (ml_collections raises a new one whose message starts "Error whilst parsing config file")."""
  wrapped = error.__context__
  if wrapped is None or not str(wrapped).startswith('Error whilst parsing config file'):
    return None
  return wrapped.__context__


def _missing_config_file(argv: list[str]) -> str | None:
  """One line for a `--config=FILE.py` that does not exist (ml_collections then fails the
  first override, in four lines blaming it), or None."""
  for arg in argv[1:]:
    name, _, value = arg[2:].partition('=')
    path = value.partition(':')[0]
    if arg.startswith('--') and path.endswith('.py') and not os.path.isfile(path):
      return no_config_file(name, path)
  return None


def no_config_file(flag: str, path: str) -> str:
  where = '' if os.path.isabs(path) else f' (relative to this folder, {os.getcwd()})'
  return (f'--{flag}={path}: no such config file{where}; pass one of the files under '
          'experiments/configs/ (README, Configs)')


def _config_load_problem(error: Exception, argv: list[str]) -> str | None:
  """One line for an exception raised while flags were parsed, or None if no config file was
  given. Flag parsers turn bad values into absl flag errors, so what reaches here comes from
  loading the Python code of a config file (`--config=FILE.py`: a syntax error, a missing
  get_config, a bug in it): name the file, the line and the fix."""
  given = [arg for arg in argv[1:]
           if arg.startswith('--') and arg.partition('=')[2].partition(':')[0].endswith('.py')]
  if not given:
    return None
  where = ''  # a SyntaxError's str() already says "(file.py, line 3)"
  if not isinstance(error, SyntaxError):
    # The config module's own frames follow ml_collections' loader frames.
    frames = traceback.extract_tb(error.__traceback__)
    loader = max((i for i, frame in enumerate(frames) if 'ml_collections' in frame.filename),
                 default=-1)
    if frames[loader + 1:]:
      where = f' ({frames[-1].filename}, line {frames[-1].lineno})'
  return (f'{given[-1]}: the config file did not load: {type(error).__name__}: {error}{where}; '
          'fix it: it must define get_config() returning an ml_collections.ConfigDict, as the '
          'files under experiments/configs/ do')


# A kind of config: the top-level fields that tell it from the other kind, what it is called
# and a file of that kind.
GAN_CONFIG = (('batch_size', 'num_epochs', 'num_steps', 'model', 'loss', 'optimizer', 'data'),
              'a GAN config', 'experiments/configs/dcgan_mnist.py')
CLASSIFIER_CONFIG = (('dataset', 'batch_size', 'num_epochs', 'learning_rate', 'max_shift'),
                     'a classifier config', 'experiments/configs/classifier_mnist.py')


def config_from_flag(kind: tuple[tuple[str, ...], str, str], name: str = 'config'):
  """The ConfigDict of an ml_collections config-file flag, checked to be of `kind`
  (GAN_CONFIG or CLASSIFIER_CONFIG): a config of the other kind, or a get_config that returns
  something else, is one line rather than a traceback at its first missing field. So is a file
  that does not exist (ml_collections defers it to a multi-line error on first use), and an
  override that gives a group of fields a dict (`--config.model={...}`), which would drop the
  group's other fields."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  path = config_flags.get_config_filename(flags.FLAGS[name])
  if not os.path.isfile(path):
    raise FileNotFoundError(no_config_file(name, path))
  config = flags.FLAGS[name].value
  fields, what, example = kind
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f'--{name}={path}: get_config() returned a {type(config).__name__}, not an '
                     f'ml_collections.ConfigDict: return one, as {example} does')
  missing = [field for field in fields if field not in config]
  if missing:
    raise ValueError(f'--{name}={path} is not {what} (it has no {", ".join(missing)}): pass '
                     f'{what} such as {example}')
  overrides = config_flags.get_override_values(flags.FLAGS[name])
  for group, value in overrides.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):  # the group's other fields dropped
      example = group
      while isinstance(value, (dict, ml_collections.ConfigDict)):  # down to a field it names
        field = next(iter(value), 'FIELD')
        example, value = f'{example}.{field}', value.get(field)
      raise ValueError(f'--{name}.{group}={{...}} replaces the whole group {group}, dropping '
                       f'the fields it leaves out: set them one by one, e.g. '
                       f'--{name}.{example}=VALUE')
  if 'num_epochs' in overrides and config.get(
      'num_steps', 0) > 0:
    raise ValueError(f'--{name}.num_epochs has no effect: num_steps={config.num_steps} counts '
                     f'instead; add --{name}.num_steps=0 to train by epochs')
  return config


def refuse_empty_metrics() -> None:
  """For the calling script's --metrics list flag: empty (`--metrics=`) would mean every metric
  (cas_cnn's minutes included), not none; absent it still does."""
  flags.register_validator('metrics', lambda names: names is None or bool(names),
                           '--metrics is empty: name the metrics to compute, or leave the flag '
                           'out for all that apply')


def check_export_args(out: str | None, grid: str | None) -> None:
  """The exporting scripts' output checks (experiments.sample, sample_strings): something to
  write, an .npz name for --out and a .png name for --grid."""
  from absl import app  # pylint: disable=g-import-not-at-top
  if not out and not grid:
    raise app.UsageError('nothing to write: give --out=FILE.npz and/or --grid=FILE.png')
  for flag, path in (('out', out), ('grid', grid)):
    if path:
      check_file_to_write(flag, path)
  if out and not out.endswith('.npz'):
    raise app.UsageError(f'--out={out} must end in .npz')
  if grid and not grid.endswith('.png'):
    raise app.UsageError(f'--grid={grid} must end in .png')


# What experiments.train writes in a run folder (README, The run folder): anything below the
# first, and the files the second matches (relative to the run, '/' between names).
_TRAINING_FOLDERS = ('checkpoints', 'best', 'resampling')
_TRAINING_FILES = re.compile(r'config\.json|metrics\.jsonl|machine\.jsonl|training\.lock|'
                             r'best\.json|samples/(final\.png|progress\.gif|epoch_\d+\.png)')


def _run_writing(path: str) -> str | None:
  """The run folder whose training writes `path` (the nearest folder above it holding a
  config.json, if the path is one of its training's files), else None."""
  path = os.path.abspath(path)
  run = os.path.dirname(path)
  while not os.path.isfile(os.path.join(run, 'config.json')):
    if os.path.dirname(run) == run:
      return None
    run = os.path.dirname(run)
  names = os.path.relpath(path, run).split(os.sep)
  if (len(names) > 1 and names[0] in _TRAINING_FOLDERS) or _TRAINING_FILES.fullmatch(
      '/'.join(names)):
    return run
  return None


def check_file_to_write(flag: str, path: str) -> None:
  """--`flag`=`path` names a file that can be written: not a folder, nor below a file, nor one
  of the files a run's training writes (a grid written over samples/final.png), in a folder
  this process may write."""
  from absl import app  # pylint: disable=g-import-not-at-top
  if os.path.isdir(path):
    raise app.UsageError(f'--{flag}={path} is a folder: name a file to write')
  run = _run_writing(path)
  if run is not None:
    raise app.UsageError(f'--{flag}={path} is where the training of the run {run} writes its '
                         'own files: name a file elsewhere')
  parent = atomic.nearest_existing_parent(path)
  if not os.path.isdir(parent):
    raise app.UsageError(f'--{flag}={path} lies below {parent}, a file: name a path in a folder')
  if atomic.unwritable_folder(path):
    raise app.UsageError(f'--{flag}={path}: {parent} is not writable here: name a file in a '
                         'folder you can write')


def check_record_out(path: str, *record_keys: str) -> None:
  """A JSON record's --out, checked before any work: a .json name, not a folder, and, if the
  file exists, an earlier record (a JSON object holding every one of `record_keys`), never
  another file that writing it would destroy (a run's config.json, a sweep's summary, the
  scored samples)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  check_file_to_write('out', path)
  if not path.endswith('.json'):
    raise app.UsageError(f'--out={path} must end in .json')
  if os.path.exists(path):
    try:
      with open(path) as f:
        earlier = json.load(f)
    except (OSError, ValueError):
      earlier = None
    if not isinstance(earlier, dict) or not set(record_keys) <= earlier.keys():
      raise app.UsageError(f'--out={path} exists and is not a record this script wrote: name '
                           'another file (it is left as it is)')


def define_data_location_flags() -> tuple[flags.FlagHolder, flags.FlagHolder]:
  """--manual_dir and --data_dir of the scripts that read a run's real digits, for a run folder
  whose config.json names folders this machine lacks (empty: the run's)."""
  manual_dir = flags.DEFINE_string(
      'manual_dir', os.environ.get('JAXGAN_MANUAL_DIR', ''),
      "Folder holding <dataset>/<IDX files> (default: $JAXGAN_MANUAL_DIR, else the run's "
      'data.manual_dir).')
  data_dir = flags.DEFINE_string('data_dir', '', "tfds's prepared copies (default: the run's "
                                 'data.data_dir, else $TFDS_DATA_DIR).')
  return manual_dir, data_dir


def define_truncation(help_text: str) -> flags.FlagHolder:
  """The --truncation flag of the sampling scripts (see `generate.latents`), refused at parsing
  unless finite and >= 0 (absl's bounds let NaN through)."""
  holder = flags.DEFINE_float('truncation', 0.0, help_text + ' 0: none.')
  flags.register_validator('truncation', lambda value: 0 <= value < math.inf,
                           '--truncation must be finite and >= 0 (0: none)')
  return holder


def define_latent_scale(help_text: str) -> flags.FlagHolder:
  """The --latent_scale flag of the sampling and scoring scripts (see `generate.latents`),
  refused at parsing unless finite and > 0; None (not given): the run's sample_latent_scale
  (`run_folder.latent_scale`)."""
  holder = flags.DEFINE_float('latent_scale', None, help_text + ' Default: the run\'s config '
                              'field sample_latent_scale (1 unless its config says otherwise).')
  flags.register_validator('latent_scale', lambda value: value is None or 0 < value < math.inf,
                           '--latent_scale must be finite and > 0 (1: the training distribution)')
  return holder

