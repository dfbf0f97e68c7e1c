"""Reading a CDK cloud assembly: every stack template, its region, its construct paths, the compliance results.

Generic over resource types: nothing here knows which stacks exist. A template is found by walking every
`*.template.json` (nested stage assemblies included, asset folders excluded); the manifest, when present, gives its
environment, and the stack name's region suffix is the fallback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REGION = re.compile(r"([a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d)$")


@dataclass(frozen=True)
class Resource:
    stack: str
    region: str
    logical_id: str
    type: str
    properties: Mapping[str, Any]
    raw: Mapping[str, Any]
    path: str = ""  # construct path, when the assembly's tree.json gives it

    @property
    def key(self) -> tuple[str, str]:
        return (self.stack, self.logical_id)

    @property
    def label(self) -> str:
        """The shortest readable name: the construct path below the stack, or the logical id."""
        if self.path:
            parts = self.path.split("/")[1:]
            for tail in ("Resource", "Default"):
                if len(parts) > 1 and parts[-1] == tail:
                    parts = parts[:-1]
            return "/".join(parts)
        return self.logical_id


@dataclass
class Stack:
    name: str
    region: str
    account: str
    template_file: str
    template: Mapping[str, Any]
    dependencies: list[str] = field(default_factory=list)
    resources: dict[str, Resource] = field(default_factory=dict)

    def of_type(self, *types: str) -> list[Resource]:
        return [r for r in self.resources.values() if r.type in types]


@dataclass(frozen=True)
class Acknowledgement:
    path: str
    rule: str
    reason: str


@dataclass(frozen=True)
class Finding:
    plugin: str
    rule: str
    severity: str
    description: str
    path: str
    stack: str
    logical_id: str


@dataclass
class CloudAssembly:
    outdir: Path
    stacks: list[Stack]
    acknowledgements: list[Acknowledgement]
    findings: list[Finding]
    report_found: bool
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def resources(self, *types: str) -> Iterator[Resource]:
        for stack in self.stacks:
            for resource in stack.resources.values():
                if not types or resource.type in types:
                    yield resource

    def stack(self, name: str) -> Stack:
        return next(s for s in self.stacks if s.name == name)

    def find(self, stack: str, logical_id: str) -> Resource | None:
        for s in self.stacks:
            if s.name == stack:
                return s.resources.get(logical_id)
        return None

    def exports(self) -> dict[str, Resource]:
        """Export name -> the resource its value refers to (Ref/GetAtt), across every stack."""
        if "exports" in self._cache:
            return self._cache["exports"]  # type: ignore[no-any-return]
        found: dict[str, Resource] = self._cache.setdefault("exports", {})
        for stack in self.stacks:
            for output in (stack.template.get("Outputs") or {}).values():
                name = (output.get("Export") or {}).get("Name")
                refs = sorted(references(output.get("Value")))
                if isinstance(name, str) and refs and refs[0] in stack.resources:
                    found[name] = stack.resources[refs[0]]
        return found

    def resolve(self, stack: str, value: Any) -> Resource | None:
        """The resource a value points at: a Ref/GetAtt in its own stack, or an import of another stack's export."""
        if isinstance(value, dict) and isinstance(value.get("Fn::ImportValue"), str):
            return self.exports().get(value["Fn::ImportValue"])
        for ref in sorted(references(value)):
            found = self.find(stack, ref)
            if found is not None:
                return found
        return None

    @property
    def regions(self) -> list[str]:
        return sorted({s.region for s in self.stacks})


def _manifest_stacks(outdir: Path) -> dict[str, dict[str, Any]]:
    """Template file name -> {name, region, account, dependencies} from every manifest.json under outdir."""
    found: dict[str, dict[str, Any]] = {}
    for manifest_path in sorted(outdir.rglob("manifest.json")):
        if any(part.startswith("asset.") for part in manifest_path.relative_to(outdir).parts):
            continue
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        for artifact_id, artifact in manifest.get("artifacts", {}).items():
            if artifact.get("type") != "aws:cloudformation:stack":
                continue
            props = artifact.get("properties", {})
            env = artifact.get("environment", "aws://unknown-account/unknown-region")
            account, _, region = env.removeprefix("aws://").partition("/")
            template = manifest_path.parent / props.get("templateFile", f"{artifact_id}.template.json")
            found[str(template.resolve())] = {
                "name": props.get("stackName", artifact_id),
                "region": region,
                "account": account,
                "dependencies": [d for d in artifact.get("dependencies", []) if not d.endswith(".assets")],
            }
    return found


