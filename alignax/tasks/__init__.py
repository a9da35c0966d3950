"""Synthetic testbeds with gold rewards and preference simulators.

- `language`: a tiny token language (bigram chain) with gold sequence rewards;
- `arithmetic`: verifiable multi-step modular arithmetic with per-step labels;
- `features`: responses as feature vectors with linear / MLP / multi-objective gold rewards;
- `mdp`: gridworlds and tree MDPs with (soft) value iteration and segment preferences;
- `simulators`: Bradley-Terry / Thurstone labels, noise, annotators, mixtures, cycles, ties,
  Likert ratings;
- `hierarchical`: HERON's comparator (label by the first important-enough factor).
"""

from alignax.tasks import arithmetic, features, hierarchical, mdp, simulators
from alignax.tasks.features import FeatureTask
from alignax.tasks.language import BigramLanguage

__all__ = ["BigramLanguage", "FeatureTask", "arithmetic", "features", "hierarchical", "mdp",
           "simulators"]
