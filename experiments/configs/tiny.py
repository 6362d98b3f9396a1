"""A few-second run for tests and quick local checks (like big_vision's runlocal)."""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'mlp'
  config.data.num_train_examples = 256
  config.batch_size = 32
  config.num_epochs = 2
  config.log_every = 2
  config.checkpoint_every = 4
  config.keep_checkpoints = 2
  config.sample_grid_rows = 4
  config.sample_grid_scale = 1
  return config
