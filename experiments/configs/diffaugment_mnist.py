"""DCGAN on a few real digits with DiffAugment (Zhao et al. 2020): translation and cutout on
every image the discriminator sees, and the generator's EMA. Set the number of real examples
with --config.data.num_train_examples=K (default 1000)."""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.data.num_train_examples = 1000
  config.augment.policy = 'translation,cutout'
  config.ema.decay = 0.999
  config.num_epochs = 300  # 15 steps per epoch at 1000 examples (64 a batch): 4,500 steps
  return config
