"""Triage and next step for one lesion: knowledge-base rules over the classifier and the clinical heads.

Rules only escalate. Every rule that fires asks for a triage level and a next step; the answer is
the most urgent level and the most invasive step any of them asks for, so adding a rule can make
the advice more cautious but never less. If no rule fires (say, no clinical heads and a confident
benign classifier with a site's pared-down rule set), the case goes to a dermatologist.

Safety invariant, in code and not only in the YAML: a suspected melanoma (classifier melanoma
probability at or above ``suspected_melanoma_probability``, or a 7-point score at or above
``seven_point_cutoff``) gets an urgent referral and excision or referral, never follow-up,
reassurance or "no further examination", whatever rules a knowledge base holds. The YAML's own
melanoma rules normally decide this already; when the code has to step in, the output says so.

Example:
    >>> clinical = ClinicalHeads.default().predict(features)[0]
    >>> advice = recommend({"mel": 0.41, "nv": 0.5, ...}, abstained=False, clinical=clinical)
    >>> advice["triage"], advice["next_step"], advice["explanation"]
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from typing import Any

from dermdx.clinical.checklist import CRITERIA, CRITERION_NAMES, MANAGEMENT_CLASSES
from dermdx.clinical.knowledge import NEXT_STEPS, TRIAGE_LEVELS, KnowledgeBase
from dermdx.decision import MALIGNANT_CLASSES

URGENT = "urgent referral"
# Next steps a suspected melanoma may get; the invariant sets "excision" if a rule set left another.
MELANOMA_STEPS = ("excision", "refer to dermatologist")


class _Formatter(string.Formatter):
    """str.format that writes "unknown" for a fact the case lacks instead of failing on ``None:.2f``."""

    def format_field(self, value: Any, format_spec: str) -> str:
        return "unknown" if value is None else super().format_field(value, format_spec)


def _check_probs(probs: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(probs, Mapping) or not probs:
        raise TypeError(f"probs must map class name -> probability, e.g. {{'mel': 0.2, 'nv': 0.7, ...}}; got {type(probs).__name__}")
    out = {}
    for name, value in probs.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"probs[{name!r}] = {value!r} is not a probability in [0, 1]")
        out[str(name).lower()] = float(value)
    if "mel" not in out:
        raise ValueError(f"probs has no melanoma probability 'mel' (classes given: {sorted(out)}); the melanoma safety rule needs it")
    return out


def case_facts(probs: Mapping[str, float], abstained: bool, clinical: Mapping[str, Any] | None) -> dict[str, Any]:
    """The facts rules test, from the classifier's probabilities, its abstention and the heads' output (or None)."""
    p = _check_probs(probs)
    if not isinstance(abstained, bool):
        raise TypeError(f"abstained must be True or False, got {abstained!r}")
    facts: dict[str, Any] = {f"p_{name}": value for name, value in p.items()}
    facts["malignancy_risk"] = sum(p.get(c, 0.0) for c in MALIGNANT_CLASSES)
    facts["top_class"] = max(p, key=p.__getitem__)
    facts["abstained"] = abstained
    if clinical is not None:
        try:
            facts["seven_point_score"] = float(clinical["seven_point_score"])
            facts["seven_point_expected"] = float(clinical["seven_point_expected"])
            for name in CRITERION_NAMES:
                facts[name] = bool(clinical["concepts"][name]["present"])
            greater = list(clinical["thickness"]["p_thicker_than"].values())
            facts["p_invasive"], facts["p_thicker_than_0_76_mm"], facts["p_thicker_than_1_5_mm"] = (float(v) for v in greater)
            management = {m: float(clinical["management"][m]) for m in MANAGEMENT_CLASSES}
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"clinical must be one case's output of ClinicalHeads.predict; it lacks or mangles {error}") from error
        facts["p_excision"] = management["excision"]
        facts["p_clinical_follow_up"] = management["clinical follow up"]
        facts["p_no_further_examination"] = management["no further examination"]
        facts["learned_management"] = max(management, key=management.__getitem__)
    return facts


def suspected_melanoma(facts: Mapping[str, Any], knowledge: KnowledgeBase) -> list[str]:
    """Why the case is a suspected melanoma (empty if it is not), by the knowledge base's thresholds."""
    why = []
    t_mel = knowledge.thresholds["suspected_melanoma_probability"]
    cutoff = knowledge.thresholds["seven_point_cutoff"]
    if facts["p_mel"] >= t_mel:
        why.append(f"melanoma probability {facts['p_mel']:.2f} >= {t_mel}")
    score = facts.get("seven_point_score")
    if score is not None and score >= cutoff:
        why.append(f"7-point score {score:.0f} >= {cutoff:.0f}")
    return why


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def explain(facts: Mapping[str, Any], clinical: Mapping[str, Any] | None, triage: str, next_step: str, melanoma_why: list[str], knowledge: KnowledgeBase) -> str:
    """A short plain-language account: the criteria seen, the score, the classifier's view and the advice."""
    parts = []
    cutoff = int(knowledge.thresholds["seven_point_cutoff"])
    if clinical is not None:
        seen = [c.text for c in CRITERIA if facts[c.name]]
        score = int(facts["seven_point_score"])
        verdict = f">= {cutoff} suggests melanoma" if score >= cutoff else f"below {cutoff}, not suggestive of melanoma by this checklist"
        if seen:
            lead = _join(seen)
            parts.append(f"{lead[0].upper()}{lead[1:]} {'was' if len(seen) == 1 else 'were'} detected; 7-point score {score} ({verdict}).")
        else:
            parts.append(f"None of the 7-point checklist criteria was detected; 7-point score 0 ({verdict}).")
    else:
        parts.append("The 7-point checklist was not assessed (no clinical heads for this classifier).")
    parts.append(f"The classifier's melanoma probability is {facts['p_mel']:.2f}" + (" and it was unsure of its answer." if facts["abstained"] else "."))
    if melanoma_why and clinical is not None:
        band = clinical["thickness"]["category"]
        parts.append(
            f"If this is a melanoma, the thickness heads' most likely band is {band}; treat it as a guess: on Derm7pt validation "
            "it did no better than always naming the commonest band, and only histology measures thickness."
        )
    parts.append(f"Advice: {triage}; next step: {next_step}.")
    return " ".join(parts)


