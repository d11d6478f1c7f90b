"""Drop-in ``torch.optim`` optimizers, each defined by one update rule."""

from .adam import Adam, AdamW

__all__ = ["Adam", "AdamW"]
