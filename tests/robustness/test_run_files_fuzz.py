"""Property-based: whatever a hand edit leaves in a file vgglab reads back (the lock, config.yaml's
resolved and changes, MLflow's id file, a split record, a checkpoint's recorded config), reading it
either works or is one VgglabError line, never another exception type (issue 34, class 4)."""

import gzip
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vgglab.errors import VgglabError
from vgglab.evaluate.inference import Inference
from vgglab.machine import machine_info
from vgglab.run.lock import _describe, _read
from vgglab.run.record import read_record
from vgglab.speed import SpeedChoice
from vgglab.strict import ConfigError
from vgglab.train.config import load_config
from vgglab.train.tracking import read_id_file

from ..conftest import TINY
from .test_config_fuzz import values

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GOOD_SPEED = SpeedChoice("fp32", False, machine=machine_info()).to_dict()


def one_line_or_fine(fn, *args):
    try:
        fn(*args)
    except VgglabError as exc:
        assert "\n" not in str(exc).strip(), str(exc)


@FUZZ
@given(st.dictionaries(st.sampled_from(["pid", "host", "started", "command", "x"]), values, max_size=5))
def test_any_lock_file_content_still_describes_a_holder(blob):
    fd, path = tempfile.mkstemp()
    try:
        os.write(fd, json.dumps(blob, default=str).encode())
        holder = _read(fd)
        assert isinstance(_describe(holder), str)
    finally:
        os.close(fd)
        os.unlink(path)


@FUZZ
@given(st.sampled_from(sorted(GOOD_SPEED)), values)
def test_any_edit_of_a_resolved_record_is_read_or_one_line(key, value):
    edited = {**GOOD_SPEED, key: value}
    one_line_or_fine(SpeedChoice.read, edited, "config.yaml: resolved")
    one_line_or_fine(load_config, {**TINY, "resolved": edited})


@pytest.mark.parametrize("key", sorted(GOOD_SPEED))
def test_a_resolved_record_missing_a_key_is_read_or_one_line(key):
    """A record without ``channels_last`` raised a TypeError (the dataclass's own) before its keys were
    checked by declaration; a key that is required is now named."""
    edited = {k: v for k, v in GOOD_SPEED.items() if k != key}
    one_line_or_fine(SpeedChoice.read, edited, "config.yaml: resolved")
    one_line_or_fine(load_config, {**TINY, "resolved": edited})
    if key in ("precision", "channels_last"):
        with pytest.raises(ConfigError, match=rf"resolved.{key}: required, but not given"):
            SpeedChoice.read(edited, "config.yaml: resolved")


@FUZZ
@given(values)
def test_any_changes_record_is_read_or_one_line(value):
    one_line_or_fine(load_config, {**TINY, "changes": value})


@FUZZ
@given(values)
def test_any_mlflow_id_file_is_read_or_one_line(value):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mlflow_run.json"
        path.write_text(json.dumps(value, default=str))
        one_line_or_fine(read_id_file, path)


@FUZZ
@given(values)
def test_any_split_record_is_read_or_one_line(value):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "splits.json.gz").write_bytes(gzip.compress(json.dumps(value, default=str).encode()))
        one_line_or_fine(read_record, Path(d))


@FUZZ
@given(st.sampled_from(["data", "augment"]), values)
def test_any_recorded_config_section_is_read_or_one_line(section, value):
    inf = Inference.__new__(Inference)
    inf.checkpoint = {"path": "edited.pt", "config": {**TINY, section: value}}
    one_line_or_fine(lambda: (inf.augment, inf.eval_batch_size, inf.data_config()))
