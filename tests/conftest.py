import atexit
import copy
import os
import shutil
import tempfile

import pytest
import torch

# Tests never write into the user's ~/.cache: one scratch cache for the whole session, removed when it ends
# (it holds decoded datasets, up to 0.2 GB a run: left behind, repeated runs fill /tmp).
if "VGGLAB_CACHE" not in os.environ:
    os.environ["VGGLAB_CACHE"] = tempfile.mkdtemp(prefix="vgglab-test-cache-")
    atexit.register(shutil.rmtree, os.environ["VGGLAB_CACHE"], ignore_errors=True)

TINY = {
    "name": "tiny",
    "data": {"dataset": "digits", "batch_size": 32, "train_limit": 320},
    "augment": {"crop": "pad", "padding": 2, "flip": False},
    "model": {"name": "vgg11_bn", "options": {"width": 0.125, "head": "gap"}},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "schedule": {"name": "none"},
    "train": {"epochs": 2, "seed": 0},
    "log": {"progress": "none"},
}


@pytest.fixture
def tiny_config():
    """A digits recipe small enough to train two epochs in a few seconds."""
    return copy.deepcopy(TINY)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def cifar10_root():
    """The real CIFAR-10 ImageFolder tree, if the environment provides it (CI does)."""
    return os.environ.get("VGGLAB_CIFAR10")
