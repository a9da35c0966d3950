"""The parity tests against the PyTorch peers (TRL's trainers, transformers' models) run in the
system tier (`make test-slow`, marker `slow`): each runs a peer's trainer end to end on a tiny
checkpoint written by the test, tens of seconds of torch and XLA each. CI runs that tier; the
math they pin (alignax's losses, log-probs and gradients) has its own unit tests in
`make test` (tests/losses, tests/algorithms)."""

import os

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.path).startswith(_HERE + os.sep):
            item.add_marker(pytest.mark.slow)
