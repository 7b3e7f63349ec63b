"""No security-group rule may open a Ray or MLflow port to the whole internet (0.0.0.0/0 or ::/0).

checkov knows SSH and RDP, not Ray's ports: this check reads the Terraform files themselves (``python-hcl2``) and
looks at every ingress rule, in the three shapes the AWS provider has: ``ingress`` blocks of
``aws_security_group``, ``aws_security_group_rule`` of type ``ingress`` and ``aws_vpc_security_group_ingress_rule``.

A rule is a finding when one of its sources is a CIDR of prefix length 0 and its ports (all of them for protocol
``-1``, or when they are an expression) meet a forbidden range. A source that is an expression (``var.x``,
``each.value``) cannot be read here, so the variables feeding rules (named by an ingress rule or a ``locals``
block) are checked instead: their defaults and every ``*.tfvars`` value. Ports: Ray's fixed ones
(``infra/scripts/ray-node.sh``) and MLflow's.

Usage: ``python infra/checks/security_groups.py [PATH ...]`` (default ``infra/terraform``). Exit status 0 when
clean, 1 with the findings on stdout, 2 when a path is missing or a file does not parse.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2

#: Ports never to be reachable from the internet: (first, last, what).
FORBIDDEN_PORTS: tuple[tuple[int, int, str], ...] = (
    (6379, 6379, "Ray GCS"),
    (8265, 8265, "Ray dashboard / Jobs API"),
    (10001, 10001, "Ray Client"),
    (52365, 52370, "Ray node agents and managers"),
    (10002, 19999, "Ray worker ports"),
    (5000, 5000, "MLflow"),
)
ALL_PORTS = (0, 65535)
_VAR_REF = re.compile(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)")
_CIDR_KEYS = ("cidr_blocks", "ipv6_cidr_blocks", "cidr_ipv4", "cidr_ipv6")


@dataclass(frozen=True)
class Finding:
    """One rule (or variable value) opening a forbidden port to the internet."""

    file: Path
    """The Terraform file holding it."""
    where: str
    """Its address: ``resource.name`` (``/ingress[i]`` for an inline block) or ``var.name``."""
    cidr: str
    """The world-wide CIDR it allows."""
    ports: str
    """The forbidden ports it opens, e.g. ``6379 (Ray GCS)``."""

    def __str__(self) -> str:
        return f"{self.file}: {self.where} opens {self.ports} to {self.cidr}"


class CheckInputError(Exception):
    """A path that is missing or a file that does not parse."""


# --------------------------------------------------------------------------------------------------- values


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted (``'"tcp"'``) and writes expressions as ``'${...}'``: a literal
    string comes back bare; an expression stays ``${...}``; other values as they are."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a (nested) value, unquoted."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield _unquote(value)


def is_world(cidr: str) -> bool:
    """A CIDR covering every address of its family (prefix length 0: ``0.0.0.0/0``, ``::/0``)."""
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False).prefixlen == 0
    except ValueError:
        return False


def _port_range(rule: dict[str, Any], protocol_key: str) -> tuple[int, int]:
    """The rule's ports; all of them for protocol -1/all or when a bound is not a literal number."""
    protocol = str(_unquote(rule.get(protocol_key, "-1"))).lower()
    if protocol in ("-1", "all"):
        return ALL_PORTS
    low, high = rule.get("from_port"), rule.get("to_port", rule.get("from_port"))
    try:
        return int(_unquote(low)), int(_unquote(high))
    except (TypeError, ValueError):
        return ALL_PORTS


def forbidden_overlap(low: int, high: int) -> list[str]:
    """The forbidden ranges the port range ``low..high`` meets, described."""
    hits = []
    for first, last, what in FORBIDDEN_PORTS:
        if low <= last and first <= high:
            span = str(first) if first == last else f"{first}-{last}"
            hits.append(f"{span} ({what})")
    return hits


# --------------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class _Rule:
    """One ingress rule as written: where it is, its source values and its port range."""

    where: str
    sources: list[Any]
    ports: tuple[int, int]
    body: dict[str, Any]


