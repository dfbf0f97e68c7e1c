"""Builds the whole platform: one cell of stacks per region, the links between the cells, the compliance gate.

The one place that knows the order of stacks; app.py (the CDK entry) and the infra tests both call `build`,
so what the tests assert is what `cdk synth` writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk

from stacks import compliance
from stacks.compliance import ComplianceGate, Finding, read_findings
from stacks.links import LinksStack
from stacks.models import ModelsStack
from stacks.network import NetworkStack
from stacks.platform import Platform
from stacks.router import RouterStack

# Feature flags: aws-cdk-lib 2.275's recommended set for new projects (cx-api/FEATURE_FLAGS.md), with three choices
# of ours: producer-protecting ("strong") cross-stack references, the partitions we serve (commercial and GovCloud),
# and no extra metadata collection. Loaded here, not from cdk.json, so the CLI and the in-process tests synthesize
# the same templates.
FEATURE_FLAGS: dict[str, object] = json.loads((Path(__file__).with_name("feature_flags.json")).read_text("utf-8"))


@dataclass(frozen=True, slots=True)
class Assembly:
    platform: Platform
    app: cdk.App
    gate: ComplianceGate
    networks: Mapping[str, NetworkStack]
    links: Mapping[str, LinksStack]
    models: Mapping[str, ModelsStack]
    routers: Mapping[str, RouterStack]

    @property
    def stacks(self) -> list[cdk.Stack]:
        return [*self.networks.values(), *self.links.values(), *self.models.values(), *self.routers.values()]


@dataclass(frozen=True, slots=True)
class SynthResult:
    outdir: Path
    stack_names: tuple[str, ...]
    resources: int
    findings: tuple[Finding, ...]
    acknowledgements: int

    @property
    def passed(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def summary(self) -> str:
        errors = sum(f.severity == "error" for f in self.findings)
        warnings = len(self.findings) - errors
        lines = [
            f"synthesized {len(self.stack_names)} stacks, {self.resources} resources into {self.outdir}/",
            *(f"  {name}" for name in self.stack_names),
            f"compliance gate (cdk-nag AwsSolutions + NIST 800-53 rev 5): {errors} open errors, "
            f"{warnings} warnings, {self.acknowledgements} acknowledgements "
            f"({compliance.LEDGER_FILE}); {'PASSED' if self.passed else 'FAILED'}",
        ]
        for finding in self.findings:
            if finding.severity == "error":
                lines.append(f"  open: {finding.rule} on {finding.path}")
        return "\n".join(lines)


def new_app(outdir: str | Path, *, cloudformation_validation: bool = True) -> cdk.App:
    """The app every synthesis uses: our feature flags, no analytics, and no construct stack traces (they record
    temporary jsii paths, so two runs would differ)."""
    return cdk.App(
        outdir=str(outdir),
        context=FEATURE_FLAGS,
        analytics_reporting=False,
        stack_traces=False,
        builtin_cloud_formation_validation=cloudformation_validation,
    )


def build(
    platform: Platform,
    *,
    outdir: str | Path = "cdk.out",
    app: cdk.App | None = None,
    cloudformation_validation: bool = True,
) -> Assembly:
    """Create every stack of the platform on `app` (a new one writing to `outdir` if none is given)."""
    if app is None:
        app = new_app(outdir, cloudformation_validation=cloudformation_validation)
    gate = ComplianceGate(app)
    networks: dict[str, NetworkStack] = {}
    for region in platform.region_names:
        networks[region] = NetworkStack(app, f"{platform.name}-network-{region}", platform=platform, region=region)
    links: dict[str, LinksStack] = {}
    for region in platform.region_names:
        links[region] = LinksStack(
            app, f"{platform.name}-links-{region}", platform=platform, region=region, networks=networks
        )
    models: dict[str, ModelsStack] = {}
    for region in platform.region_names:
        models[region] = ModelsStack(
            app, f"{platform.name}-models-{region}", platform=platform, region=region, network=networks[region]
        )
    routers = _routers(app, platform, networks, models)
    for network in networks.values():
        compliance.network(gate, network)
    for link in links.values():
        compliance.links(gate, link)
    for model_stack in models.values():
        compliance.models(gate, model_stack)
    for router in routers.values():
        compliance.router(gate, router)
    return Assembly(platform, app, gate, networks, links, models, routers)


def _routers(
    app: cdk.App, platform: Platform, networks: Mapping[str, NetworkStack], models: Mapping[str, ModelsStack]
) -> dict[str, RouterStack]:
    routers: dict[str, RouterStack] = {}
    for region in platform.region_names:
        routers[region] = RouterStack(
            app,
            f"{platform.name}-router-{region}",
            platform=platform,
            region=region,
            network=networks[region],
            models=models[region],
        )
    # Other cells' models hold deploy-time ARNs a router may fail over to (its FailoverInvoke policies name them).
    for region, router in routers.items():
        for other in platform.region_names:
            if other != region:
                router.add_stack_dependency(models[other], "fails over onto their deploy-time ARNs")
    return routers


def synthesize(assembly: Assembly) -> SynthResult:
    """Synthesize; a compliance failure is reported in the result, never raised as a jsii traceback."""
    try:
        cloud = assembly.app.synth()
        outdir = Path(cloud.directory)
    except RuntimeError as error:
        if "ValidationFailed" not in str(error):
            raise
        outdir = Path(assembly.app.outdir)
    assembly.gate.write_ledger(outdir)
    names, resources = [], 0
    for stack in assembly.stacks:
        template = json.loads((outdir / stack.template_file).read_text(encoding="utf-8"))
        names.append(stack.stack_name)
        resources += len(template.get("Resources", {}))
    return SynthResult(
        outdir=outdir,
        stack_names=tuple(names),
        resources=resources,
        findings=tuple(read_findings(outdir)),
        acknowledgements=len(assembly.gate.acknowledgements),
    )
