"""Triage and next step: rules escalate, and a suspected melanoma is never dismissed, whatever the rules say."""

import numpy as np
import pytest
import yaml

from dermdx.clinical.checklist import CRITERION_NAMES
from dermdx.clinical.heads import ClinicalHeads
from dermdx.clinical.knowledge import NEXT_STEPS, TRIAGE_LEVELS, KnowledgeBase, load_knowledge
from dermdx.clinical.recommend import recommend

CLASSES = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")


def random_heads(seed: int, scale: float = 3.0) -> ClinicalHeads:
    rng = np.random.default_rng(seed)
    sizes = {"concepts": 7, "thickness": 3, "management": 3}
    return ClinicalHeads({k: (rng.normal(0, scale, (n, 6)), rng.normal(0, 1, n)) for k, n in sizes.items()}, "0" * 64)


def clinical_with(present: set[str]) -> dict:
    """One case's heads output with exactly ``present`` criteria detected."""
    case = random_heads(0).predict(np.zeros(6))[0]
    for name in CRITERION_NAMES:
        case["concepts"][name].update(present=name in present, probability=0.9 if name in present else 0.1)
    case["seven_point_score"] = sum(case["concepts"][n]["points"] for n in present)
    return case


def probs(mel: float, **others: float) -> dict:
    rest = {"nv": 1.0 - mel - sum(others.values()), **others}
    return {c: rest.get(c, 0.0) if c != "mel" else mel for c in CLASSES}


@pytest.fixture(scope="module")
def dismiss_everything(tmp_path_factory) -> KnowledgeBase:
    """A (bad) site knowledge base whose only rule reassures every case."""
    path = tmp_path_factory.mktemp("kb") / "dismiss.yaml"
    path.write_text(yaml.safe_dump({
        "format": "dermdx-knowledge/1",
        "thresholds": {"suspected_melanoma_probability": 0.3, "seven_point_cutoff": 3},
        "sources": {"nobody": "A careless site policy that reassures everyone, 2026."},
        "rules": [{"id": "reassure_all", "when": {"p_mel": {">=": 0.0}}, "triage": "reassure", "next_step": "no further examination", "reason": "all fine", "sources": ["nobody"]}],
    }))  # fmt: skip
    return load_knowledge(path)


@pytest.mark.parametrize("kb_name", ["shipped", "dismiss_everything"])
def test_a_suspected_melanoma_is_never_dismissed(kb_name, request) -> None:
    kb = KnowledgeBase.default() if kb_name == "shipped" else request.getfixturevalue("dismiss_everything")
    t_mel, cutoff = kb.thresholds["suspected_melanoma_probability"], kb.thresholds["seven_point_cutoff"]
    rng = np.random.default_rng(1)
    heads = [random_heads(s) for s in range(4)]
    checked = 0
    for i in range(1500):
        p = rng.dirichlet(rng.uniform(0.05, 2.0, len(CLASSES)))
        clinical = None if i % 5 == 0 else heads[i % 4].predict(rng.normal(0, 1, 6))[0]
        advice = recommend(dict(zip(CLASSES, p.tolist(), strict=True)), bool(rng.integers(2)), clinical, kb)
        assert advice["triage"] in TRIAGE_LEVELS and advice["next_step"] in NEXT_STEPS
        suspected = p[0] >= t_mel or (clinical is not None and clinical["seven_point_score"] >= cutoff)
        assert advice["suspected_melanoma"] == suspected
        if suspected:
            checked += 1
            assert advice["next_step"] in ("excision", "refer to dermatologist"), advice
            assert advice["triage"] == "urgent referral", advice
    assert checked > 300


def test_the_invariant_says_when_it_overrode_the_rules(dismiss_everything) -> None:
    advice = recommend(probs(0.35), False, None, dismiss_everything)
    assert (advice["triage"], advice["next_step"]) == ("urgent referral", "excision")
    assert advice["safety_invariant"]["applied"]
    assert "reassure / no further examination" in advice["safety_invariant"]["detail"]
    calm = recommend(probs(0.05), False, None, dismiss_everything)
    assert (calm["triage"], calm["next_step"]) == ("reassure", "no further examination")


