import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def cifar10_root():
    """The real CIFAR-10 ImageFolder tree, if the environment provides it (CI does)."""
    return os.environ.get("VGGLAB_CIFAR10")
