"""The ``probe`` section of the training config: a linear probe instead of training (vgglab.train.linear_probe)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from ..declare import Section, setting
from ..strict import ConfigError

ProbeLayer = Literal["fc7", "fc6", "pool5"]  # by the paper's names


class ProbeConfig(Section, section="probe"):
    """A linear probe (``enabled: true``): the frozen pretrained VGG of ``train.init_from`` computes each
    image's descriptor once into a feature cache (vgglab.train.feature_cache) and a multinomial logistic
    regression is fitted on the cache; the fitted head is written into the model's class layer
    (vgglab.train.linear_probe). No epoch of the network is trained."""

    enabled: bool = setting(False, "true: this run is a probe (train.init_from's weights stay fixed; no epochs)")
    layer: ProbeLayer = setting("fc7", "the descriptor: fc7 (the paper's Appendix B), fc6, or pool5 average-pooled")
    descriptor: Literal["center", "dense"] = setting(
        "center", "center: the evaluation crop; dense: Appendix B, whole images at scales"
    )
    scales: Annotated[list[Annotated[int, Field(ge=32, le=4096)]], Field(min_length=1)] = setting(
        [256, 384, 512], "dense: the smallest side Q of each scale, pixels"
    )
    scale_pool: Literal["mean", "stack"] = setting("mean", "dense: average the scales' descriptors, or join them")
    c_grid: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1), AfterValidator(sorted)] = setting(
        [0.001, 0.01, 0.1, 1.0, 10.0, 100.0], "inverse regularisation strengths C tried; the best on validation is kept"
    )
    max_iter: int = setting(1000, "L-BFGS iterations per fit", ge=1)
    views: int = setting(0, "augmented views per training image, cached too (the recipe's augment)", ge=0, le=100)
    head: Literal["auto", "logistic", "sgd"] = setting(
        "auto", "logistic: fitted by L-BFGS; sgd: trained by optim and schedule over views; auto: sgd with views"
    )

    @property
    def trains_head(self) -> bool:
        """Whether the class layer is trained by SGD over epochs (``head``), not fitted by L-BFGS."""
        return self.head == "sgd" or (self.head == "auto" and self.views > 0)

    @model_validator(mode="after")
    def _views(self):
        if self.views and self.descriptor == "dense":
            raise ConfigError(
                "probe.views are random crops; the dense descriptor sees the whole image: set views: 0 or descriptor: center"
            )
        return self
