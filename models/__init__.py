"""Pure ``nn.Module`` definitions: explicit size arguments, no training logic."""

from models.dcgan import Discriminator, Generator
from models.frame_classifier import FeaturesOf, FrameClassifier

__all__ = ["Discriminator", "FeaturesOf", "FrameClassifier", "Generator"]
