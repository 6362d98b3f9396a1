"""The papers' MLP GAN on MNIST."""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'mlp'
  config.optimizer.generator.lr = 2e-4
  config.optimizer.discriminator.lr = 2e-4
  config.optimizer.generator.b1 = 0.5
  config.optimizer.discriminator.b1 = 0.5
  config.num_epochs = 20
  return config
