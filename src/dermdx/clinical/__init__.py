"""Clinical layer on top of the diagnosis: 7-point checklist, melanoma thickness, management and triage.

- :class:`ClinicalHeads` (heads.py): linear heads on the classifier's pooled features giving the
  7-point criteria and score, melanoma thickness band probabilities and management probabilities.
- :func:`recommend` (recommend.py): triage level, next step, cited rationale and a plain-language
  explanation from a YAML knowledge base (:func:`load_knowledge`, knowledge.py).
- checklist.py holds the criteria and the label mappings; ordinal.py the cumulative thickness model;
  fit.py the fitting (scikit-learn); features.py the cached classifier outputs used for fitting.
"""

from dermdx.clinical.heads import ClinicalHeads
from dermdx.clinical.knowledge import (
    NEXT_STEPS,
    TRIAGE_LEVELS,
    KnowledgeBase,
    load_knowledge,
)
from dermdx.clinical.recommend import recommend

__all__ = ["NEXT_STEPS", "TRIAGE_LEVELS", "ClinicalHeads", "KnowledgeBase", "load_knowledge", "recommend"]
