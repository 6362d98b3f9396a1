"""Class-conditional DCGAN on EMNIST's digits (240,000 training digits from NIST Special
Database 19, other writers than MNIST's): cgan_mnist.py's recipe for about the same number of
steps (8 epochs of 3,750 steps, against MNIST's 30 of 937).

Unmeasured: the machines jaxgan was developed on had no copy of EMNIST (README, Datasets). Its
fcd, label_accuracy and cas need the EMNIST evaluation classifier, which each user trains once
(classifier_emnist.py); then add --config.eval_every=2000 to score during training.
"""
from experiments.configs import cgan_mnist


def get_config():
  config = cgan_mnist.get_config()
  config.data.name = 'emnist_digits'
  config.num_epochs = 8
  return config
