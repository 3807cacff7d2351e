"""Pure ``nn.Module`` definitions: explicit size arguments, no training logic."""

from models.dcgan import Discriminator, Generator

__all__ = ["Discriminator", "Generator"]
