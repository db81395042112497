"""`--help` tells the truth: every option of every subcommand has help text, `train --help` lists
every dataset with the keyword arguments its class really takes, and the --loss keys are the
fields of LossConfig (issue 14 item 4)."""

import argparse
import dataclasses
import inspect
import io
from contextlib import redirect_stdout

import pytest

from spikescan.cli import SUBCOMMANDS, build_parser, main
from spikescan.runtime.cli_train import DATASET_OPTIONS, DATASETS, LOSS_KEYS

_CLASSES = {
    "yinyang": ("spikescan.runtime.data.yinyang", "YinYang"),
    "randman": ("spikescan.runtime.data.randman", "Randman"),
    "digits": ("spikescan.runtime.data.digits", "Digits"),
    "shd": ("spikescan.runtime.data.hsd", "HSDEvents"),
    "ssc": ("spikescan.runtime.data.hsd", "HSDEvents"),
    "nmnist": ("spikescan.runtime.data.nmnist", "NMNISTEvents"),
    "dvsgesture": ("spikescan.runtime.data.dvsgesture", "DVSGestureEvents"),
}
_POSITIONAL = {"self", "name", "kind", "split", "root"}  # given by get_dataset, not by --data-opt


def _options(cls) -> set[str]:
    sig = inspect.signature(cls.__init__)
    assert not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()), cls
    return set(sig.parameters) - _POSITIONAL


@pytest.mark.parametrize("name", DATASETS)
def test_data_opt_keys_are_the_constructor_arguments(name):
    import importlib

    mod, cls = _CLASSES[name]
    documented = set(DATASET_OPTIONS[name][1].split())
    assert documented == _options(getattr(importlib.import_module(mod), cls))


def test_every_dataset_is_documented_and_registered():
    from spikescan.runtime.data import NAMES

    assert tuple(DATASETS) == tuple(NAMES) == tuple(DATASET_OPTIONS)


def test_loss_keys_are_the_loss_config_fields():
    from spikescan.runtime.losses import LossConfig

    assert set(LOSS_KEYS) == {f.name for f in dataclasses.fields(LossConfig)}


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_option_has_help_text(command):
    parser = build_parser(load_args=command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    parsers = [sub] + [p for a in sub._actions if isinstance(a, argparse._SubParsersAction)
                       for p in a.choices.values()]
    for p in parsers:
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and action.help.strip(), f"{p.prog}: {action.option_strings or action.dest} has no help"


def test_train_help_lists_datasets_and_their_keys():
    buf = io.StringIO()
    with redirect_stdout(buf), pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    text = buf.getvalue()
    for name, (_, keys) in DATASET_OPTIONS.items():
        assert f"  {name} " in text
        for key in keys.split():
            assert key in text, (name, key)
    for key in LOSS_KEYS:
        assert f"  {key} " in text
