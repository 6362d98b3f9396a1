"""Every config file under experiments/configs: valid, buildable, and documented.

Most configs train only in their README commands (minutes to hours); these checks catch a
broken or undocumented one without training it.
"""
import importlib
import pathlib
import pkgutil
import re

import jax
import pytest

from experiments import configs
from jaxgan import trainer

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'
ALL_CONFIGS = sorted(m.name for m in pkgutil.iter_modules(configs.__path__))
# default.py is the base the others import; classifier_* train the evaluation classifiers.
GAN_CONFIGS = [n for n in ALL_CONFIGS if n != 'default' and not n.startswith('classifier_')]


def test_the_config_lists_are_what_the_folder_holds():
  assert {'dcgan_mnist', 'cgan_mnist', 'cgan_kannada', 'progressive_mnist'} <= set(GAN_CONFIGS)
  assert {'classifier_mnist', 'classifier_kannada'} <= set(ALL_CONFIGS) - set(GAN_CONFIGS)


@pytest.mark.parametrize('name', GAN_CONFIGS)
def test_every_gan_config_validates_and_builds_its_state(name):
  config = importlib.import_module(f'experiments.configs.{name}').get_config()
  trainer.validate(config)
  # The shortest run the config's warmup allows: the state's shapes do not depend on it.
  components = trainer.build_components(config, total_steps=config.schedule.warmup_steps + 1)
  state = trainer.abstract_state(components)  # shapes only: jax.eval_shape of the init
  assert jax.tree.leaves(state.g_params) and jax.tree.leaves(state.d_params)
  assert bool(jax.tree.leaves(state.d_state)) == config.model.spectral_norm
  assert bool(jax.tree.leaves(state.g_ema_params)) == (config.ema.decay > 0)


@pytest.mark.parametrize('name', [n for n in ALL_CONFIGS if n != 'default'])
def test_every_config_is_documented_in_the_readme(name):
  assert re.search(rf'(?<!\w){name}\.py', README.read_text()), (
      f'experiments/configs/{name}.py is not named in README.md: add it to a configs table')