def _tree_paths(outdir: Path) -> dict[tuple[str, str], str]:
    """(stack name, logical id) -> construct path, from tree.json (absent in older assemblies: then no paths)."""
    paths: dict[tuple[str, str], str] = {}
    tree_file = outdir / "tree.json"
    if not tree_file.exists():
        return paths

    def walk(node: Mapping[str, Any], stack: str | None) -> None:
        attributes = node.get("attributes") or {}
        if "aws:cdk:cloudformation:type" in attributes and stack:
            logical = node.get("attributes", {}).get("aws:cdk:cloudformation:logicalId")
            if logical:
                paths[(stack, logical)] = node["path"]
        for child in (node.get("children") or {}).values():
            child_stack = stack
            if stack is None and child.get("constructInfo", {}).get("fqn") == "aws-cdk-lib.Stack":
                child_stack = child.get("id")
            walk(child, child_stack)

    tree = json.loads(tree_file.read_text(encoding="utf-8"))
    walk(tree.get("tree", tree), None)
    return paths


def _logical_ids_from_metadata(stack: Stack) -> dict[str, str]:
    """Construct path -> logical id from the template's own aws:cdk:path metadata, when the app writes it."""
    return {
        r.raw.get("Metadata", {}).get("aws:cdk:path", ""): r.logical_id
        for r in stack.resources.values()
        if r.raw.get("Metadata", {}).get("aws:cdk:path")
    }


def load(outdir: str | Path) -> CloudAssembly:
    outdir = Path(outdir)
    if not outdir.is_dir():
        raise FileNotFoundError(f"{outdir} is not a cloud assembly directory: run `make synth` first")
    manifest = _manifest_stacks(outdir)
    stacks: list[Stack] = []
    for template_path in sorted(outdir.rglob("*.template.json")):
        if any(part.startswith("asset.") for part in template_path.relative_to(outdir).parts):
            continue
        info = manifest.get(str(template_path.resolve()))
        name = info["name"] if info else template_path.name.removesuffix(".template.json")
        region = info["region"] if info else ""
        if not region or region.startswith("unknown"):
            match = _REGION.search(name)
            region = match.group(1) if match else "unknown-region"
        template = json.loads(template_path.read_text(encoding="utf-8"))
        stacks.append(
            Stack(
                name=name,
                region=region,
                account=info["account"] if info else "",
                template_file=str(template_path.relative_to(outdir)),
                template=template,
                dependencies=list(info["dependencies"]) if info else [],
            )
        )
    if not stacks:
        raise FileNotFoundError(f"no *.template.json in {outdir}: run `make synth` first")
    paths = _tree_paths(outdir)
    for stack in stacks:
        for logical_id, raw in (stack.template.get("Resources") or {}).items():
            stack.resources[logical_id] = Resource(
                stack=stack.name,
                region=stack.region,
                logical_id=logical_id,
                type=raw.get("Type", "?"),
                properties=raw.get("Properties") or {},
                raw=raw,
                path=paths.get((stack.name, logical_id)) or raw.get("Metadata", {}).get("aws:cdk:path", ""),
            )
    stacks.sort(key=lambda s: (s.region, _stack_order(s), s.name))
    return CloudAssembly(
        outdir=outdir,
        stacks=stacks,
        acknowledgements=_acknowledgements(outdir),
        findings=_findings(outdir, stacks),
        report_found=(outdir / "validation-report.json").exists(),
    )


_ORDER = ("network", "links", "models", "router")


def _stack_order(stack: Stack) -> int:
    for index, word in enumerate(_ORDER):
        if f"-{word}-" in stack.name or stack.name.endswith(f"-{word}"):
            return index
    return len(_ORDER)


def _acknowledgements(outdir: Path) -> list[Acknowledgement]:
    path = outdir / "compliance-acknowledgements.json"
    if not path.exists():
        return []
    return [Acknowledgement(a["path"], a["rule"], a["reason"]) for a in json.loads(path.read_text(encoding="utf-8"))]