def test_the_seven_point_score_alone_makes_a_melanoma_suspect() -> None:
    advice = recommend(probs(0.01), False, clinical_with({"atypical_pigment_network", "blue_whitish_veil"}))
    assert advice["suspected_melanoma_because"] == ["7-point score 4 >= 3"]
    assert (advice["triage"], advice["next_step"]) == ("urgent referral", "excision")
    assert "seven_point_suggests_melanoma" in [r["rule"] for r in advice["rationale"]]
    assert advice["explanation"].startswith("Atypical pigment network and blue-whitish veil were detected; 7-point score 4 (>= 3 suggests melanoma).")
    fired = next(r for r in advice["rationale"] if r["rule"] == "seven_point_suggests_melanoma")
    assert any("Argenziano" in s and "1998" in s for s in fired["sources"])


def test_rules_escalate_and_list_their_sources() -> None:
    advice = recommend(probs(0.05, bcc=0.6), False, clinical_with(set()))
    assert advice["next_step"] == "excision" and advice["triage"] in ("routine referral", "urgent referral")
    rules = [r["rule"] for r in advice["rationale"]]
    assert "suspected_bcc" in rules and all(r["sources"] for r in advice["rationale"])
    assert advice["explanation"].startswith("None of the 7-point checklist criteria was detected")


def test_an_uncertain_classifier_refers(tmp_path) -> None:
    advice = recommend(probs(0.02), True, None)
    assert advice["next_step"] in ("refer to dermatologist", "excision")
    assert "classifier_uncertain" in [r["rule"] for r in advice["rationale"]]
    assert "unsure" in advice["explanation"]


def test_a_case_no_rule_covers_goes_to_a_dermatologist(tmp_path) -> None:
    path = tmp_path / "kb.yaml"
    path.write_text(yaml.safe_dump({
        "format": "dermdx-knowledge/1",
        "thresholds": {"suspected_melanoma_probability": 0.3, "seven_point_cutoff": 3},
        "sources": {"argenziano1998": "Argenziano G, et al. Arch Dermatol. 1998;134(12):1563-1570."},
        "rules": [{"id": "seven", "when": {"seven_point_score": {">=": 3}}, "triage": "urgent referral", "next_step": "excision", "reason": "x", "sources": ["argenziano1998"]}],
    }))  # fmt: skip
    advice = recommend(probs(0.05), False, None, load_knowledge(path))
    assert (advice["triage"], advice["next_step"]) == ("routine referral", "refer to dermatologist")
    assert advice["rationale"][0]["rule"] == "no_rule_fired"


def test_thresholds_are_configurable() -> None:
    kb = KnowledgeBase.default().with_thresholds(suspected_melanoma_probability=0.1)
    assert recommend(probs(0.15), False, None, kb)["suspected_melanoma"]
    assert not recommend(probs(0.15), False, None)["suspected_melanoma"]


@pytest.mark.parametrize(
    ("p", "clinical", "error", "message"),
    [
        ({"nv": 0.9, "bcc": 0.1}, None, ValueError, "no melanoma probability 'mel'"),
        ({"mel": 1.2, "nv": 0.0}, None, ValueError, r"probs\['mel'\] = 1.2 is not a probability"),
        ({"mel": float("nan")}, None, ValueError, "is not a probability"),
        ([0.1, 0.9], None, TypeError, "must map class name"),
        ({"mel": 0.1, "nv": 0.9}, {"concepts": {}}, ValueError, "ClinicalHeads.predict"),
    ],
)
def test_bad_inputs_are_refused(p, clinical, error, message) -> None:
    with pytest.raises(error, match=message):
        recommend(p, False, clinical)
