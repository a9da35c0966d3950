"""Synthetic testbeds with gold rewards and preference simulators.

- `language`: a tiny token language (bigram chain) with gold sequence rewards;
- `arithmetic`: verifiable multi-step modular arithmetic with per-step labels;
- `features`: responses as feature vectors with linear / MLP / multi-objective gold rewards;
- `mdp`: gridworlds and tree MDPs with (soft) value iteration and segment preferences;
- `simulators`: Bradley-Terry / Thurstone labels, noise, annotators, mixtures, cycles, ties,
  Likert ratings;
- `hierarchical`: HERON's comparator (label by the first important-enough factor);
- `chains`: k-step modular-arithmetic chains with gold "first error" step labels, corruptions
  and reference solutions; `step_labels`: Monte-Carlo rollout and reference-guided (SPARE)
  step labels with their annotation cost;
- `rag`: retrieval-augmented preference pairs (query, documents; grounded, cited, abstaining
  and conflict-robust answers) for RAG reward-model evaluation.

Other testbeds (`gold`, `path_gold`, `policies`, `pedagogy`, `scored_sequences`, `search`,
`sequence_prefs`, `splits`, `zipf`) are imported by module name.
"""

from alignax.tasks import arithmetic, features, hierarchical, mdp, simulators
from alignax.tasks.features import FeatureTask
from alignax.tasks.language import BigramLanguage

__all__ = ["BigramLanguage", "FeatureTask", "arithmetic", "features", "hierarchical", "mdp",
           "simulators"]