def _ingress_rules(resources: Iterable[dict[str, Any]]) -> Iterator[_Rule]:
    """Every ingress rule of a file's ``resource`` blocks, whatever shape it has."""
    for block in resources:
        for rtype, named in block.items():
            rtype = _unquote(rtype)
            for name, body in named.items():
                address = f"{rtype}.{_unquote(name)}"
                if rtype == "aws_security_group":
                    for i, inline in enumerate(body.get("ingress") or []):
                        if isinstance(inline, dict):
                            yield _Rule(
                                f"{address}/ingress[{i}]",
                                _sources(inline),
                                _port_range(inline, "protocol"),
                                inline,
                            )
                elif rtype == "aws_security_group_rule" and _unquote(body.get("type")) == "ingress":
                    yield _Rule(address, _sources(body), _port_range(body, "protocol"), body)
                elif rtype == "aws_vpc_security_group_ingress_rule":
                    yield _Rule(address, _sources(body), _port_range(body, "ip_protocol"), body)


def _sources(rule: dict[str, Any]) -> list[Any]:
    sources: list[Any] = []
    for key in _CIDR_KEYS:
        value = rule.get(key)
        if isinstance(value, list):
            sources.extend(value)
        elif value is not None:
            sources.append(value)
    return sources


def _rule_findings(path: Path, rule: _Rule) -> Iterator[Finding]:
    hits = forbidden_overlap(*rule.ports)
    if not hits:
        return
    for source in rule.sources:
        if not _is_expression(source) and is_world(str(_unquote(source))):
            yield Finding(path, rule.where, str(_unquote(source)), ", ".join(hits))


# --------------------------------------------------------------------------------------------------- files


def _load(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as handle:
            return hcl2.load(handle)
    except Exception as exc:  # python-hcl2 raises lark's errors, of several kinds
        raise CheckInputError(f"{path}: does not parse as HCL ({type(exc).__name__}: {exc})") from exc


def _files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise CheckInputError(f"{path}: no such file or directory")
        if path.is_dir():
            found = [p for p in sorted(path.rglob("*")) if p.suffix in (".tf", ".tfvars")]
            files.extend(p for p in found if ".terraform" not in p.parts)
        else:
            files.append(path)
    return files


def _variable_findings(parsed: dict[Path, dict[str, Any]], fed: set[str]) -> Iterator[Finding]:
    """World CIDRs in the defaults and tfvars values of the variables that feed ingress rules."""
    for path, doc in parsed.items():
        values: dict[str, Any] = {}
        if path.suffix == ".tfvars":
            values = {name: value for name, value in doc.items() if name in fed}
        for block in doc.get("variable", []):
            for name, body in block.items():
                name = _unquote(name)
                if name in fed and "default" in body:
                    values[name] = body["default"]
        for name, value in values.items():
            for text in _strings(value):
                if is_world(text):
                    yield Finding(path, f"var.{name}", text, "the ports of the ingress rules it feeds")


def check(paths: Iterable[Path]) -> list[Finding]:
    """Every finding in the Terraform files under ``paths`` (files or directories)."""
    parsed = {path: _load(path) for path in _files(paths)}
    findings: list[Finding] = []
    fed: set[str] = set()
    for path, doc in parsed.items():
        for rule in _ingress_rules(doc.get("resource", [])):
            findings.extend(_rule_findings(path, rule))
            fed.update(_VAR_REF.findall(json.dumps(rule.body)))
        fed.update(_VAR_REF.findall(json.dumps(doc.get("locals", []))))
    findings.extend(_variable_findings(parsed, fed))
    return findings


def main(argv: list[str] | None = None) -> int:
    """The command line: findings on stdout, exit 1 if any (2 for bad input)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("infra/terraform")])
    args = parser.parse_args(argv)
    try:
        findings = check(args.paths)
    except CheckInputError as exc:
        print(f"security_groups.py: {exc}", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding)
    if findings:
        print(f"{len(findings)} rule(s) open a Ray or MLflow port to the internet", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
