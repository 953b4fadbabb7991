"""Policies: the file format and its errors, evaluation of every requirement with its
exact explanation, which files apply, the report, and the shipped examples.

Regions here are declared (``evaluate`` without discovered facts, or with facts
given); discovery against real stores is in test_regions.py.
"""

from __future__ import annotations

import io
import json
import re
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from datamove.age import X25519Identity
from datamove.errors import BadInput, PolicyRefused
from datamove.manifest.model import Manifest, load_manifest
from datamove.policy.regions import RegionFacts
from datamove.policy.rules import (
    REGION_MISMATCH,
    Decision,
    PolicyFileError,
    check,
    evaluate,
    find_policy_files,
    load_policies,
    parse_policies,
)

from .conftest import REPO, write_manifest

KEYS = {name: X25519Identity.generate().recipient.encode() for name in ("R1", "R2", "R3")}
DATASET: dict[str, Any] = {
    "name": "customers",
    "source": {"url": "./src/"},
    "destination": {"url": "s3://eu-data/customers/", "region": "eu-central-1"},
    "classification": "pii",
    "tags": {"owner": "crm", "cost_center": "cc-1"},
    "verify": "checksum",
}


def keys(value: Any) -> Any:
    """Test data with R1, R2, R3 replaced by real recipients."""
    if isinstance(value, str):
        return KEYS.get(value, value)
    if isinstance(value, list):
        return [keys(v) for v in value]
    if isinstance(value, dict):
        return {k: keys(v) for k, v in value.items()}
    return value


def manifest_of(tmp_path: Path, *datasets: dict[str, Any],
                files: dict[str, list[str]] | None = None, **top: Any) -> Manifest:
    for name, lines in (files or {}).items():
        (tmp_path / name).write_text("".join(f"{keys(line)}\n" for line in lines))
    path = write_manifest(tmp_path / "m.yaml", [keys(d) for d in datasets or [DATASET]],
                          **keys(top))
    return load_manifest(path)


def policy(*rules: dict[str, Any]) -> str:
    return yaml.safe_dump({"version": 1, "rules": list(rules)}, sort_keys=False)


def rule(rule_id: str, require: dict[str, Any], severity: str = "deny",
         match: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rule_id, "description": f"{rule_id} description",
                           "severity": severity}
    if match is not None:
        out["match"] = match
    return {**out, "require": require}


def only(report_decisions: list[Decision], rule_id: str) -> Decision:
    found = [d for d in report_decisions if d.rule_id == rule_id]
    assert len(found) == 1, found
    return found[0]


# --- one requirement, one decision, one exact explanation ----------------------------

@dataclass
class Case:
    require: dict[str, Any]
    dataset: dict[str, Any]
    field: str
    outcome: str
    reason: str
    severity: str = "deny"
    match: dict[str, Any] | None = None
    files: dict[str, list[str]] = field(default_factory=dict)
    top: dict[str, Any] = field(default_factory=dict)


