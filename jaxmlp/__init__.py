"""jaxmlp: multi-layer perceptron training in JAX from first principles."""
from jaxmlp import optim

__all__ = ["optim"]
