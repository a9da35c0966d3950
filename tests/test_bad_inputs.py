"""Every class of user mistake gives one line that says what is wrong (tests/bad_inputs.py), and
docs/bad-inputs.md lists exactly those lines (issue 17)."""

import os

import pytest

from tests import runs

from tests.bad_inputs import CASES, KINDS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool():
    return runs.load_tool("bad_inputs_table")


@pytest.fixture(scope="module")
def message_of(tmp_path_factory):
    """case -> its message, each case triggered once (all in one scratch folder, as the tool
    does: a case writes its own names there and reuses the tiny model folders)."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    cache = {}

    def get(case):
        if case.trigger not in cache:
            cache[case.trigger] = case.trigger(tmp)
        return cache[case.trigger]

    return get


def test_every_class_has_cases_that_check_their_message():
    for kind in KINDS:
        assert sum(c.kind == kind for c in CASES) >= 3, kind
    assert {c.kind for c in CASES} == set(KINDS)
    assert all(c.expect for c in CASES)
    assert len({c.mistake for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.trigger.__name__.strip("_") for c in CASES])
def test_the_mistake_gives_one_line_saying_what_is_wrong(case, message_of):
    message = message_of(case)
    assert message and message == message.strip(), repr(message)
    assert len(message.splitlines()) == 1 and "\r" not in message, message
    assert "Traceback" not in message
    missing = [word for word in case.expect if word not in message]
    assert not missing, f"{case.mistake}: {missing} not in {message!r}"


def test_docs_page_lists_exactly_these_messages(message_of):
    results = [(case, message_of(case)) for case in CASES]
    with open(os.path.join(REPO, "docs", "bad-inputs.md")) as f:
        page = f.read()
    assert page == _tool().render(results), (
        "docs/bad-inputs.md is out of date: run python tools/bad_inputs_table.py")
    for _, message in results:  # the table really holds each message, | escaped
        assert message.replace("|", "\\|") in page
