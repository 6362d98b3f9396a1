"""Test session setup: 8 fake CPU devices, so multi-device code is tested on any machine.

XLA reads the flag once, when jax initialises its backends: it must be set before any test
module imports jax, which is why it lives here.
"""
import os
import tempfile

import pytest

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


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
