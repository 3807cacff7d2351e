"""A small convolutional classifier of Atari screens: which game is this frame from?

Its penultimate layer (``features``) is the feature space of Atari-FID, as Inception's pool layer is the feature space
of the usual FID: trained on many games, it describes Atari screens in general (palette, layout, sprites).

    classifier = FrameClassifier(image_size=64, n_classes=12)
    logits = classifier(frames)            # (B, 12)
    features = classifier.features(frames)  # (B, 64)
"""

from torch import Tensor, nn

from models.dcgan import stride2_stages

FEATURE_SIZE = 64  # Atari-FID's feature space


class FrameClassifier(nn.Module):
    def __init__(self, image_size: int = 64, n_classes: int = 12, width: int = 16, feature_size: int = FEATURE_SIZE):
        super().__init__()
        stages = stride2_stages(image_size)
        layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.ReLU()]
        channels = width
        for _ in range(stages - 1):  # halve the side down to 4x4, doubling the channels
            layers += [nn.Conv2d(channels, channels * 2, 4, 2, 1), nn.BatchNorm2d(channels * 2), nn.ReLU()]
            channels *= 2
        self.body = nn.Sequential(*layers)  # (B, channels, 4, 4)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(channels * 16, feature_size), nn.ReLU())
        self.head = nn.Linear(feature_size, n_classes)
        self.feature_size = feature_size

    def features(self, frames: Tensor) -> Tensor:  # (B, 3, S, S) in [-1, 1] -> (B, feature_size)
        return self.embed(self.body(frames))

    def forward(self, frames: Tensor) -> Tensor:
        return self.head(self.features(frames))


class FeaturesOf(nn.Module):
    """The classifier's feature layer as a module of its own (what ``ignite.metrics.FID`` calls)."""

    def __init__(self, classifier: FrameClassifier):
        super().__init__()
        self.classifier = classifier
        self.feature_size = classifier.feature_size

    def forward(self, frames: Tensor) -> Tensor:
        return self.classifier.features(frames)
