"""The CLI's choices come from the library's own constants, so they cannot drift from what it accepts."""

import argparse
import json

import pytest

from vgglab.cli import build_parser, main
from vgglab.data.config import DATASETS
from vgglab.data.dataset import SPLITS
from vgglab.data.views import TTA_MODES
from vgglab.export import FORMATS
from vgglab.models.spec import HEAD_TYPES
from vgglab.shipped import SCHEMA_FILE, recipes_dir
from vgglab.train.config import config_schema
from vgglab.train.sections import TRANSFER_MODES


def choices(command: str, option: str) -> list:
    sub = next(a for a in build_parser()._subparsers._group_actions if a.dest == "command").choices[command]
    return list(next(a for a in sub._actions if option in a.option_strings).choices)


@pytest.mark.parametrize(
    "command, option, expected",
    [
        ("summary", "--head", HEAD_TYPES),
        ("train", "--init-mode", TRANSFER_MODES),
        ("eval", "--split", SPLITS),
        ("eval", "--tta", TTA_MODES),
        ("features", "--split", SPLITS),
        ("data", "--dataset", DATASETS),
        ("export", "--format", tuple(FORMATS)),
    ],
)
def test_choices_are_the_librarys(command, option, expected):
    assert choices(command, option) == list(expected)


def test_summary_offers_every_head_including_linear(capsys):
    assert "linear" in choices("summary", "--head")
    assert main(["summary", "vgg11", "--head", "linear", "--input-size", "32", "--num-classes", "10"]) == 0
    assert "head" in capsys.readouterr().out


def test_a_wrong_choice_is_one_line_naming_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "run", "--tta", "sideways"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "invalid choice: 'sideways'" in err and "flip-shift" in err


def test_schema_prints_the_schema_the_recipes_name(capsys):
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == config_schema() and printed["properties"]["optim"]["$ref"] == "#/$defs/OptimConfig"
    assert (recipes_dir() / SCHEMA_FILE).read_text() == json.dumps(printed, indent=2) + "\n"


def test_a_shared_option_reads_the_same_in_every_command():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {
        flag: {a.help for p in sub.choices.values() for a in p._actions if flag in a.option_strings}
        for flag in ("--precision", "--device", "--set")
    }
    assert all(len(h) == 1 for h in helps.values()), helps
