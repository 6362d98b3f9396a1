"""Exponential moving average of the generator's parameters (Karras et al. 2018, Yazici et al.
2019): after generator update t, ema_t = decay * ema_{t-1} + (1 - decay) * params_t, starting
from the initial parameters. The sampled and evaluated generator is the EMA one when enabled
(jaxgan.state.generator_variables).

Only parameters are averaged. Batch-normalisation running statistics are already moving
averages over steps (momentum 0.99 in the DCGAN), so the EMA generator reuses them; they were
measured on the trained weights' activations, a mismatch that is small once the EMA is close to
the weights (decay 0.999 averages over ~1000 steps).
"""
from __future__ import annotations

import jax


def update(ema_params, params, decay: float):
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)
