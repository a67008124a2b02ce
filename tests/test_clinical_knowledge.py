"""Knowledge-base loading: the shipped file, and errors that name the file, the rule and the fix."""

import copy
from pathlib import Path

import pytest
import yaml

from dermdx.clinical.knowledge import DEFAULT_KNOWLEDGE, KnowledgeBase, load_knowledge

MINIMAL = {
    "format": "dermdx-knowledge/1",
    "thresholds": {"suspected_melanoma_probability": 0.2, "seven_point_cutoff": 3},
    "sources": {"argenziano1998": "Argenziano G, et al. Arch Dermatol. 1998;134(12):1563-1570."},
    "rules": [
        {
            "id": "seven_point",
            "when": {"seven_point_score": {">=": "seven_point_cutoff"}},
            "triage": "urgent referral",
            "next_step": "excision",
            "reason": "score {seven_point_score:.0f}",
            "sources": ["argenziano1998"],
        }
    ],
}


def write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "kb.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def edited(**rule_changes) -> dict:
    data = copy.deepcopy(MINIMAL)
    data["rules"][0].update(rule_changes)
    return data


def test_the_shipped_knowledge_base_loads_and_every_rule_cites_a_source() -> None:
    kb = KnowledgeBase.default()
    assert kb.path == str(DEFAULT_KNOWLEDGE) and len(kb.sha256) == 64
    assert kb.rules and all(rule.sources for rule in kb.rules)
    assert kb.thresholds["seven_point_cutoff"] == 3


def test_a_minimal_file_loads_with_thresholds_resolved(tmp_path) -> None:
    kb = load_knowledge(write(tmp_path, MINIMAL))
    (condition,) = kb.rules[0].when
    assert (condition.field, condition.op, condition.value, condition.threshold) == ("seven_point_score", ">=", 3.0, "seven_point_cutoff")
    assert kb.rules[0].fires({"seven_point_score": 3}) and not kb.rules[0].fires({"seven_point_score": 2})
    assert not kb.rules[0].fires({})  # an unknown fact never satisfies a test
    stricter = kb.with_thresholds(seven_point_cutoff=2)
    assert stricter.rules[0].fires({"seven_point_score": 2})


def test_a_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_knowledge(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_file(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"kb.yaml: not valid YAML"):
        load_knowledge(write(tmp_path, "rules: [unclosed"))


def test_a_rule_without_a_source_is_refused(tmp_path) -> None:
    data = edited()
    del data["rules"][0]["sources"]
    with pytest.raises(ValueError, match=r"kb.yaml: rule 'seven_point': missing key 'sources'; every rule must cite"):
        load_knowledge(write(tmp_path, data))
    with pytest.raises(ValueError, match=r"rule 'seven_point': cites no source"):
        load_knowledge(write(tmp_path, edited(sources=[])))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"when": {"seven_pont_score": {">=": 3}}}, r"rule 'seven_point': unknown field 'seven_pont_score' \(did you mean 'seven_point_score'\?\)"),
        ({"when": {"seven_point_score": {"=>": 3}}}, r"unknown operator '=>'"),
        ({"when": {"seven_point_score": {">=": "cutof"}}}, r"no threshold named 'cutof'"),
        ({"when": {"abstained": {">=": 1}}}, r"abstained is true/false"),
        ({"when": {"learned_management": {"==": "surgery"}}}, r"learned_management 'surgery' is not one of"),
        ({"sources": ["argenziano98"]}, r"cites unknown source 'argenziano98' \(did you mean 'argenziano1998'\?\)"),
        ({"triage": "urgent"}, r"triage 'urgent' is not one of"),
        ({"next_step": "surgery"}, r"next_step 'surgery' is not one of"),
        ({"reason": "score {score}"}, r"reason names unknown fact or threshold \{score\}"),
        ({"because": "x"}, r"unknown key 'because'"),
    ],
)
def test_bad_rules_are_refused_with_the_rule_named(tmp_path, change, message) -> None:
    with pytest.raises(ValueError, match=message):
        load_knowledge(write(tmp_path, edited(**change)))


def test_bad_top_level_and_thresholds_are_refused(tmp_path) -> None:
    data = copy.deepcopy(MINIMAL)
    data["rulez"] = data.pop("rules")
    with pytest.raises(ValueError, match=r"top level: unknown key 'rulez' \(did you mean 'rules'\?\)"):
        load_knowledge(write(tmp_path, data))
    for name, value, message in [
        ("suspected_melanoma_probability", 0.8, r"0.8 is outside \(0.0, 0.5\]"),
        ("seven_point_cutoff", 4, r"outside \(1, 3\]"),
        ("p_mel", 0.3, r"has the name of a fact"),
    ]:
        data = copy.deepcopy(MINIMAL)
        data["thresholds"][name] = value
        with pytest.raises(ValueError, match=message):
            load_knowledge(write(tmp_path, data))
    data = copy.deepcopy(MINIMAL)
    data["rules"].append(copy.deepcopy(data["rules"][0]))
    with pytest.raises(ValueError, match="duplicate rule id"):
        load_knowledge(write(tmp_path, data))
    with pytest.raises(ValueError, match=r"outside \(0.0, 0.5\]"):
        load_knowledge(write(tmp_path, MINIMAL)).with_thresholds(suspected_melanoma_probability=0.9)
