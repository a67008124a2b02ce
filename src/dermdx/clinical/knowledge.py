"""The recommendation knowledge base: thresholds, cited sources and rules, read from YAML and validated.

A rule is data, not code: ``when`` lists conditions on named facts (all must hold), ``triage`` and
``next_step`` say what the rule asks for, ``reason`` is the text shown to the clinician (it may name
facts and thresholds in braces) and ``sources`` lists the guideline or paper behind it. Conditions
compare a fact with a literal or, for numeric facts, with a threshold named in ``thresholds``, so
a site changes an operating point in one place. Every mistake is reported with the file, the rule
and the allowed values; nothing in the file is executed.

Example:
    >>> kb = load_knowledge()            # the shipped knowledge.yaml
    >>> kb = load_knowledge("site.yaml")  # a site's own rules and thresholds
"""

from __future__ import annotations

import difflib
import hashlib
import string
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dermdx.clinical.checklist import CRITERION_NAMES, SEVEN_POINT_CUTOFF
from dermdx.config import ISIC2018_CLASSES

KNOWLEDGE_FORMAT = "dermdx-knowledge/1"
DEFAULT_KNOWLEDGE = Path(__file__).resolve().parent / "knowledge.yaml"

# Ordered from least to most urgent / invasive: rules can only escalate (see recommend.py).
TRIAGE_LEVELS: tuple[str, ...] = ("reassure", "monitor", "routine referral", "urgent referral")
NEXT_STEPS: tuple[str, ...] = ("no further examination", "clinical follow-up", "refer to dermatologist", "excision")
LEARNED_MANAGEMENT = ("excision", "clinical follow up", "no further examination")

# Facts a rule may test, and their type. Probabilities come from the classifier (p_<class>) and
# the clinical heads; a fact that is unknown for a case (e.g. no clinical heads) fails every test.
FIELDS: dict[str, type] = {
    **{f"p_{c}": float for c in ISIC2018_CLASSES},
    "malignancy_risk": float,
    "top_class": str,
    "abstained": bool,
    "seven_point_score": float,
    "seven_point_expected": float,
    **{name: bool for name in CRITERION_NAMES},
    "p_invasive": float,
    "p_thicker_than_0_76_mm": float,
    "p_thicker_than_1_5_mm": float,
    "p_excision": float,
    "p_clinical_follow_up": float,
    "p_no_further_examination": float,
    "learned_management": str,
}
OPERATORS: dict[str, Any] = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_TOP_KEYS = ("format", "thresholds", "sources", "rules")
_RULE_KEYS = ("id", "when", "triage", "next_step", "reason", "sources")
# Thresholds the code itself relies on (the melanoma invariant), with the range a site may choose:
# stricter than the defaults is allowed, laxer is not.
REQUIRED_THRESHOLDS: dict[str, tuple[float, float, str]] = {
    "suspected_melanoma_probability": (0.0, 0.5, "a melanoma probability above 0.5 would dismiss lesions the classifier finds likely melanoma"),
    "seven_point_cutoff": (1, SEVEN_POINT_CUTOFF, "the 7-point checklist's cutoff is 3 (Argenziano 1998); a higher one would dismiss lesions it calls suspicious"),
}


