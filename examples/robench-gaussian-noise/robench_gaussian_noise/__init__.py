"""An example robench defense plugin: Gaussian input noise (randomized smoothing)."""

from robench_gaussian_noise.defense import GaussianNoise

__all__ = ["GaussianNoise"]
__version__ = "0.1.0"
