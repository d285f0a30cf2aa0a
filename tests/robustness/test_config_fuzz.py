"""Property-based: whatever a recipe file or a ``--set`` says, building the run's parts either
works or raises a one-line VgglabError, never another exception type (issue 19)."""

import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vgglab.data.loader import BatchLoader
from vgglab.data.normalization import Normalization
from vgglab.data.split import Split
from vgglab.data.stats import PixelStats
from vgglab.errors import VgglabError
from vgglab.models import create_model, create_model_from_spec
from vgglab.train.config import SECTIONS, load_config

from ..conftest import TINY

KEYS = [f"{section}.{f}" for section, cls in SECTIONS.items() for f in cls.model_fields] + ["name"]
MODEL_OPTION_KEYS = [
    f"model.options.{k}"
    for k in (
        "width",
        "num_classes",
        "in_chans",
        "input_size",
        "head",
        "hidden",
        "dropout",
        "batch_norm",
        "whiten",
        "pool_first",
        "blocks",
        "init",
    )
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.sampled_from([10**18, -1, 0, 1, 2, 3, 32]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["auto", "sgd", "plateau", "vgg11", "cifar", "flip", "", "nan"]),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)

# one tiny training split (16 images, 3x32x32) to build and draw a batch from
X = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
SPLIT = Split(X, torch.arange(16) % 4)
STATS = PixelStats(torch.full((3,), 0.5), torch.full((3,), 0.25), torch.tensor([0.03, 0.01, 0.005]), torch.eye(3))


def build_parts(cfg) -> None:
    """The model on the meta device (no memory, any size) and one augmented training batch."""
    m = cfg.model
    with torch.device("meta"):
        if m.spec is not None:
            create_model_from_spec({"num_classes": 4, "input_size": 32, **m.spec})
        else:
            create_model(m.name, **{"num_classes": 4, "input_size": 32, **m.options})
    norm = Normalization.of(STATS, cfg.augment)
    loader = BatchLoader(
        SPLIT,
        min(cfg.data.batch_size, 16),
        image_size=32,
        norm=norm,
        augment=cfg.augment,
        pca=STATS,
        shuffle=True,
        drop_last=True,
        seed=cfg.train.seed if abs(cfg.train.seed) < 2**31 else 0,
        channels_last=False,
    )
    next(iter(loader))


def must_be_clean(fn) -> None:
    try:
        fn()
    except VgglabError as exc:
        assert "\n" not in str(exc).strip(), f"a multi-line error: {exc}"


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS + MODEL_OPTION_KEYS), values, max_size=4))
def test_random_set_values_fail_only_with_one_line_errors(overrides):
    must_be_clean(lambda: build_parts(load_config(TINY, overrides)))


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(KEYS + MODEL_OPTION_KEYS), max_size=3), st.lists(st.text(max_size=12), max_size=3))
def test_random_set_strings_fail_only_with_one_line_errors(keys, raws):
    """``--set key=TEXT`` as the CLI gives it: TEXT parsed as YAML, whatever it is."""
    must_be_clean(lambda: build_parts(load_config(TINY, [f"{k}={r}" for k, r in zip(keys, raws, strict=False)])))


documents = st.one_of(
    values.map(lambda v: yaml.safe_dump(v)),
    st.dictionaries(st.sampled_from(list(SECTIONS) + ["name", "extra"]), values, max_size=4).map(yaml.safe_dump),
    st.text(max_size=60),
    st.binary(max_size=40),
)


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_yaml_documents_fail_only_with_one_line_errors(doc):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "recipe.yaml"
        path.write_bytes(doc if isinstance(doc, bytes) else doc.encode())
        must_be_clean(lambda: build_parts(load_config(path)))


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  epochs: 1\ntrain:\n  seed: 2\n", "key 'train' appears twice .*lines 1 and 3"),
        ("", "is empty"),
        ("# only a comment\n", "is empty"),
        ("- data\n- model\n", "top level must be a mapping.*got a list"),
        ("[" * 10000 + "]" * 10000, "nested too deeply|deeper than"),
        ("a: &x [*x]\n", "refers to the mapping or list that contains it"),
        ("train: {epochs: 1, epochs: 2}\n", "key 'epochs' appears twice"),
        (
            "a: &a [1]\n"
            + "".join(f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i - 1}'}, *{'a' if i == 0 else f'b{i - 1}'}]\n" for i in range(30)),
            "more than 100,000 values",
        ),
    ],
)
def test_bad_recipe_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(VgglabError, match=message) as err:
        load_config(path)
    assert "\n" not in str(err.value)


def test_non_utf8_recipe_is_one_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"train:\n  epochs: \xff\xfe\n")
    with pytest.raises(VgglabError, match=r"not UTF-8 text \(byte 0xff at offset 17\)"):
        load_config(path)