def recommend(probs: Mapping[str, float], abstained: bool, clinical: Mapping[str, Any] | None = None, knowledge: KnowledgeBase | None = None) -> dict[str, Any]:
    """Triage level, next step, the rules behind them with their sources, and a plain-language explanation.

    Args:
        probs: the classifier's class probabilities for the case (``{"mel": ..., "nv": ..., ...}``,
            calibrated when the model is); must include ``"mel"``.
        abstained: whether the classifier abstained (``dermdx.decision.abstain``).
        clinical: one case's output of :meth:`ClinicalHeads.predict`, or None when the heads are
            unavailable (rules on 7-point criteria, thickness or learned management then do not fire).
        knowledge: the rules and thresholds; None uses the shipped ``knowledge.yaml``.

    Returns:
        ``{"triage": one of TRIAGE_LEVELS, "next_step": one of NEXT_STEPS,
        "suspected_melanoma": bool, "suspected_melanoma_because": [str],
        "rationale": [{"rule", "triage", "next_step", "reason", "sources": [citation]}] (fired rules, most urgent first),
        "safety_invariant": {"applied": bool, "detail": str}, "explanation": str,
        "knowledge_base": {"path", "sha256"}}``

    Raises:
        TypeError / ValueError: probabilities that are not probabilities, no ``"mel"``, or a
            ``clinical`` dict that is not ClinicalHeads output.
    """
    knowledge = knowledge if knowledge is not None else KnowledgeBase.default()
    facts = case_facts(probs, abstained, clinical)
    fired = [rule for rule in knowledge.rules if rule.fires(facts)]
    fired.sort(key=lambda r: (TRIAGE_LEVELS.index(r.triage), NEXT_STEPS.index(r.next_step)), reverse=True)
    values = {**knowledge.thresholds, **facts}
    rationale = [
        {"rule": r.id, "triage": r.triage, "next_step": r.next_step, "reason": _Formatter().format(r.reason, **values), "sources": knowledge.cite(r.sources)}
        for r in fired
    ]
    if fired:
        triage = max((r.triage for r in fired), key=TRIAGE_LEVELS.index)
        next_step = max((r.next_step for r in fired), key=NEXT_STEPS.index)
    else:
        triage, next_step = "routine referral", "refer to dermatologist"
        rationale.append({"rule": "no_rule_fired", "triage": triage, "next_step": next_step, "reason": "No rule of the knowledge base applies to this case, so a dermatologist should decide.", "sources": []})
    melanoma_why = suspected_melanoma(facts, knowledge)
    invariant = {"applied": False, "detail": "not a suspected melanoma" if not melanoma_why else "the rules already refer it urgently"}
    if melanoma_why and (triage != URGENT or next_step not in MELANOMA_STEPS):
        before = f"{triage} / {next_step}"
        triage = URGENT
        next_step = next_step if next_step in MELANOMA_STEPS else "excision"
        invariant = {"applied": True, "detail": f"suspected melanoma ({'; '.join(melanoma_why)}): the rules gave {before}, raised to {triage} / {next_step}"}
    return {
        "triage": triage,
        "next_step": next_step,
        "suspected_melanoma": bool(melanoma_why),
        "suspected_melanoma_because": melanoma_why,
        "rationale": rationale,
        "safety_invariant": invariant,
        "explanation": explain(facts, clinical, triage, next_step, melanoma_why, knowledge),
        "knowledge_base": {"path": knowledge.path, "sha256": knowledge.sha256},
    }