CASES = {
    "encryption-missing": Case(
        {"encryption": True}, {}, "datasets[0].encrypt", "violated",
        "not encrypted; set encrypt: true with recipients"),
    "encryption-present": Case(
        {"encryption": True}, {"encrypt": {"recipients": ["R1"]}}, "datasets[0].encrypt",
        "satisfied", "encrypted (age v1)"),
    "one-recipient-of-two": Case(
        {"min_recipients": 2}, {"encrypt": {"recipients": ["R1"]}},
        "datasets[0].encrypt.recipients", "violated",
        "encrypted for 1 recipient; at least 2 required (add a recovery key to the recipients)"),
    "inline-plus-file-count-together": Case(
        {"min_recipients": 2}, {"encrypt": {"recipients": ["R1"], "recipients_file": "r.txt"}},
        "datasets[0].encrypt.recipients", "satisfied",
        "encrypted for 2 recipients (at least 2 required)", files={"r.txt": ["# recovery", "R2"]}),
    "same-key-twice-counts-once": Case(
        {"min_recipients": 2}, {"encrypt": {"recipients": ["R1"], "recipients_file": "r.txt"}},
        "datasets[0].encrypt.recipients", "violated",
        "encrypted for 1 recipient; at least 2 required (add a recovery key to the recipients)",
        files={"r.txt": ["R1"]}),
    "recipients-from-manifest-keys": Case(
        {"min_recipients": 3}, {"encrypt": True}, "datasets[0].encrypt.recipients", "satisfied",
        "encrypted for 3 recipients (at least 3 required)",
        files={"all.txt": ["R1", "R2", "R3"]}, top={"keys": {"recipients_file": "all.txt"}}),
    "recipients-of-unencrypted-warn": Case(
        {"min_recipients": 2}, {}, "datasets[0].encrypt.recipients", "violated",
        "not encrypted, so no recipients; at least 2 required", severity="warn"),
    "region-not-allowed": Case(
        {"regions": ["eu-*"]}, {"destination": {"url": "s3://us-data/c/", "region": "us-east-1"}},
        "datasets[0].destination.region", "violated",
        "destination region us-east-1 is not allowed (allowed: eu-*) [declared]"),
    "region-unknown": Case(
        {"regions": ["eu-*"]}, {"destination": {"url": "s3://somewhere/c/"}},
        "datasets[0].destination.region", "violated",
        "region unknown (declare it or make it discoverable)"),
    "region-glob-ignores-case": Case(
        {"regions": ["eu-*", "europe-*"]},
        {"destination": {"url": "s3://eu-data/c/", "region": "EUROPE-WEST4"}},
        "datasets[0].destination.region", "satisfied",
        "destination region EUROPE-WEST4 is allowed (allowed: eu-*, europe-*) [declared]"),
    "storage-class-default-is-standard-warn": Case(
        {"storage_classes": ["GLACIER", "DEEP_ARCHIVE"]}, {},
        "datasets[0].destination.storage_class", "violated",
        "destination storage class STANDARD (the store default: no storage_class given) is not "
        "allowed (allowed: GLACIER, DEEP_ARCHIVE)", severity="warn"),
    "storage-class-declared-not-allowed": Case(
        {"storage_classes": ["STANDARD", "STANDARD_IA"]},
        {"destination": {"url": "s3://eu-data/c/", "region": "eu-west-1",
                         "storage_class": "GLACIER"}},
        "datasets[0].destination.storage_class", "violated",
        "destination storage class GLACIER is not allowed (allowed: STANDARD, STANDARD_IA)"),
    "storage-class-allowed": Case(
        {"storage_classes": ["STANDARD_IA", "GLACIER*"]},
        {"destination": {"url": "s3://eu-data/c/", "storage_class": "GLACIER_IR"}},
        "datasets[0].destination.storage_class", "satisfied",
        "destination storage class GLACIER_IR is allowed (allowed: STANDARD_IA, GLACIER*)"),
    "tag-missing": Case(
        {"tags": ["cost_center"]}, {"tags": {"owner": "crm"}}, "datasets[0].tags.cost_center",
        "violated", "tag cost_center is missing; add tags: {cost_center: ...}"),
    "tag-blank-warn": Case(
        {"tags": ["cost_center"]}, {"tags": {"owner": "crm", "cost_center": "  "}},
        "datasets[0].tags.cost_center", "violated", "tag cost_center is empty; give it a value",
        severity="warn"),
    "tag-present": Case(
        {"tags": ["owner"]}, {}, "datasets[0].tags.owner", "satisfied", "tag owner is 'crm'"),
    "verify-too-weak": Case(
        {"verify": "checksum"}, {"verify": "size"}, "datasets[0].verify", "violated",
        "verify is size; at least checksum required (size < checksum < full)"),
    "verify-full-wanted-warn": Case(
        {"verify": "full"}, {}, "datasets[0].verify", "violated",
        "verify is checksum; at least full required (size < checksum < full)", severity="warn"),
    "verify-stronger-is-fine": Case(
        {"verify": "checksum"}, {"verify": "full"}, "datasets[0].verify", "satisfied",
        "verify is full (at least checksum required)"),
    "selected-by-tag-glob": Case(
        {"encryption": True}, {"name": "ckpt", "tags": {"kind": "Model-v2"}},
        "datasets[0].encrypt", "violated", "not encrypted; set encrypt: true with recipients",
        match={"tags": {"kind": "model*"}}),
    "selected-by-name-glob": Case(
        {"encryption": True}, {"name": "resnet-weights", "classification": None},
        "datasets[0].encrypt", "violated", "not encrypted; set encrypt: true with recipients",
        match={"name": ["*model*", "*weights*"]}),
    "classification-ignores-case": Case(
        {"verify": "full"}, {"classification": "PII"}, "datasets[0].verify", "violated",
        "verify is checksum; at least full required (size < checksum < full)",
        match={"classification": ["pii", "personal"]}),
}


