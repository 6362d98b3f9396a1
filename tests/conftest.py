"""Test session setup: 8 fake CPU devices, so multi-device code is tested on any machine, and
a compilation cache per test process.

XLA reads the flag once, when jax initialises its backends: it must be set before any test
module imports jax, which is why it lives here.
"""
import atexit
import os
import shutil
import tempfile

import pytest

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

# Many tests compile the same programs (a model's init, one step on 1 or 8 devices): XLA's
# persistent cache compiles each once per process (test_parallel.py: 50 s -> 33 s). Set before
# any compilation, which is when jax decides whether to use it. One folder per process, removed
# at exit, and not handed to the scripts the tests start (jax writes entries non-atomically, and
# some tests kill those scripts), so no test reads an entry another process is writing.
_XLA_CACHE = tempfile.mkdtemp(prefix='jaxgan-tests-xla-cache-')
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
jax.config.update('jax_compilation_cache_dir', _XLA_CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)


@pytest.fixture(scope='session', autouse=True)
def _temporary_files_in_pytest_basetemp(tmp_path_factory):
  """Points Python's and subprocesses' temporary files into pytest's own folder, which pytest
  rotates away: tfds 4.9 leaves an empty /tmp/tmp*tfds folder behind for every builder made
  over an unprepared data_dir (DatasetInfo.initialize_from_bucket runs mkdtemp before it finds
  GCS disabled), and the suite makes hundreds of them."""
  folder = str(tmp_path_factory.mktemp('tempfile'))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tempfile, 'tempdir', folder)
    patch.setenv('TMPDIR', folder)
    yield
