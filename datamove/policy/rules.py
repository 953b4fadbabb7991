"""Policies as code: load rules from YAML, judge a manifest, explain every decision.

A migration that would break a residency or encryption rule must stop before a
byte moves, and an auditor must be able to see afterwards what was checked and
why it passed. So evaluation is a pure function of the manifest, the rules and
the regions (discovered beforehand by regions.py), and it returns one
:class:`Decision` per (rule, dataset, requirement) — satisfied ones included —
each naming the rule, the dataset, the manifest field and the reason.

Policy files are read like manifests (manifest/model.py's YAML node index), so every
mistake is reported at once as ``file:line: field: what to do``; a rule that is
silently misread would be worse than none. The format is in docs/POLICIES.md.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from datamove.errors import BadInput, ManifestError, PolicyRefused
from datamove.manifest.model import NAME_PATTERN, DatasetSpec, Manifest, VerifyMode, _Strict
from datamove.manifest.yaml_source import (
    compose,
    construct,
    dotted,
    explain,
    finish,
    index_lines,
    line_for,
    read_limited,
    shown_value,
    size_problem,
    yaml_error,
)
from datamove.policy.regions import RegionFacts, discover_manifest, matches_any
from datamove.stores.base import backend_for, protocol_of

POLICIES_ENV = "DATAMOVE_POLICIES"
BUILTIN = "built-in"
REGION_MISMATCH = "region-declared-mismatch"
DEFAULT_STORAGE_CLASS = "STANDARD"
_VERIFY_ORDER = {VerifyMode.size: 0, VerifyMode.checksum: 1, VerifyMode.full: 2}
_SIDES = ("source", "destination")

Text = Annotated[str, Field(min_length=1)]
Texts = Annotated[list[Text], Field(min_length=1)]


# --- the file format ----------------------------------------------------------------

class MatchSpec(_Strict):
    """Which datasets a rule applies to: all given conditions must hold.

    Comparisons ignore case, so a rule for ``pii`` cannot be slipped past by
    writing ``PII``; over-selecting is the safe mistake for a selector.
    """

    classification: Texts | None = None
    tags: dict[str, Text] | None = None
    name: Texts | None = None
    any: Annotated[list[MatchSpec], Field(min_length=1)] | None = None  # one of these holds

    def selects(self, dataset: DatasetSpec) -> bool:
        if self.any is not None and not any(m.selects(dataset) for m in self.any):
            return False
        label = dataset.classification
        if self.classification is not None and not (label and matches_any(label,
                                                                          self.classification)):
            return False
        for tag, pattern in (self.tags or {}).items():
            if tag not in dataset.tags or not matches_any(dataset.tags[tag], [pattern]):
                return False
        return self.name is None or matches_any(dataset.name, self.name)


class RequireSpec(_Strict):
    """What a selected dataset must satisfy; each requirement is one decision."""

    encryption: Annotated[bool | None, Field(strict=True)] = None
    min_recipients: Annotated[int | None, Field(strict=True, ge=1, le=1000)] = None
    regions: Texts | None = None
    storage_classes: Texts | None = None
    tags: Texts | None = None
    verify: VerifyMode | None = None
    # S3 server-side encryption with KMS on the destination (destination sse: aws:kms).
    sse_kms: Annotated[bool | None, Field(strict=True)] = None

    @field_validator("encryption")
    @classmethod
    def _only_true(cls, value: bool | None) -> bool | None:
        if value is False:
            raise ValueError("must be true (leave it out when a rule does not require "
                             "encryption)")
        return value

    @field_validator("sse_kms")
    @classmethod
    def _sse_kms_true(cls, value: bool | None) -> bool | None:
        if value is False:
            raise ValueError("must be true (leave it out when a rule does not require "
                             "SSE-KMS)")
        return value

    @model_validator(mode="after")
    def _something(self) -> RequireSpec:
        if not any(v is not None for v in self.__dict__.values()):
            raise ValueError("names no requirement; give at least one of "
                             f"{', '.join(RequireSpec.model_fields)}")
        return self


class RuleSpec(_Strict):
    id: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: Text
    severity: Literal["deny", "warn"]
    match: MatchSpec = Field(default_factory=MatchSpec)
    require: RequireSpec


class PolicyFile(_Strict):
    version: Literal[1]
    rules: Annotated[list[RuleSpec], Field(min_length=1)]

    @field_validator("version", mode="before")
    @classmethod
    def _integer(cls, value: Any) -> Any:
        if type(value) is not int:  # Literal[1] alone takes true and 1.0
            raise ValueError("unsupported version")
        return value


@dataclass(frozen=True)
class Rule:
    """A rule and where it was written, so every decision can point back to it."""

    spec: RuleSpec
    file: str
    line: int
    index: int  # rules[index] in its file

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"


class PolicyFileError(BadInput):
    """Policy files failed to load. ``problems`` lists each, as file:line: field: what."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        s = "s" * (len(problems) != 1)
        super().__init__("\n".join([f"invalid policy files ({len(problems)} problem{s})",
                                    *(f"  {p}" for p in problems)]))