@pytest.mark.parametrize("name", CASES)
def test_each_requirement_explains_its_decision(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    manifest = manifest_of(tmp_path, {**DATASET, **case.dataset}, files=case.files, **case.top)
    rules = parse_policies(policy(rule(name, case.require, case.severity, case.match)), "p.yaml")
    report = evaluate(manifest, rules)

    decision = only(report.decisions, name)
    assert (decision.rule_id, decision.severity, decision.dataset, decision.field,
            decision.outcome, decision.reason) == (
        name, case.severity, manifest.datasets[0].name, case.field, case.outcome, case.reason)
    assert decision.description == f"{name} description"
    assert decision.origin == "p.yaml:3"
    denied = case.outcome == "violated" and case.severity == "deny"
    assert report.denied == ([decision] if denied else [])
    assert report.warned == ([decision] if case.outcome == "violated" and not denied else [])
    assert report.exit_code == (3 if denied else 0)


# --- selectors ------------------------------------------------------------------------

def selected(tmp_path: Path, match: dict[str, Any] | None, *datasets: dict[str, Any]) -> list[str]:
    manifest = manifest_of(tmp_path, *datasets)
    rules = parse_policies(policy(rule("r", {"verify": "size"}, match=match)), "p.yaml")
    return [d.dataset for d in evaluate(manifest, rules).decisions]


def ds(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "source": {"url": f"./{name}/"},
            "destination": {"url": f"s3://bucket/{name}/"}, **fields}


def test_every_condition_of_a_selector_must_hold(tmp_path: Path) -> None:
    datasets = [ds("a", classification="pii", tags={"kind": "model"}),
                ds("b", classification="pii", tags={"kind": "table"}),
                ds("c", classification="internal", tags={"kind": "model"}),
                ds("d", tags={"kind": "model"})]
    match = {"classification": ["pii"], "tags": {"kind": "model"}}
    assert selected(tmp_path, match, *datasets) == ["a"]


def test_no_selector_or_an_empty_one_selects_every_dataset(tmp_path: Path) -> None:
    datasets = [ds("a"), ds("b", classification="pii")]
    assert selected(tmp_path, None, *datasets) == ["a", "b"]
    assert selected(tmp_path, {}, *datasets) == ["a", "b"]


def test_any_selects_when_one_alternative_holds(tmp_path: Path) -> None:
    datasets = [ds("bert-large", tags={"kind": "table"}), ds("ckpt", tags={"kind": "model"}),
                ds("logs"), ds("x-model", classification="internal")]
    match = {"any": [{"tags": {"kind": "model"}}, {"name": ["bert*"]}]}
    assert selected(tmp_path, match, *datasets) == ["bert-large", "ckpt"]
    nested = {"classification": ["internal"], "any": [{"name": ["*model*"]}]}
    assert selected(tmp_path, nested, *datasets) == ["x-model"]


def test_a_tag_selector_needs_the_tag(tmp_path: Path) -> None:
    assert selected(tmp_path, {"tags": {"kind": "*"}}, ds("a"), ds("b", tags={"kind": ""})) \
        == ["b"]


def test_fields_carry_the_dataset_index_and_a_dataset_filter(tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path, ds("a", verify="full"), ds("b", verify="size"))
    rules = parse_policies(policy(rule("strong", {"verify": "checksum"})), "p.yaml")
    report = evaluate(manifest, rules)
    assert [(d.dataset, d.field, d.outcome) for d in report.decisions] == [
        ("a", "datasets[0].verify", "satisfied"), ("b", "datasets[1].verify", "violated")]
    only_a = evaluate(manifest, rules, datasets=["a"])
    assert [d.dataset for d in only_a.decisions] == ["a"] and only_a.exit_code == 0


# --- regions given by discovery --------------------------------------------------------

def test_discovered_region_is_judged_and_a_contradicted_declaration_denied(
        tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path)  # destination declared eu-central-1
    rules = parse_policies(policy(rule("eu", {"regions": ["eu-*"]})), "p.yaml")
    regions = {("customers", "destination"): RegionFacts("eu-central-1", "us-east-1",
                                                         "s3 GetBucketLocation")}
    report = evaluate(manifest, rules, regions)
    assert [(d.rule_id, d.field, d.outcome, d.reason) for d in report.decisions] == [
        (REGION_MISMATCH, "datasets[0].destination.region", "violated",
         "declared region eu-central-1 but the destination is in us-east-1 [s3 GetBucketLocation]"
         "; correct destination.region, or choose a destination in eu-central-1"),
        ("eu", "datasets[0].destination.region", "violated",
         "destination region us-east-1 is not allowed (allowed: eu-*) [s3 GetBucketLocation]")]
    assert report.denied[0].origin == "built-in" and report.exit_code == 3


def test_mismatch_is_checked_without_any_policy_and_for_sources(tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path, {**DATASET, "source": {"url": "./src/",
                                                            "region": "eu-west-1"}})
    regions = {("customers", "source"): RegionFacts("eu-west-1", "local", "default"),
               ("customers", "destination"): RegionFacts("eu-central-1", "EU-CENTRAL-1", "gcs")}
    report = evaluate(manifest, [], regions)
    assert [(d.rule_id, d.severity, d.field, d.outcome) for d in report.decisions] == [
        (REGION_MISMATCH, "deny", "datasets[0].source.region", "violated"),
        (REGION_MISMATCH, "deny", "datasets[0].destination.region", "satisfied")]
    assert report.decisions[1].reason == "declared region eu-central-1 [gcs]"


def test_an_undiscovered_declared_region_is_used_and_says_so(tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path)
    rules = parse_policies(policy(rule("eu", {"regions": ["eu-*"]})), "p.yaml")
    facts = RegionFacts("eu-central-1", None, "unknown: s3 GetBucketLocation failed: AccessDenied")
    report = evaluate(manifest, rules, {("customers", "destination"): facts})
    assert [(d.rule_id, d.outcome, d.reason) for d in report.decisions] == [
        ("eu", "satisfied", "destination region eu-central-1 is allowed (allowed: eu-*) "
                            "[declared, not confirmed: s3 GetBucketLocation failed: AccessDenied]")]


# --- the report -------------------------------------------------------------------------

def test_report_renders_violations_in_full_and_satisfied_compactly(tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path, {**DATASET, "verify": "size"}, ds("logs"))
    text = policy(rule("strong", {"verify": "checksum"}),
                  rule("owned", {"tags": ["owner"]}, "warn"))
    report = evaluate(manifest, parse_policies(text, "policies/p.yaml"))
    out = io.StringIO()
    report.render(out)
    assert out.getvalue() == (
        f"policy check of manifest test ({manifest.path})\n"
        f"policies: policies/p.yaml (2 rules) + built-in {REGION_MISMATCH}\n"
        "\nDENY  strong  dataset customers  datasets[0].verify\n"
        "      verify is size; at least checksum required (size < checksum < full)\n"
        "      rule: strong description (policies/p.yaml:3)\n"
        "\nWARN  owned  dataset logs  datasets[1].tags.owner\n"
        "      tag owner is missing; add tags: {owner: ...}\n"
        "      rule: owned description (policies/p.yaml:8)\n"
        "\nsatisfied (2):\n"
        "  customers: owned (tags.owner)\n"
        "  logs: strong (verify)\n"
        "\nrefused: 1 denied, 1 warning; nothing may move (exit 3)\n")


def test_report_as_json_holds_every_decision(tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path)
    report = evaluate(manifest, parse_policies(policy(rule("owned", {"tags": ["owner"]}, "warn")),
                                               "p.yaml"))
    data = json.loads(json.dumps(report.to_dict()))
    assert data == {
        "manifest": {"name": "test", "path": manifest.path}, "policies": ["p.yaml"], "rules": 1,
        "denied": 0, "warned": 0, "exit_code": 0,
        "decisions": [{"rule_id": "owned", "severity": "warn", "dataset": "customers",
                       "field": "datasets[0].tags.owner", "reason": "tag owner is 'crm'",
                       "outcome": "satisfied", "description": "owned description",
                       "origin": "p.yaml:3"}]}
    out = io.StringIO()
    report.render(out)
    assert out.getvalue().endswith("\nallowed: 0 denied, 0 warnings (exit 0)\n")
    report.raise_if_denied()  # nothing denied: no exception


def test_raise_if_denied_names_every_denial(tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path, {**DATASET, "verify": "size", "tags": {}})
    text = policy(rule("strong", {"verify": "checksum"}), rule("owned", {"tags": ["owner"]}))
    with pytest.raises(PolicyRefused) as info:
        evaluate(manifest, parse_policies(text, "p.yaml")).raise_if_denied()
    assert info.value.exit_code == 3
    assert str(info.value) == (
        "refused by policy (2 denied):\n"
        "  strong: dataset customers: datasets[0].verify: verify is size; at least checksum "
        "required (size < checksum < full) (p.yaml:3)\n"
        "  owned: dataset customers: datasets[0].tags.owner: tag owner is missing; add tags: "
        "{owner: ...} (p.yaml:8)")


# --- bad policy files ---------------------------------------------------------------------

RULE = "  - id: r\n    description: d\n    severity: deny\n"
BAD_FILES = {
    "unknown-top-key": ("version: 1\nrule: []\nrules:\n" + RULE + "    require: {verify: full}\n",
                        2, "rule",
                        "unknown key; check the spelling against docs/POLICIES.md (allowed "
                        "here: version, rules)"),
    "unknown-rule-key": ("version: 1\nrules:\n" + RULE + "    require: {verify: full}\n"
                         "    when: always\n", 7, "rules[0].when", "unknown key; check the "
                         "spelling against docs/POLICIES.md (allowed here: id, description, "
                         "severity, match, require)"),
    "unknown-match-key": ("version: 1\nrules:\n" + RULE + "    match:\n      classifcation: [pii]"
                          "\n    require: {verify: full}\n", 7, "rules[0].match.classifcation",
                          "(allowed here: classification, tags, name, any)"),
    "unknown-key-inside-any": ("version: 1\nrules:\n" + RULE + "    match:\n      any:\n"
                               "        - {names: [x]}\n    require: {verify: full}\n", 8,
                               "rules[0].match.any[0].names",
                               "(allowed here: classification, tags, name, any)"),
    "unknown-require-key": ("version: 1\nrules:\n" + RULE + "    require:\n      encrypted: true\n",
                            7, "rules[0].require.encrypted", "(allowed here: encryption, "
                            "min_recipients, regions, storage_classes, tags, verify, sse_kms)"),
    "bad-severity": ("version: 1\nrules:\n  - id: r\n    description: d\n    severity: block\n"
                     "    require: {verify: full}\n", 5, "rules[0].severity",
                     "must be 'deny' or 'warn' (got 'block')"),
    "missing-severity": ("version: 1\nrules:\n  - id: r\n    description: d\n"
                         "    require: {verify: full}\n", 3, "rules[0].severity",
                         "required key is missing"),
    "missing-require": ("version: 1\nrules:\n" + RULE, 3, "rules[0].require",
                        "required key is missing"),
    "empty-require": ("version: 1\nrules:\n" + RULE + "    require: {}\n", 6, "rules[0].require",
                      "names no requirement; give at least one of encryption, min_recipients, "
                      "regions, storage_classes, tags, verify"),
    "encryption-false": ("version: 1\nrules:\n" + RULE + "    require:\n      encryption: false\n",
                         7, "rules[0].require.encryption",
                         "must be true (leave it out when a rule does not require encryption)"),
    "recipients-as-text": ("version: 1\nrules:\n" + RULE + "    require:\n"
                           "      min_recipients: '2'\n", 7, "rules[0].require.min_recipients",
                           "must be a whole number (got '2')"),
    "recipients-zero": ("version: 1\nrules:\n" + RULE + "    require:\n      min_recipients: 0\n",
                        7, "rules[0].require.min_recipients", "must be at least 1 (got 0)"),
    "bad-verify": ("version: 1\nrules:\n" + RULE + "    require:\n      verify: sha1\n", 7,
                   "rules[0].require.verify",
                   "must be one of 'size', 'checksum' or 'full' (got 'sha1')"),
    "empty-regions": ("version: 1\nrules:\n" + RULE + "    require:\n      regions: []\n", 7,
                      "rules[0].require.regions", "must list at least 1 item"),
    "regions-not-a-list": ("version: 1\nrules:\n" + RULE + "    require:\n      regions: eu-*\n",
                           7, "rules[0].require.regions", "must be a list (got 'eu-*')"),
    "bad-id": ("version: 1\nrules:\n  - id: -x\n    description: d\n    severity: warn\n"
               "    require: {verify: full}\n", 3, "rules[0].id", "must start with a letter"),
    "wrong-version": ("version: 2\nrules:\n" + RULE + "    require: {verify: full}\n", 1,
                      "version", "unsupported policy file version 2; this datamove reads 1"),
    "no-rules": ("version: 1\nrules: []\n", 2, "rules", "must list at least 1 item"),
    "duplicate-key": ("version: 1\nrules:\n" + RULE + "    severity: warn\n"
                      "    require: {verify: full}\n", 6, "rules[0].severity",
                      "duplicate key; keep only one"),
    "not-a-mapping": ("- id: r\n", 1, "(top level)", "the policy file must be a mapping"),
    "empty": ("", 1, "(top level)", "the policy file is empty"),
    "yaml-syntax": ("version: 1\nrules: [\n", 3, "YAML syntax error", "expected the node content"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_policy_file_names_file_line_and_field(tmp_path: Path, name: str) -> None:
    text, line, where, message = BAD_FILES[name]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PolicyFileError) as info:
        load_policies([path])
    assert info.value.exit_code == 2
    assert len(info.value.problems) == 1, info.value.problems
    problem = info.value.problems[0]
    assert problem.startswith(f"{path}:{line}:"), problem
    assert where in problem and message in problem, problem


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    a.write_text("version: 1\nrules:\n  - {id: x, description: d, severity: deny,\n"
                 "     require: {verify: full}}\n")
    b.write_text("version: 1\nrules:\n  - {id: x, description: d, severity: warn,\n"
                 f"     require: {{verify: full}}}}\n  - id: {REGION_MISMATCH}\n"
                 "    description: d\n    severity: warn\n    require: {verify: full}\n")
    c.write_text("version: 1\nrules:\n  - {id: y, description: d, severity: nope,\n"
                 "     require: {verify: full}}\n  - {id: z, description: d, severity: deny,\n"
                 "     require: {verify: fast}}\n")
    with pytest.raises(PolicyFileError) as info:
        load_policies([a, b, c, tmp_path / "gone.yaml"])
    assert info.value.problems == [
        f"{c}:3: rules[0].severity: must be 'deny' or 'warn' (got 'nope')",
        f"{c}:6: rules[1].require.verify: must be one of 'size', 'checksum' or 'full' (got "
        "'fast')",
        f"{tmp_path / 'gone.yaml'}: cannot read the policy file: No such file or directory",
        f"{b}:3: rules[0].id: rule id 'x' is already defined at {a}:3; rule ids must be unique",
        f"{b}:5: rules[1].id: '{REGION_MISMATCH}' is the built-in rule's id; choose another"]
    assert str(info.value).startswith("invalid policy files (5 problems)\n  ")


def test_oversized_and_deeply_nested_policy_files_are_refused_at_once(tmp_path: Path) -> None:
    """Policy files are read like manifests: at most 1 MiB, nested at most 64 deep. A
    deep one used to escape as RecursionError (exit 1); a big one took minutes."""
    big, deep = tmp_path / "big.yaml", tmp_path / "deep.yaml"
    with open(big, "w") as f:
        f.write("version: 1\nrules:\n")
        for i in range(30_000):  # valid rules, about 2 MiB
            f.write(f"  - {{id: r{i}, description: d, severity: warn, require: {{verify: "
                    "size}}\n")
    deep.write_text("version: 1\nrules:\n" + RULE + "    require:\n      tags: " + "[" * 2000
                    + "]" * 2000 + "\n")

    tracemalloc.start()
    try:
        with pytest.raises(PolicyFileError) as info:
            load_policies([big, deep])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 10_000_000, f"{peak} bytes at peak"  # neither read whole nor composed
    assert info.value.exit_code == 2
    assert info.value.problems == [
        f"{big}: larger than 1 MiB, the most a policy file may hold; split its rules into "
        "several files",
        f"{deep}:7: rules[0].require.tags" + "[0]" * 61 + ": nested more than 64 levels deep; "
        "no field of datamove's nests that far, so flatten the structure"]


# --- which files apply ---------------------------------------------------------------------

GOOD = policy(rule("ok", {"verify": "size"}))


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A manifest with a policies/ directory beside it, and other policy files around."""
    monkeypatch.delenv("DATAMOVE_POLICIES", raising=False)
    monkeypatch.chdir(tmp_path)
    for name in ("policies/b.yaml", "policies/a.yaml", "policies/notes.txt", "org/x.yaml",
                 "org/sub/y.yaml", "env/e.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(GOOD)
    return tmp_path


def test_default_is_the_policies_directory_beside_the_manifest(tree: Path) -> None:
    manifest = manifest_of(tree)
    assert find_policy_files(manifest) == [tree / "policies/a.yaml", tree / "policies/b.yaml"]
    (tree / "policies/a.yaml").unlink()
    (tree / "policies/b.yaml").unlink()
    assert find_policy_files(manifest) == []  # no policy file: only the built-in rule


def test_manifest_policies_replace_the_default(tree: Path) -> None:
    manifest = manifest_of(tree, policies=["org/**/*.yaml", "policies/b.yaml", "org/x.yaml"])
    assert find_policy_files(manifest) == [tree / "org/sub/y.yaml", tree / "org/x.yaml",
                                           tree / "policies/b.yaml"]


def test_environment_beats_manifest_and_command_line_beats_both(
        tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = manifest_of(tree, policies=["org/x.yaml"])
    monkeypatch.setenv("DATAMOVE_POLICIES", f"{tree}/env/e.yaml:{tree}/org/x.yaml")
    assert find_policy_files(manifest) == [tree / "env/e.yaml", tree / "org/x.yaml"]
    assert find_policy_files(manifest, ["policies"]) == [Path("policies/a.yaml"),
                                                         Path("policies/b.yaml")]


@pytest.mark.parametrize(("entry", "message"), [
    ("nope.yaml", "--policies: policy file nope.yaml does not exist; check the path"),
    ("org/*.yml", "--policies: 'org/*.yml' matches no policy file; check the pattern"),
    ("env/../src", "--policies: policy file env/../src does not exist"),
])
def test_a_named_policy_that_finds_nothing_is_bad_input(tree: Path, entry: str,
                                                        message: str) -> None:
    with pytest.raises(BadInput, match=re.escape(message)):
        find_policy_files(manifest_of(tree), [entry])


def test_a_missing_manifest_policy_names_the_manifest(tree: Path) -> None:
    manifest = manifest_of(tree, policies=["gone.yaml"])
    with pytest.raises(BadInput, match=re.escape(
            f"{manifest.path}: policies: policy file {tree}/gone.yaml does not exist")):
        find_policy_files(manifest)
    (tree / "empty").mkdir()
    with pytest.raises(BadInput, match="directory empty holds no"):
        find_policy_files(manifest, ["empty"])


# --- the shipped examples ------------------------------------------------------------------

EXAMPLES = [REPO / "policies" / "eu-pii.yaml", REPO / "policies" / "model-artifacts.yaml"]
COMPLIANT = [
    {"name": "customers", "source": {"url": "./src/"},
     "destination": {"url": "s3://eu-crm/customers/", "region": "eu-central-1"},
     "classification": "pii", "tags": {"owner": "crm", "cost_center": "cc-7"},
     "verify": "checksum", "encrypt": {"recipients": ["R1"], "recipients_file": "recovery.txt"}},
    {"name": "resnet-weights", "source": {"url": "./models/"},
     "destination": {"url": "s3://registry/resnet/", "region": "us-west-2"},
     "tags": {"owner": "vision"}, "verify": "full", "encrypt": True},
    {"name": "logs", "source": {"url": "./logs/"}, "destination": {"url": "s3://logs/app/"},
     "classification": "internal"},
]
RECOVERY = {"recovery.txt": ["R2"], "ops.txt": ["R1", "R3"]}


def example_report(tmp_path: Path, changes: dict[int, dict[str, Any]]) -> list[tuple[str, ...]]:
    datasets = [{**d, **changes.get(i, {})} for i, d in enumerate(COMPLIANT)]
    manifest = manifest_of(tmp_path, *datasets, files=RECOVERY,
                           keys={"recipients_file": "ops.txt"})
    report = check(manifest, [str(p) for p in EXAMPLES], discover=False)
    assert report.files == [str(p) for p in EXAMPLES]
    return [(d.rule_id, d.severity, d.dataset, d.field, d.reason)
            for d in report.denied + report.warned]


def test_examples_pass_a_compliant_manifest_and_say_what_they_checked(tmp_path: Path) -> None:
    assert example_report(tmp_path, {}) == []
    manifest = manifest_of(tmp_path, *COMPLIANT, files=RECOVERY,
                           keys={"recipients_file": "ops.txt"})
    report = check(manifest, [str(p) for p in EXAMPLES], discover=False)
    assert sorted({(d.rule_id, d.dataset) for d in report.decisions}) == [
        ("eu-pii-accountable", "customers"), ("eu-pii-encrypted", "customers"),
        ("eu-pii-residency", "customers"), ("eu-pii-verified", "customers"),
        ("models-encrypted", "resnet-weights"), ("models-owner", "resnet-weights"),
        ("models-verify-full", "resnet-weights")]
    assert report.exit_code == 0 and len(report.decisions) == 9


def test_eu_pii_outside_the_eu_is_denied(tmp_path: Path) -> None:
    change = {"destination": {"url": "s3://us-crm/c/", "region": "us-east-1"},
              "classification": "Personal"}
    assert example_report(tmp_path, {0: change}) == [
        ("eu-pii-residency", "deny", "customers", "datasets[0].destination.region",
         "destination region us-east-1 is not allowed (allowed: eu-*, europe-*, eu) [declared]")]


def test_eu_pii_with_one_key_no_cost_center_and_size_checks_is_denied(tmp_path: Path) -> None:
    change = {"encrypt": {"recipients": ["R1"]}, "tags": {"owner": "crm"}, "verify": "size"}
    assert example_report(tmp_path, {0: change}) == [
        ("eu-pii-encrypted", "deny", "customers", "datasets[0].encrypt.recipients",
         "encrypted for 1 recipient; at least 2 required (add a recovery key to the recipients)"),
        ("eu-pii-accountable", "deny", "customers", "datasets[0].tags.cost_center",
         "tag cost_center is missing; add tags: {cost_center: ...}"),
        ("eu-pii-verified", "deny", "customers", "datasets[0].verify",
         "verify is size; at least checksum required (size < checksum < full)")]


def test_plaintext_model_artifacts_are_denied_and_weak_ones_warned(tmp_path: Path) -> None:
    weights = {"encrypt": False, "tags": {}, "verify": "checksum"}
    tagged = {"name": "ckpt-archive", "tags": {"kind": "model"}, "classification": None}
    plaintext = "not encrypted; set encrypt: true with recipients"
    weak = [("models-verify-full", "warn", "verify",
             "verify is checksum; at least full required (size < checksum < full)"),
            ("models-owner", "warn", "tags.owner", "tag owner is missing; add tags: {owner: ...}")]
    assert example_report(tmp_path, {1: weights, 2: tagged}) == [
        ("models-encrypted", "deny", "resnet-weights", "datasets[1].encrypt", plaintext),
        ("models-encrypted", "deny", "ckpt-archive", "datasets[2].encrypt", plaintext),
        *((rule_id, severity, name, f"datasets[{i}].{where}", reason)
          for i, name in ((1, "resnet-weights"), (2, "ckpt-archive"))
          for rule_id, severity, where, reason in weak)]


def test_warnings_alone_do_not_refuse(tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path, {**COMPLIANT[1], "verify": "checksum"}, files=RECOVERY,
                           keys={"recipients_file": "ops.txt"})
    report = check(manifest, [str(EXAMPLES[1])], discover=False)
    assert [d.rule_id for d in report.warned] == ["models-verify-full"]
    assert report.denied == [] and report.exit_code == 0


def test_policy_examples_in_the_docs_load() -> None:
    text = (REPO / "docs" / "POLICIES.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert blocks
    for block in blocks:
        assert parse_policies(block, "docs/POLICIES.md")


# --- lifecycle rules: where and in which class the data will end up -------------------

def test_lifecycle_locations_and_tiers_are_judged_like_the_destination(tmp_path: Path) -> None:
    dataset = {**DATASET, "lifecycle": [
        {"after": "30d", "tier": "GLACIER"},
        {"after": "365d", "location": {"url": "s3://us-cold/customers/", "region": "us-east-1",
                                       "storage_class": "DEEP_ARCHIVE"}},
    ]}
    manifest = manifest_of(tmp_path, dataset)
    rules = parse_policies(policy(rule("eu-only", {"regions": ["eu-*"]}),
                                  rule("warm-only", {"storage_classes": ["STANDARD*"]})),
                           "p.yaml")
    report = evaluate(manifest, rules)
    judged = {(d.rule_id, d.field): (d.outcome, d.reason) for d in report.decisions}
    assert judged[("eu-only", "datasets[0].destination.region")][0] == "satisfied"
    outcome, reason = judged[("eu-only", "datasets[0].lifecycle[1].location.region")]
    assert outcome == "violated" and "us-east-1" in reason
    outcome, reason = judged[("warm-only", "datasets[0].lifecycle[0].tier")]
    assert outcome == "violated" and "GLACIER" in reason
    outcome, reason = judged[("warm-only", "datasets[0].lifecycle[1].location.storage_class")]
    assert outcome == "violated" and "DEEP_ARCHIVE" in reason
    assert report.exit_code == 3
    discovered = {("customers", "lifecycle[1]"): RegionFacts("us-east-1", "eu-west-1",
                                                             "s3 GetBucketLocation")}
    contradicted = evaluate(manifest, [], discovered)
    [mismatch] = [d for d in contradicted.decisions if d.rule_id == REGION_MISMATCH
                  and "lifecycle" in d.field]
    assert mismatch.outcome == "violated"
