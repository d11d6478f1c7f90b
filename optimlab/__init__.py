"""optimlab: the optimizers of the Adam story, verified, fast, and a lab to compare them."""

__version__ = "0.1.0"
