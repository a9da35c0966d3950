"""py_test entry point: runs pytest on the test files given as arguments, from the runfiles tree."""

import os
import sys

import pytest


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)  # the workspace root inside the runfiles tree
    os.chdir(root)
    if root not in sys.path:
        sys.path.insert(0, root)
    return pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