def _findings(outdir: Path, stacks: list[Stack]) -> list[Finding]:
    path = outdir / "validation-report.json"
    if not path.exists():
        return []
    report = json.loads(path.read_text(encoding="utf-8"))
    by_file = {Path(s.template_file).name: s.name for s in stacks}
    findings = []
    for plugin in report.get("pluginReports", []):
        for violation in plugin.get("violations", []):
            for construct in violation.get("violatingConstructs", []):
                cfn = construct.get("cloudFormationResource") or {}
                findings.append(
                    Finding(
                        plugin=plugin.get("pluginName", "?"),
                        rule=violation.get("ruleName", "?"),
                        severity=violation.get("severity", "error"),
                        description=" ".join(str(violation.get("description", "")).split())[:400],
                        path=construct.get("constructPath", ""),
                        stack=by_file.get(Path(cfn.get("templatePath", "")).name, ""),
                        logical_id=cfn.get("logicalId", ""),
                    )
                )
    return findings


# --- intrinsic functions, for display -----------------------------------------------------------------------------


def render(value: Any, names: Mapping[str, str] | None = None) -> str:  # noqa: PLR0911, PLR0912
    """A CloudFormation value as a reviewer reads it: `Ref`/`GetAtt` become the referenced resource's name."""
    names = names or {}
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return ", ".join(render(v, names) for v in value)
    if isinstance(value, dict) and len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Ref":
            if isinstance(arg, str) and arg.startswith("AWS::"):
                return {"AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}.get(arg, "${" + arg + "}")
            return f"{names.get(arg, arg)}"
        if fn == "Fn::GetAtt":
            parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
            attribute = render(parts[1], names) if len(parts) > 1 else ""
            return f"{names.get(parts[0], parts[0])}.{attribute}"
        if fn == "Fn::Join":
            separator, parts = arg
            if isinstance(parts, list):
                return str(separator).join(render(p, names) for p in parts)
            return render(parts, names)
        if fn == "Fn::Sub":
            text = arg[0] if isinstance(arg, list) else arg
            return str(text).replace("${AWS::Partition}", "aws").replace("${AWS::URLSuffix}", "amazonaws.com")
        if fn == "Fn::ImportValue":
            return f"import({render(arg, names)})"
        if fn == "Fn::Select":
            index, items = arg
            if isinstance(items, list) and isinstance(index, int) and index < len(items):
                return render(items[index], names)
            return f"select({index}, {render(items, names)})"
        if fn == "Fn::GetAZs":
            return "availability zones"
        if fn == "Fn::If":
            return f"if {arg[0]}: {render(arg[1], names)} else {render(arg[2], names)}"
        return f"{fn}({render(arg, names)})"
    if isinstance(value, dict):
        return ", ".join(f"{k}={render(v, names)}" for k, v in value.items())
    return "" if value is None else str(value)


def references(value: Any) -> set[str]:
    """Logical ids a value refers to through Ref, Fn::GetAtt or ${Sub} (pseudo parameters excluded)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for fn, arg in value.items():
            if fn == "Ref" and isinstance(arg, str) and not arg.startswith("AWS::"):
                found.add(arg)
            elif fn == "Fn::GetAtt":
                target = arg[0] if isinstance(arg, list) else str(arg).split(".", 1)[0]
                found.add(target)
            elif fn == "Fn::Sub":
                text = arg[0] if isinstance(arg, list) else arg
                found.update(
                    m.split(".", 1)[0] for m in re.findall(r"\$\{([^}!]+)\}", str(text)) if not m.startswith("AWS::")
                )
                if isinstance(arg, list) and len(arg) > 1:
                    found.update(references(arg[1]))
            else:
                found.update(references(arg))
    elif isinstance(value, list):
        for item in value:
            found.update(references(item))
    return found


def import_names(value: Any) -> list[str]:
    """Export names a value imports (Fn::ImportValue of a literal name), anywhere inside it."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, child in value.items():
            if key == "Fn::ImportValue" and isinstance(child, str):
                found.append(child)
            else:
                found.extend(import_names(child))
    elif isinstance(value, list):
        for child in value:
            found.extend(import_names(child))
    return found


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
