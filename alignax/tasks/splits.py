"""Train / validation / test seeds that never overlap, and choices made on validation only.

The protocol (docs/protocol.md, rule 1): every testbed draws its train, validation and test sets
from disjoint seeds; anything chosen (steps, learning rate, regularisation, early-stopping point,
toy parameter) is chosen on validation by a recorded procedure that every variant gets equally;
claims are measured on test once.

`split_seeds(seed)` interleaves three streams of integers: experiment seed s draws its
train data from 3s, its validation data from 3s + 1 and its test data from 3s + 2. The map is
injective and the three streams have different residues mod 3, so no data seed is used by two
splits, nor by two experiment seeds (seed 1's train set is not seed 0's test set, as it would be
with s, s + 1, s + 2). Model initialisation and minibatch order keep using the experiment seed
itself (through `jax.random.key(seed)` and its own `fold_in`s): they are not data.
"""

from __future__ import annotations

import itertools
from typing import Hashable, Iterable, NamedTuple

from alignax.protocol import choose_on_validation  # noqa: F401  (re-exported)

import numpy as np



class SplitSeeds(NamedTuple):
    """The data seeds of one experiment seed: train, validation, test."""

    train: int
    validation: int
    test: int


def split_seeds(seed: int) -> SplitSeeds:
    """The data seeds of experiment seed `seed`: (3 * seed, 3 * seed + 1, 3 * seed + 2).

    Args:
      seed: the experiment seed, an int >= 0.

    Returns:
      SplitSeeds(train, validation, test), disjoint within and across experiment seeds.
    """
    if isinstance(seed, np.integer):
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"an experiment seed is an int, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"an experiment seed is >= 0, got {seed}")
    return SplitSeeds(3 * seed, 3 * seed + 1, 3 * seed + 2)


def check_disjoint(*collections: Iterable[Hashable], **named: Iterable[Hashable]) -> None:
    """Raises ValueError if any two collections share an element (seeds, example ids, prompt
    hashes ...).

    `check_disjoint(train=train_ids, validation=val_ids, test=test_ids)` names the collections
    in the message; positional ones are called "collection 0", "collection 1", ...

    Raises:
      ValueError: "<name> and <name> share <k> elements: [...]" (the first 10, sorted) for the
        first overlapping pair.
    """
    sets = [(f"collection {i}", set(c)) for i, c in enumerate(collections)]
    sets += [(name, set(c)) for name, c in named.items()]
    for (name_a, a), (name_b, b) in itertools.combinations(sets, 2):
        shared = a & b
        if shared:
            try:
                shown = sorted(shared)
            except TypeError:
                shown = sorted(shared, key=repr)
            more = f" (first 10 of {len(shared)})" if len(shown) > 10 else ""
            noun = "element" if len(shared) == 1 else "elements"
            raise ValueError(f"{name_a} and {name_b} share {len(shared)} {noun}: "
                             f"{shown[:10]}{more}")


