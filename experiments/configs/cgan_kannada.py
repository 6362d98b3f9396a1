"""Class-conditional DCGAN on Kannada-MNIST: cgan_mnist.py's recipe (projection discriminator,
class-conditional BN in G, Adam 2e-4/b1 0.5, mode seeking 0.2; none of it tuned on Kannada)."""
from experiments.configs import cgan_mnist


def get_config():
  config = cgan_mnist.get_config()
  config.data.name = 'kannada_mnist'
  return config
