"""Reading a run folder written by experiments.train (see jaxgan.trainer for its layout)."""
from __future__ import annotations

import json
import os

import ml_collections


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run was trained with."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: --workdir must be a run folder written by '
                            'experiments.train')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))
