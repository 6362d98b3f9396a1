"""The Kannada-MNIST paper's conv GAN on Kannada-MNIST."""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'kannada'
  config.data.name = 'kannada_mnist'
  config.optimizer.generator.lr = 2e-4
  config.optimizer.discriminator.lr = 2e-4
  config.optimizer.generator.b1 = 0.5
  config.optimizer.discriminator.b1 = 0.5
  return config
