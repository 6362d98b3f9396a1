"""Run-folder files (see jaxgan.trainer for the layout): reading the config, atomic writes."""
from __future__ import annotations

import json
import os

import ml_collections

from jaxgan import atomic


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run was trained with."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: --workdir must be a run folder written by '
                            'experiments.train')
  return ml_collections.ConfigDict(read_config_json(path))


def read_config_json(path: str) -> dict:
  """A run's config.json as written by experiments.train (refused, naming the file, if not)."""
  with open(path) as f:
    try:
      config = json.load(f)
    except ValueError as error:
      problem = f'not JSON: {error}'
    else:
      if isinstance(config, dict) and {'model', 'data', 'loss'} <= config.keys():
        return config
      problem = 'JSON without its model, data and loss sections'
  raise ValueError(f'{path} is not the config experiments.train writes ({problem}): restore it '
                   'from a copy of the run folder')


def latent_scale(config: ml_collections.ConfigDict, override: float | None = None) -> float:
  """The scale a run's latents are drawn at (see `generate.latents`): `override` (a script's
  --latent_scale) when given, else the run's `sample_latent_scale` (1 in runs older than it)."""
  return float(override if override is not None else config.get('sample_latent_scale', 1.0))


def write_json_atomic(obj, path: str) -> None:
  """Write next to `path` (its folder made if missing), then rename: a killed process never
  leaves half a file."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic.replacing(path) as tmp, open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write('\n')