def _did_you_mean(value: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class Condition:
    """``fact <op> value``; ``value`` is a literal or the resolved number of a named threshold."""

    field: str
    op: str
    value: Any
    threshold: str | None = None

    def holds(self, facts: Mapping[str, Any]) -> bool:
        fact = facts.get(self.field)
        if fact is None:
            return False
        return bool(OPERATORS[self.op](fact, self.value))

    def describe(self) -> str:
        value = f"{self.threshold} ({self.value})" if self.threshold else repr(self.value)
        return f"{self.field} {self.op} {value}"


@dataclass(frozen=True)
class Rule:
    id: str
    when: tuple[Condition, ...]
    triage: str
    next_step: str
    reason: str
    sources: tuple[str, ...]

    def fires(self, facts: Mapping[str, Any]) -> bool:
        return all(c.holds(facts) for c in self.when)


@dataclass(frozen=True)
class KnowledgeBase:
    """Validated thresholds, sources (id -> citation) and rules, plus where they came from."""

    thresholds: dict[str, float]
    sources: dict[str, str]
    rules: tuple[Rule, ...]
    path: str
    sha256: str

    @classmethod
    def default(cls) -> KnowledgeBase:
        return load_knowledge(DEFAULT_KNOWLEDGE)

    def cite(self, source_ids: tuple[str, ...]) -> list[str]:
        return [self.sources[s] for s in source_ids]

    def with_thresholds(self, **changes: float) -> KnowledgeBase:
        """A copy with some thresholds changed (and the rules that name them updated), validated as on load.

        Example:
            >>> strict = KnowledgeBase.default().with_thresholds(suspected_melanoma_probability=0.1)
        """
        check = _Checker(Path(self.path))
        for name, value in changes.items():
            if name not in self.thresholds:
                check.fail(f"threshold {name!r}", f"unknown{_did_you_mean(name, self.thresholds)}; known: {sorted(self.thresholds)}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                check.fail(f"threshold {name!r}", f"expected a number, got {value!r}")
        thresholds = {**self.thresholds, **{k: float(v) for k, v in changes.items()}}
        _check_required(thresholds, check)
        rules = tuple(
            replace(r, when=tuple(replace(c, value=thresholds[c.threshold]) if c.threshold else c for c in r.when)) for r in self.rules
        )
        note = ", ".join(f"{k}={v}" for k, v in changes.items())
        return replace(self, thresholds=thresholds, rules=rules, path=f"{self.path} (changed: {note})" if changes else self.path)


class _Checker:
    """Raises ValueError with the file and the place in it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> None:
        raise ValueError(f"{self.path}: {where}: {message}")


def load_knowledge(path: str | Path | None = None) -> KnowledgeBase:
    """Read and validate a knowledge-base YAML (``yaml.safe_load``); None reads the shipped one.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: invalid YAML, an unknown key, field, operator, triage level, next step or
            source, a rule without a source, a threshold outside its allowed range, ... The message
            names the file and the rule.
    """
    import yaml

    path = Path(path) if path is not None else DEFAULT_KNOWLEDGE
    if not path.is_file():
        raise FileNotFoundError(f"knowledge base not found: {path}; pass an existing YAML file or None for the shipped one")
    raw_text = path.read_bytes()
    check = _Checker(path)
    try:
        data = yaml.safe_load(raw_text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        check.fail("top level", f"expected a mapping with keys {list(_TOP_KEYS)}, got {type(data).__name__}")
    for key in data:
        if key not in _TOP_KEYS:
            check.fail("top level", f"unknown key {key!r}{_did_you_mean(key, _TOP_KEYS)}; allowed: {list(_TOP_KEYS)}")
    for key in _TOP_KEYS:
        if key not in data:
            check.fail("top level", f"missing key {key!r}")
    if data["format"] != KNOWLEDGE_FORMAT:
        check.fail("format", f"{data['format']!r} is not {KNOWLEDGE_FORMAT!r}")
    thresholds = _thresholds(data["thresholds"], check)
    sources = _sources(data["sources"], check)
    if not isinstance(data["rules"], list) or not data["rules"]:
        check.fail("rules", "expected a non-empty list of rules")
    rules: list[Rule] = []
    for i, item in enumerate(data["rules"]):
        rule = _rule(item, i, thresholds, sources, check)
        if any(r.id == rule.id for r in rules):
            check.fail(f"rule {rule.id!r}", "duplicate rule id; give every rule its own id")
        rules.append(rule)
    return KnowledgeBase(thresholds, sources, tuple(rules), str(path), hashlib.sha256(raw_text).hexdigest())


def _thresholds(raw: Any, check: _Checker) -> dict[str, float]:
    if not isinstance(raw, dict):
        check.fail("thresholds", "expected a mapping name -> number")
    out = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            check.fail(f"threshold {name!r}", f"expected a number, got {value!r}")
        if name in FIELDS:
            check.fail(f"threshold {name!r}", "has the name of a fact; rename it (e.g. add '_threshold') so rules and reasons stay unambiguous")
        out[str(name)] = float(value)
    _check_required(out, check)
    return out


def _check_required(thresholds: dict[str, float], check: _Checker) -> None:
    for name, (low, high, why) in REQUIRED_THRESHOLDS.items():
        if name not in thresholds:
            check.fail("thresholds", f"missing {name!r}: the melanoma safety rule needs it")
        if not low < thresholds[name] <= high:
            check.fail(f"threshold {name!r}", f"{thresholds[name]} is outside ({low}, {high}]: {why}")


def _sources(raw: Any, check: _Checker) -> dict[str, str]:
    if not isinstance(raw, dict) or not raw:
        check.fail("sources", "expected a mapping source id -> citation (title, authors, year)")
    for key, citation in raw.items():
        if not isinstance(citation, str) or len(citation.strip()) < 20:
            check.fail(f"source {key!r}", "expected a full citation string (authors, title, venue, year)")
    return {str(k): str(v).strip() for k, v in raw.items()}


def _rule(item: Any, i: int, thresholds: dict[str, float], sources: dict[str, str], check: _Checker) -> Rule:
    where = f"rule {i + 1}"
    if not isinstance(item, dict):
        check.fail(where, f"expected a mapping with keys {list(_RULE_KEYS)}")
    if "id" in item:
        where = f"rule {item['id']!r}"
    for key in item:
        if key not in _RULE_KEYS:
            check.fail(where, f"unknown key {key!r}{_did_you_mean(key, _RULE_KEYS)}; allowed: {list(_RULE_KEYS)}")
    for key in _RULE_KEYS:
        if key not in item:
            hint = "; every rule must cite a guideline or paper listed under 'sources'" if key == "sources" else ""
            check.fail(where, f"missing key {key!r}{hint}")
    cited = item["sources"]
    if isinstance(cited, str):
        cited = [cited]
    if not isinstance(cited, list) or not cited:
        check.fail(where, "cites no source; every rule must cite a guideline or paper listed under 'sources'")
    for source in cited:
        if source not in sources:
            check.fail(where, f"cites unknown source {source!r}{_did_you_mean(source, sources)}; known: {sorted(sources)}")
    if item["triage"] not in TRIAGE_LEVELS:
        check.fail(where, f"triage {item['triage']!r} is not one of {list(TRIAGE_LEVELS)}{_did_you_mean(item['triage'], TRIAGE_LEVELS)}")
    if item["next_step"] not in NEXT_STEPS:
        check.fail(where, f"next_step {item['next_step']!r} is not one of {list(NEXT_STEPS)}{_did_you_mean(item['next_step'], NEXT_STEPS)}")
    if not isinstance(item["when"], dict) or not item["when"]:
        check.fail(where, "'when' must map facts to tests, e.g. {p_mel: {'>=': suspected_melanoma_probability}}")
    conditions = []
    for field, test in item["when"].items():
        conditions += _conditions(field, test, thresholds, where, check)
    reason = item["reason"]
    if not isinstance(reason, str) or not reason.strip():
        check.fail(where, "'reason' must be a sentence for the clinician")
    for _, name, _, _ in string.Formatter().parse(reason):
        if name is not None and name not in FIELDS and name not in thresholds:
            check.fail(where, f"reason names unknown fact or threshold {{{name}}}{_did_you_mean(name, [*FIELDS, *thresholds])}")
    return Rule(str(item["id"]), tuple(conditions), item["triage"], item["next_step"], reason.strip(), tuple(cited))


def _conditions(field: str, test: Any, thresholds: dict[str, float], where: str, check: _Checker) -> list[Condition]:
    if field not in FIELDS:
        check.fail(where, f"unknown field {field!r}{_did_you_mean(field, FIELDS)}; allowed: {sorted(FIELDS)}")
    if not isinstance(test, dict) or not test:
        check.fail(where, f"the test on {field!r} must map an operator to a value, e.g. {{'>=': 0.3}}")
    kind = FIELDS[field]
    out = []
    for op, value in test.items():
        if op not in OPERATORS:
            check.fail(where, f"unknown operator {op!r} on {field!r}; allowed: {list(OPERATORS)}")
        threshold = None
        if kind is float:
            if isinstance(value, str):
                if value not in thresholds:
                    check.fail(where, f"{field} {op} {value!r}: no threshold named {value!r}{_did_you_mean(value, thresholds)}; known: {sorted(thresholds)}")
                threshold, value = value, thresholds[value]
            elif isinstance(value, bool) or not isinstance(value, int | float):
                check.fail(where, f"{field} is a number; compare it with a number or a threshold name, not {value!r}")
        elif kind is bool:
            if not isinstance(value, bool) or op not in ("==", "!="):
                check.fail(where, f"{field} is true/false; test it with '==' or '!=' and true or false, not {op!r} {value!r}")
        else:
            if not isinstance(value, str) or op not in ("==", "!="):
                check.fail(where, f"{field} is a name; test it with '==' or '!=' and a string, not {op!r} {value!r}")
            if field == "learned_management" and value not in LEARNED_MANAGEMENT:
                check.fail(where, f"learned_management {value!r} is not one of {list(LEARNED_MANAGEMENT)}")
            if field == "top_class" and value not in ISIC2018_CLASSES:
                check.fail(where, f"top_class {value!r} is not one of {list(ISIC2018_CLASSES)}")
        out.append(Condition(field, op, value, threshold))
    return out
