"""The ``probe`` section of the training config: a linear probe instead of training (vgglab.train.linear_probe)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..strict import ConfigError
from ..strict import check_choice as _choice

# the descriptor layers a probe may read, by the paper's names, and the head each one leaves the run's model with
PROBE_LAYERS = ("fc7", "fc6", "pool5")
PROBE_DESCRIPTORS = ("center", "dense")


@dataclass
class ProbeConfig:
    """A linear probe (``enabled: true``): the frozen pretrained VGG of ``train.init_from`` computes each
    image's descriptor once into a feature cache (vgglab.train.feature_cache) and a multinomial logistic
    regression is fitted on the cache; the fitted head is written into the model's class layer
    (vgglab.train.linear_probe). No epoch of the network is trained."""

    enabled: bool = False  # true: this run is a probe (train.init_from's weights stay fixed; no epochs)
    # fc7: the second FC layer after its ReLU (the class layer's input, the paper's Appendix B descriptor);
    # fc6: the first FC after its ReLU (the run's model keeps one hidden layer); pool5: the last conv
    # block's map, global average pooled (the run's model gets the gap head)
    layer: str = "fc7"
    # center: the evaluation crop, as eval and predict see the image (the folded model equals the probe);
    # dense: Appendix B, the network applied densely over the whole image at each of ``scales``, averaged
    # over space and with the mirror, L2-normalised, the scales pooled (``scale_pool``)
    descriptor: str = "center"
    scales: list = field(default_factory=lambda: [256, 384, 512])  # dense: smallest side Q per scale
    scale_pool: str = "mean"  # dense: mean (sum-pooled, as the paper's VOC results) or stack (one descriptor per scale, joined)
    # inverse regularisation strengths (scikit-learn's C) tried; the one with the best validation top-1 is kept
    c_grid: list = field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0, 100.0])
    max_iter: int = 1000  # L-BFGS iterations per fit
    # K augmented views per training image (the recipe's augment: random-resized crop, flip), cached
    # too (K forwards once; named in the run's first line); the head (``head``) samples them
    views: int = 0
    # logistic: scikit-learn's logistic regression over every view at once, C chosen on validation; sgd: the
    # class layer trained by the recipe's optim and schedule for train.epochs, each epoch one view of each
    # training image (the center crop or one of the K), the best epoch on validation kept; auto: sgd with views
    head: str = "auto"

    @property
    def trains_head(self) -> bool:
        """Whether the class layer is trained by SGD over epochs (``head``), not fitted by L-BFGS."""
        return self.head == "sgd" or (self.head == "auto" and self.views > 0)

    def __post_init__(self):
        _choice("probe", "layer", self.layer, PROBE_LAYERS)
        _choice("probe", "descriptor", self.descriptor, PROBE_DESCRIPTORS)
        _choice("probe", "scale_pool", self.scale_pool, ("mean", "stack"))
        _choice("probe", "head", self.head, ("auto", "logistic", "sgd"))
        if (
            not isinstance(self.c_grid, list)
            or not self.c_grid
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and 0 < c < float("inf") for c in self.c_grid)
        ):
            raise ConfigError(f"probe.c_grid is a list of positive numbers (e.g. [0.01, 0.1, 1, 10]), got {self.c_grid!r}")
        self.c_grid = sorted(float(c) for c in self.c_grid)
        if (
            not isinstance(self.scales, list)
            or not self.scales
            or not all(isinstance(q, int) and 32 <= q <= 4096 for q in self.scales)
        ):
            raise ConfigError(f"probe.scales is a list of image sides in pixels (e.g. [256, 384, 512]), got {self.scales!r}")
        if isinstance(self.views, bool) or not isinstance(self.views, int) or not 0 <= self.views <= 100:
            raise ConfigError(f"probe.views is a number of augmented views per training image, 0..100, got {self.views!r}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ConfigError(f"probe.max_iter must be a positive number of iterations, got {self.max_iter!r}")
        if self.views and self.descriptor == "dense":
            raise ConfigError(
                "probe.views are random crops; the dense descriptor sees the whole image: set views: 0 or descriptor: center"
            )
