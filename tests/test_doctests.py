"""The docstring examples of the public entry points run, and show what they say."""

import doctest
import importlib

import pytest

# Modules whose docstring examples are checked; add a module here when its entry points get examples.
MODULES = [
    "eval_pipeline.quality",
    "eval_pipeline.jsonsafe",
    "eval_pipeline.drift",
    "eval_pipeline.engine.evaluate",
    "eval_pipeline.engine.gates",
    "eval_pipeline.engine.exact",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert attempted > 0, f"{name} has no docstring examples"
    assert failed == 0, f"{failed} of {attempted} docstring examples of {name} failed (see the output above)"
