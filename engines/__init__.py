"""Process functions and ``create_*_trainer`` / ``create_*_evaluator`` factories, one file per task family."""

from engines.gan import create_gan_trainer

__all__ = ["create_gan_trainer"]
