"""Least-squares GAN (Mao et al. 2017; targets real 1, fake 0, generator 1) with the DCGAN
networks on MNIST; Adam(2e-4, b1=0.5) as in the paper."""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.loss.name = 'lsgan'
  for opt in (config.optimizer.generator, config.optimizer.discriminator):
    opt.lr, opt.b1 = 2e-4, 0.5
  return config
