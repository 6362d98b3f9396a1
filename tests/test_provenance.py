"""machine.jsonl: the processor and versions behind each session of a run."""
import json
import logging
import os
import subprocess
import sys

from jaxgan import provenance

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 avx f16c sme smep avx2 avx512f avx512_vp2intersect sme_coherent

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R)
flags\t\t: fpu sse
"""

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes sve sve2 sme
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd4f
"""


def test_x86_kind_is_the_first_processors_name_family_model_and_vector_isa():
  assert provenance.cpu_from_cpuinfo(X86_CPUINFO) == dict(
      cpu='AMD EPYC', cpu_vendor='AuthenticAMD', cpu_family='26', cpu_model='2',
      isa=['avx', 'avx2', 'avx512_vp2intersect', 'avx512f', 'f16c', 'fma', 'sse', 'sse2',
           'sse4_1', 'ssse3'])  # not fpu, nor sme, smep, sme_coherent (memory protections)


def test_arm_kind_reads_the_arm_field_names():
  kind = provenance.cpu_from_cpuinfo(ARM_CPUINFO)
  assert (kind['cpu_vendor'], kind['cpu_family'], kind['cpu_model']) == ('0x41', '8', '0xd4f')
  assert kind['isa'] == ['asimd', 'sme', 'sve', 'sve2']


def test_this_hosts_record_names_its_software():
  record = provenance.host_record()
  assert record['backend'] == 'cpu' and record['devices'] >= 1 and record['jax']
  assert set(provenance.KIND_FIELDS) <= set(record)


def test_sessions_append_and_only_a_different_kind_is_reported(tmp_path, caplog):
  host = dict(provenance.cpu_from_cpuinfo(X86_CPUINFO), cores=2, jax='0.10.2', xla_flags='')
  assert provenance.record_session(str(tmp_path), 0, host) == []
  # The machine's core count is not part of the kind (the cores XLA:CPU computes on are, as
  # cpu_threads: see below).
  assert provenance.record_session(str(tmp_path), 100, dict(host, cores=8)) == []
  other = dict(host, cpu_family='25', isa=host['isa'][:-1])
  with caplog.at_level(logging.WARNING):
    changed = provenance.record_session(str(tmp_path), 200, other)
  assert changed == ["cpu_family: '26' -> '25'",
                     f"isa: {host['isa']!r} -> {host['isa'][:-1]!r}"]
  assert 'resumed at step 200 on another kind of machine than the session from step 100' in (
      caplog.text)
  lines = [json.loads(line) for line in (tmp_path / provenance.FILE).read_text().splitlines()]
  assert [line['step'] for line in lines] == [0, 100, 200]
  assert lines[2]['cpu_family'] == '25' and lines[1]['cores'] == 8 and lines[0]['time']


def test_a_half_written_last_line_is_skipped(tmp_path):
  host = dict(provenance.cpu_from_cpuinfo(X86_CPUINFO), jax='0.10.2')
  provenance.record_session(str(tmp_path), 0, host)
  with open(tmp_path / provenance.FILE, 'a') as f:
    f.write('{"step": 8, "cpu": "AMD')  # killed mid-append
  assert provenance.record_session(str(tmp_path), 8, host) == []
  lines = (tmp_path / provenance.FILE).read_text().splitlines()
  assert len(lines) == 3 and json.loads(lines[2])['step'] == 8


def test_the_key_type_is_part_of_the_kind_and_older_records_read_as_jax_default(tmp_path):
  # JAX_DEFAULT_PRNG_IMPL and JAX_THREEFRY_PARTITIONABLE change every draw of a run.
  script = ('from jaxgan import provenance; r = provenance.host_record(); '
            'print(r["prng_impl"], r["threefry_partitionable"])')
  env = dict(os.environ, JAX_DEFAULT_PRNG_IMPL='rbg', JAX_THREEFRY_PARTITIONABLE='0')
  out = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True,
                       check=True).stdout
  assert out.split() == ['rbg', 'False']
  host = dict(provenance.cpu_from_cpuinfo(X86_CPUINFO), jax='0.10.2')
  older = dict(host)  # written before the key type was recorded
  assert provenance.differences(older, dict(host, prng_impl='threefry2x32',
                                            threefry_partitionable=True)) == []
  assert provenance.differences(older, dict(host, prng_impl='rbg')) == [
      "prng_impl: 'threefry2x32' -> 'rbg'"]
  provenance.record_session(str(tmp_path), 0, dict(host, threefry_partitionable=True))
  assert provenance.record_session(str(tmp_path), 8, dict(host, threefry_partitionable=False)) == [
      'threefry_partitionable: True -> False']


def test_xla_cpus_thread_count_is_read_as_xla_sizes_its_pool(monkeypatch):
  monkeypatch.setattr(provenance, 'usable_cores', lambda: 2)
  threads = provenance.xla_cpu_threads
  assert threads(1, {}) == 2  # the cores the process may use
  assert threads(8, {}) == 8  # never fewer than the CPU devices
  assert threads(1, dict(PJRT_NPROC='3', NPROC='5')) == 3
  assert threads(1, dict(PJRT_NPROC='many', NPROC=' 5 ')) == 5  # not a number: the next one
  assert threads(1, dict(PJRT_NPROC='1_0')) == 2  # not a number to XLA either
  assert threads(1, dict(PJRT_NPROC='0')) == 1 and threads(4, dict(NPROC='-3')) == 4


def test_the_thread_count_is_part_of_the_kind_and_older_records_read_as_their_cores(tmp_path,
                                                                                  caplog):
  host = dict(provenance.cpu_from_cpuinfo(X86_CPUINFO), jax='0.10.2', backend='cpu',
              usable_cores=2, devices=1, processes=1)
  older = dict(host)  # written before cpu_threads was recorded: XLA took the usable cores
  assert provenance.differences(older, dict(host, cpu_threads=2)) == []
  assert provenance.differences(dict(older, devices=8), dict(host, devices=8,
                                                            cpu_threads=8)) == []
  assert provenance.differences(dict(host, backend='gpu'), dict(host, backend='gpu',
                                                                cpu_threads=None)) == []
  provenance.record_session(str(tmp_path), 0, older)
  with caplog.at_level(logging.WARNING):
    changed = provenance.record_session(str(tmp_path), 8, dict(host, cpu_threads=1))
  assert changed == ['cpu_threads: 2 -> 1']
  assert ('need not match one trained on a single machine (PJRT_NPROC=2 in the environment '
          "gives XLA:CPU its thread count)") in caplog.text
  # On another backend no environment variable gives the CPU's bits back: no hint.
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    provenance.record_session(str(tmp_path), 16, dict(host, backend='gpu', cpu_threads=None))
  assert 'cpu_threads: 1 -> None' in caplog.text and 'PJRT_NPROC' not in caplog.text