# The model behind a mapping, by the key that holds it (for "allowed here: ...").
_MODELS: dict[str, type[BaseModel]] = {
    "": PolicyFile, "rules": RuleSpec, "match": MatchSpec, "any": MatchSpec,
    "require": RequireSpec}


def _explain_policy(err: dict[str, Any]) -> str:
    """manifest.explain, in a policy file's words where they differ."""
    loc, kind = tuple(err["loc"]), err["type"]
    if kind == "extra_forbidden":
        model = _MODELS.get(([""] + [p for p in loc[:-1] if isinstance(p, str)])[-1])
        known = f" (allowed here: {', '.join(model.model_fields)})" if model else ""
        return f"unknown key; check the spelling against docs/POLICIES.md{known}"
    if loc == ("version",) and kind in ("literal_error", "value_error"):
        got = shown_value(err.get("input"))
        return f"unsupported policy file version {got}; this datamove reads 1"
    if loc[-1:] == ("severity",) and kind == "literal_error":
        return f"must be 'deny' or 'warn' (got {err.get('input')!r})"
    return explain(err)


def parse_policies(raw: bytes | str, shown: str) -> list[Rule]:
    """Rules of one policy file's text; ``shown`` names it in errors and decisions."""
    rules, problems = _parse(raw, shown)
    if problems:
        raise PolicyFileError(finish(problems))
    return rules


def _parse(raw: bytes | str, shown: str) -> tuple[list[Rule], list[tuple[int, str]]]:
    too_big = size_problem(raw, shown, "a policy file")
    if too_big:
        return [], [(0, too_big)]
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            return [], [(line, f"{shown}:{line}: not UTF-8 text; save the file as UTF-8")]
    try:
        root = compose(raw, shown, "a policy file")
        if not isinstance(root, yaml.MappingNode):
            line, what = (1, "is empty") if root is None else (
                root.start_mark.line + 1, "must be a mapping, not a list or a single value")
            return [], [(line, f"{shown}:{line}: (top level): the policy file {what}; it holds "
                               "version: 1 and rules: [...] (docs/POLICIES.md)")]
        lines, problems = index_lines(root, shown)
        data = construct(root)
    except yaml.YAMLError as exc:
        return [], [(0, yaml_error(exc, shown))]
    except ManifestError as exc:  # alias bombs and the like, already file:line
        return [], [(0, p) for p in exc.problems]
    try:
        parsed = PolicyFile.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if err["type"] != "invalid_key" and "[key]" not in loc:  # else: index_lines
                line = line_for(loc, lines)
                problems.append((line, f"{shown}:{line}: {dotted(loc)}: {_explain_policy(err)}"))
        return [], problems
    rules = [Rule(spec, shown, lines[("rules", i)], i) for i, spec in enumerate(parsed.rules)]
    return rules, problems  # problems: duplicate or non-text keys, which pydantic cannot see


def load_policies(paths: Iterable[str | os.PathLike[str]]) -> list[Rule]:
    """Every rule of every file, in order; all problems of all files in one error.

    Rule ids are unique across files (a decision names its rule by id), and the
    built-in rule's id is reserved.
    """
    rules: list[Rule] = []
    problems: list[str] = []
    for path in paths:
        shown = str(path)
        try:
            raw = read_limited(path)
        except OSError as exc:
            problems.append(f"{shown}: cannot read the policy file: {exc.strerror or exc}")
            continue
        found, bad = _parse(raw, shown)
        problems += finish(bad)
        rules += found
    seen: dict[str, Rule] = {}
    for rule in rules:
        where = f"{rule.origin}: rules[{rule.index}].id"
        if rule.spec.id == REGION_MISMATCH:
            problems.append(f"{where}: {REGION_MISMATCH!r} is the built-in rule's id; choose "
                            "another")
        elif rule.spec.id in seen:
            problems.append(f"{where}: rule id {rule.spec.id!r} is already defined at "
                            f"{seen[rule.spec.id].origin}; rule ids must be unique")
        seen.setdefault(rule.spec.id, rule)
    if problems:
        raise PolicyFileError(problems)
    return rules


