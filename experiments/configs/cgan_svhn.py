"""Class-conditional DCGAN on SVHN's cropped house-number digits, in the MNIST format jaxgan
loads them in (grey, 28x28; README, Data): cgan_mnist.py's recipe for about the same number of
steps (25 epochs of 1,144 steps over the 73,257 training digits, against MNIST's 30 of 937).
Add `--config.data.split=train+extra` to train on the 531,131 extra digits as well.

Unmeasured: the machines jaxgan was developed on had no copy of SVHN (README, Data). Its fcd,
label_accuracy and cas need the SVHN evaluation classifier, which each user trains once
(classifier_svhn.py); then add --config.eval_every=2000 to score during training.
"""
from experiments.configs import cgan_mnist


def get_config():
  config = cgan_mnist.get_config()
  config.data.name = 'svhn'
  config.num_epochs = 25
  return config
