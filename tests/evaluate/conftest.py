import copy

import pytest

import vgglab

from ..conftest import TINY


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A small model trained on digits (a few seconds), shared by a test module."""
    cfg = copy.deepcopy(TINY)
    cfg["train"]["epochs"] = 3
    cfg["model"]["options"] = {"width": 0.125, "head": "cifar", "hidden": 32}
    out = tmp_path_factory.mktemp("run") / "digits"
    vgglab.fit(cfg, out=out, log=lambda *_: None)
    return out
