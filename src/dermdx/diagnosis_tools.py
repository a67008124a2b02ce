"""The add-ons a full diagnosis report uses beside the classifier, loaded once and checked.

- image quality checks (``dermdx.quality``), for any classifier;
- the lesion segmenter (``dermdx.segmentation``, for the outline and the ABCD measurements), for
  any classifier;
- the out-of-distribution detector (``dermdx.ood``) and the clinical heads (``dermdx.clinical``:
  7-point criteria, thickness, management), which read the *shipped* classifier's features and
  are meaningless on another model's;
- the knowledge base that turns all of it into triage and a next step.

An add-on that does not apply to this classifier is not loaded, and ``unavailable`` says why, so
the report can say it instead of silently leaving a section out. A damaged add-on file is an error,
not an unavailable section.

Example:
    >>> tools = DiagnosisTools.for_predictor(predictor)
    >>> tools.unavailable  # {} with the shipped model
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dermdx.quality import QualityConfig

if TYPE_CHECKING:
    from dermdx.clinical import ClinicalHeads, KnowledgeBase
    from dermdx.inference import Predictor
    from dermdx.ood import OodDetector
    from dermdx.segmentation import Segmenter


@dataclass
class DiagnosisTools:
    """Everything ``diagnose`` uses besides the classifier; None = not used, with the reason in ``unavailable``."""

    quality: QualityConfig = field(default_factory=QualityConfig)
    segmenter: Segmenter | None = None
    ood: OodDetector | None = None
    clinical: ClinicalHeads | None = None
    knowledge: KnowledgeBase | None = None
    unavailable: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_predictor(cls, predictor: Predictor, *, knowledge_path: str | Path | None = None, segment: bool = True) -> DiagnosisTools:
        """The shipped add-ons that apply to ``predictor``'s model.

        Args:
            knowledge_path: a knowledge-base YAML to use instead of the shipped one.
            segment: False leaves the segmenter out (the report then says so).

        Raises:
            FileNotFoundError, ValueError: a shipped add-on file is missing or damaged, or the
                knowledge base is invalid (the message names the file).
        """
        from dermdx.clinical import ClinicalHeads, load_knowledge
        from dermdx.default_model import default_model_record
        from dermdx.ood import OodDetector
        from dermdx.segmentation import Segmenter

        tools = cls(knowledge=load_knowledge(knowledge_path))
        if segment:
            tools.segmenter = Segmenter.default()
        else:
            tools.unavailable["lesion_outline"] = "segmentation switched off (--no-segmentation)"
        shipped = default_model_record()["sha256"]
        if predictor.sha256 == shipped:
            tools.ood = OodDetector.default(classifier_sha256=predictor.sha256)
            tools.clinical = ClinicalHeads.default(classifier_sha256=predictor.sha256)
        else:
            why = (f"fitted on the features of the shipped classifier (SHA-256 {shipped[:12]}...), not of this model "
                   f"({predictor.sha256[:12] or 'unknown'}...); refit it for this model with scripts/fit_ood.py or scripts/fit_clinical_heads.py")
            tools.unavailable["out_of_distribution_check"] = "the out-of-distribution detector is " + why
            tools.unavailable["seven_point_checklist"] = "the 7-point, thickness and management heads are " + why
        return tools
