"""Test session setup: 8 fake CPU devices, so multi-device code is tested on any machine.

XLA reads the flag once, when jax initialises its backends: it must be set before any test
module imports jax, which is why it lives here.
"""
import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