def find_policy_files(manifest: Manifest, explicit: list[str] | None = None) -> list[Path]:
    """The policy files that apply, from the first of these that names any:

    1. ``explicit`` (``--policies`` on the command line), 2. ``$DATAMOVE_POLICIES``
    (``os.pathsep``-separated), 3. the manifest's ``policies``, 4. ``*.yaml`` in a
    ``policies`` directory beside the manifest (absent or empty: no policy files).

    Sources replace each other rather than add up, so a command line can test a
    policy set in isolation. Each entry is a file, a directory (its ``*.yaml``)
    or a glob (sorted). An entry that finds no file is bad input: a policy you
    named and that silently does not apply is the failure this module exists to
    prevent.
    """
    env = [p for p in os.environ.get(POLICIES_ENV, "").split(os.pathsep) if p.strip()]
    if explicit or env:
        entries, where = (list(explicit), "--policies") if explicit else (env, f"${POLICIES_ENV}")
        base = "relative paths start at the current directory"
    elif manifest.policies:
        entries, where = list(manifest.policies), f"{manifest.path or 'manifest'}: policies"
        base = "relative paths start at the manifest's directory"
    else:
        if manifest.path is None:
            return []
        return sorted((Path(manifest.path).resolve().parent / "policies").glob("*.yaml"))
    found: dict[Path, Path] = {}
    for entry in entries:
        for path in _expand(entry, where, base):
            found.setdefault(path.resolve(), path)
    return list(found.values())


def _expand(entry: str, where: str, base: str) -> list[Path]:
    path = Path(os.path.expanduser(entry))
    if glob.has_magic(entry):
        hits = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
        hits = [p for p in hits if p.is_file()]
        if not hits:
            raise BadInput(f"{where}: {entry!r} matches no policy file; check the pattern")
        return hits
    if path.is_dir():
        hits = sorted(path.glob("*.yaml"))
        if not hits:
            raise BadInput(f"{where}: directory {entry} holds no *.yaml policy file")
        return hits
    if not path.is_file():
        raise BadInput(f"{where}: policy file {entry} does not exist; check the path "
                       f"({base})")
    return [path]


# --- evaluation ---------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """One requirement of one rule judged for one dataset."""

    rule_id: str
    severity: str  # "deny" | "warn"
    dataset: str
    field: str  # where in the manifest, e.g. "datasets[2].destination.region"
    reason: str
    outcome: str  # "violated" | "satisfied"
    description: str
    origin: str = BUILTIN  # the rule's file:line

    @property
    def violated(self) -> bool:
        return self.outcome == "violated"


def evaluate(manifest: Manifest, rules: list[Rule],
             regions: dict[tuple[str, str], RegionFacts] | None = None, *,
             datasets: list[str] | None = None) -> PolicyReport:
    """Judge every dataset (or the ``datasets`` named) against every rule.

    ``regions`` maps (dataset name, "source" | "destination") to what regions.py
    found; a location missing from it is judged by its declared region only.
    """
    decisions: list[Decision] = []
    for i, ds in enumerate(manifest.datasets):
        if datasets is not None and ds.name not in datasets:
            continue
        at = f"datasets[{i}]"
        facts = {side: (regions or {}).get((ds.name, side))
                 or RegionFacts.declared_only(getattr(ds, side).region) for side in _SIDES}
        for side in _SIDES:
            decisions += _mismatch(ds.name, f"{at}.{side}.region", side, facts[side])
        cold = {j: (regions or {}).get((ds.name, f"lifecycle[{j}]"))
                or RegionFacts.declared_only(rule.location.region)
                for j, rule in enumerate(ds.lifecycle) if rule.location is not None}
        for j, fact in cold.items():
            decisions += _mismatch(ds.name, f"{at}.lifecycle[{j}].location.region",
                                   "destination", fact)
        for rule in rules:
            if rule.spec.match.selects(ds):
                decisions += [
                    Decision(rule.spec.id, rule.spec.severity, ds.name, f"{at}.{where}", reason,
                             "satisfied" if ok else "violated", rule.spec.description,
                             rule.origin)
                    for where, ok, reason in (
                        *_checks(manifest, ds, rule.spec.require, facts["destination"]),
                        *_lifecycle_checks(ds, rule.spec.require, cold))]
    files = list(dict.fromkeys(rule.file for rule in rules))
    return PolicyReport(decisions, manifest.name, manifest.path, files, len(rules))


