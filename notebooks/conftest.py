"""The notebooks run in the system tier (`make test-slow`, marker `slow`).

Each notebook executes top to bottom in a fresh kernel (nbmake, pyproject's `--nbmake`): a
whole program of tens of seconds, like the other system tests, so `make test` leaves them to
`make test-slow`, which CI runs.
"""

import os

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.path).startswith(_HERE + os.sep) and item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
