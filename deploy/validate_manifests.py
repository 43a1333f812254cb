"""Validate rendered manifests offline: core kinds against the Kubernetes OpenAPI
schemas (kubernetes-validate, strict), custom resources against deploy/schemas/.

Run by deploy/validate.sh with the tools virtualenv (.cache/tools-venv), not the
app's: kubernetes-validate and its schema bundle are deliberately kept apart from
the application's pinned dependencies.

    python deploy/validate_manifests.py --kubernetes 1.32.0 --kubernetes 1.37.0 FILE...

Exit status 1 on any invalid resource, or on a kind with no schema at all (an
unknown kind is a mistake until someone writes down how to check it).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

# Custom resources: (apiVersion, kind) -> partial schema file. Their CRDs are not
# available offline (see deploy/schemas/README.md), so these hand-kept schemas
# stand in for them.
CUSTOM_RESOURCES = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.yaml",
    ("kafka.strimzi.io/v1beta2", "KafkaUser"): "kafkauser.yaml",
}


def custom_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """A JSON Schema validator for one custom resource kind."""
    document = yaml.safe_load((SCHEMA_DIR / CUSTOM_RESOURCES[(api_version, kind)]).read_text())
    schema = {**document[kind], "$defs": document.get("$defs", {})}
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def first_error_line(error: Exception) -> str:
    """The useful first line of a jsonschema error, with the path where it failed."""
    path = "/".join(str(p) for p in getattr(error, "absolute_path", []) or [])
    message = str(getattr(error, "message", "") or error).splitlines()[0]
    return f"{path or '(root)'}: {message}"


def validate_file(path: Path, versions: list[str]) -> tuple[int, list[str], Counter[str]]:
    """Validate every document of one rendered file.

    Returns:
        (resources checked, error lines, how many of each kind).
    """
    errors: list[str] = []
    kinds: Counter[str] = Counter()
    count = 0
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        count += 1
        api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        name = f"{path.stem}: {kind}/{doc.get('metadata', {}).get('name', '?')}"
        kinds[kind] += 1
        if (api_version, kind) in CUSTOM_RESOURCES:
            for error in custom_validator(api_version, kind).iter_errors(doc):
                errors.append(f"{name} (partial CRD schema): {first_error_line(error)}")
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{name}: no schema for {api_version} {kind} in Kubernetes {version}")
            except kubernetes_validate.ValidationError as error:
                errors.append(f"{name} (Kubernetes {version}): {first_error_line(error)}")
    return count, errors, kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument(
        "--kubernetes",
        action="append",
        required=True,
        help="Kubernetes version to validate against (repeat for several).",
    )
    args = parser.parse_args(argv)
    failed = False
    for path in args.files:
        count, errors, kinds = validate_file(path, args.kubernetes)
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        status = "FAIL" if errors else "ok"
        print(f"  {status:4} {path.stem}: {count} resources ({summary})")
        for line in errors:
            print(f"       {line}")
        failed = failed or bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