def _mismatch(dataset: str, where: str, side: str, facts: RegionFacts) -> list[Decision]:
    judged = facts.declaration_check(side)
    if judged is None:
        return []  # nothing to compare; a regions rule still judges what is known
    return [Decision(REGION_MISMATCH, "deny", dataset, where, judged[1],
                     "satisfied" if judged[0] else "violated",
                     "A declared region must be where the store says the location is.")]


Check = tuple[str, bool, str]  # (field below the dataset, satisfied?, reason)


def _lifecycle_checks(ds: DatasetSpec, req: RequireSpec,
                      cold: dict[int, RegionFacts]) -> Iterator[Check]:
    """Where lifecycle rules will put the data is judged like the destination."""
    for j, rule in enumerate(ds.lifecycle):
        if req.regions is not None and j in cold:
            yield (f"lifecycle[{j}].location.region", *cold[j].residency_check(req.regions))
        cold_class = rule.location.storage_class if rule.location is not None else None
        for where, tier in (("tier", rule.tier), ("location.storage_class", cold_class)):
            if req.storage_classes is not None and tier is not None:
                ok = matches_any(tier, req.storage_classes)
                yield f"lifecycle[{j}].{where}", ok, (
                    f"lifecycle moves objects to {tier}, which is {'' if ok else 'not '}"
                    f"allowed (allowed: {', '.join(req.storage_classes)})")


def _checks(manifest: Manifest, ds: DatasetSpec, req: RequireSpec,
            destination: RegionFacts) -> Iterator[Check]:
    if req.encryption:
        yield "encrypt", ds.encrypt is not None, (
            "encrypted (age v1)" if ds.encrypt is not None
            else "not encrypted; set encrypt: true with recipients")
    if req.min_recipients is not None:
        yield _recipients(manifest, ds, req.min_recipients)
    if req.regions is not None:
        yield ("destination.region", *destination.residency_check(req.regions))
    if req.storage_classes is not None:
        given = ds.destination.storage_class
        shown = given or f"{DEFAULT_STORAGE_CLASS} (the store default: no storage_class given)"
        ok = matches_any(given or DEFAULT_STORAGE_CLASS, req.storage_classes)
        yield "destination.storage_class", ok, (
            f"destination storage class {shown} is {'' if ok else 'not '}allowed "
            f"(allowed: {', '.join(req.storage_classes)})")
    for tag in req.tags or ():
        value = ds.tags.get(tag)
        if value is None:
            yield f"tags.{tag}", False, f"tag {tag} is missing; add tags: {{{tag}: ...}}"
        else:
            yield f"tags.{tag}", bool(value.strip()), (
                f"tag {tag} is {value!r}" if value.strip() else f"tag {tag} is empty; give it "
                                                                 "a value")
    if req.sse_kms:
        yield _sse_kms(ds)
    if req.verify is not None:
        ok = _VERIFY_ORDER[ds.verify] >= _VERIFY_ORDER[req.verify]
        yield "verify", ok, (
            f"verify is {ds.verify.value} (at least {req.verify.value} required)" if ok else
            f"verify is {ds.verify.value}; at least {req.verify.value} required "
            "(size < checksum < full)")


def _sse_kms(ds: DatasetSpec) -> Check:
    """SSE-KMS on an S3 destination. The key is not named in the reason: its ARN
    carries the account id, and the decision goes to the audit log."""
    destination = ds.destination
    if not backend_for(protocol_of(destination.url)).server_side_encryption:
        return "destination.sse", False, ("the destination is not on S3, so it has no "
                                          "SSE-KMS; use an s3:// destination with sse: aws:kms")
    if destination.sse != "aws:kms":
        return "destination.sse", False, (
            f"destination server-side encryption is {destination.sse or 'not set'}; set "
            "sse: aws:kms (and sse_kms_key_id) on the destination")
    key = "a named KMS key" if destination.sse_kms_key_id else "the bucket's default KMS key"
    return "destination.sse", True, f"destination objects are written with SSE-KMS ({key})"


def _recipients(manifest: Manifest, ds: DatasetSpec, least: int) -> Check:
    from datamove.age import InvalidKey
    from datamove.crypto.dataset import Encryption

    spec = manifest.encryption_of(ds)
    if spec is None:
        return "encrypt.recipients", False, (
            f"not encrypted, so no recipients; at least {least} required")
    try:
        count = len(Encryption.from_spec(spec).recipients)  # inline + file, each key once
    except (OSError, InvalidKey, UnicodeDecodeError) as exc:
        return "encrypt.recipients", False, (
            f"recipients cannot be read ({exc}); at least {least} required")
    if count >= least:
        return "encrypt.recipients", True, (
            f"encrypted for {count} recipients (at least {least} required)")
    return "encrypt.recipients", False, (
        f"encrypted for {count} recipient{'s' * (count != 1)}; at least {least} required "
        "(add a recovery key to the recipients)")


# --- the report ---------------------------------------------------------------------

@dataclass
class PolicyReport:
    """Every decision of one check, with what was checked against what."""

    decisions: list[Decision]
    manifest: str = ""
    manifest_path: str | None = None
    files: list[str] = field(default_factory=list)
    rules: int = 0

    @property
    def denied(self) -> list[Decision]:
        return [d for d in self.decisions if d.violated and d.severity == "deny"]

    @property
    def warned(self) -> list[Decision]:
        return [d for d in self.decisions if d.violated and d.severity == "warn"]

    @property
    def exit_code(self) -> int:
        return PolicyRefused.exit_code if self.denied else 0

    def to_dict(self) -> dict[str, Any]:
        return {"manifest": {"name": self.manifest, "path": self.manifest_path},
                "policies": self.files, "rules": self.rules,
                "denied": len(self.denied), "warned": len(self.warned),
                "exit_code": self.exit_code,
                "decisions": [asdict(d) for d in self.decisions]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render(self, out: TextIO) -> None:
        """Violations in full (rule, dataset, field, reason, where the rule is); what
        was satisfied one line per dataset."""
        where = f" ({self.manifest_path})" if self.manifest_path else ""
        out.write(f"policy check of manifest {self.manifest}{where}\n")
        out.write(f"policies: {', '.join(self.files) or 'none'} ({self.rules} rule"
                  f"{'s' * (self.rules != 1)}) + built-in {REGION_MISMATCH}\n")
        for d in self.denied + self.warned:
            out.write(f"\n{d.severity.upper():<4}  {d.rule_id}  dataset {d.dataset}  {d.field}\n"
                      f"      {d.reason}\n      rule: {d.description} ({d.origin})\n")
        satisfied: dict[str, list[str]] = {}
        for d in self.decisions:
            if not d.violated:
                short = d.field.split(".", 1)[1]
                satisfied.setdefault(d.dataset, []).append(f"{d.rule_id} ({short})")
        if satisfied:
            out.write(f"\nsatisfied ({sum(map(len, satisfied.values()))}):\n")
            for dataset, items in satisfied.items():
                out.write(f"  {dataset}: {', '.join(items)}\n")
        deny, warn = len(self.denied), len(self.warned)
        counts = f"{deny} denied, {warn} warning{'s' * (warn != 1)}"
        out.write(f"\nrefused: {counts}; nothing may move (exit 3)\n" if deny
                  else f"\nallowed: {counts} (exit 0)\n")

    def raise_if_denied(self) -> None:
        """For a run's preflight: PolicyRefused (exit 3) naming every denial."""
        if self.denied:
            raise PolicyRefused("\n".join(
                [f"refused by policy ({len(self.denied)} denied):",
                 *(f"  {d.rule_id}: dataset {d.dataset}: {d.field}: {d.reason} ({d.origin})"
                   for d in self.denied)]))


def check(manifest: Manifest, explicit_paths: list[str] | None = None, *,
          datasets: list[str] | None = None, discover: bool = True) -> PolicyReport:
    """Find and load the policy files, discover every location's region, evaluate.

    What ``datamove policy check`` and a run's preflight call; ``discover=False``
    judges declared regions only (no store is contacted).
    """
    rules = load_policies(find_policy_files(manifest, explicit_paths))
    regions = discover_manifest(manifest, datasets) if discover else None
    return evaluate(manifest, rules, regions, datasets=datasets)
