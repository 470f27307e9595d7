"""Write standalone Kubernetes JSON schemas for kubeconform from the kubernetes-validate package (no download).

kubernetes-validate ships the schemas of each Kubernetes release with references into one shared definitions file;
kubeconform wants one self-contained file per kind. Usage: python -m tests.ops.k8s_schemas OUT_DIR [VERSION]
"""

import json
import sys
from importlib import resources
from pathlib import Path

KUBERNETES_VERSION = "1.33.0"
SHARED = "/api/_definitions.json#/$defs/"


def _refs(node):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref.rpartition("/")[2]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def standalone(schema, definitions):
    """The schema with every definition it reaches embedded under $defs and its references made local."""
    text = json.dumps(schema).replace('"' + SHARED, '"#/$defs/')
    schema = json.loads(text)
    needed, todo = {}, list(_refs(schema))
    while todo:
        name = todo.pop()
        if name not in needed:
            needed[name] = definitions[name]
            todo.extend(_refs(definitions[name]))
    schema.pop("$id", None)
    schema["$defs"] = needed
    return schema


def write(out, version=KUBERNETES_VERSION):
    source = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    definitions = json.loads((source / "_definitions.json").read_text())["$defs"]
    target = Path(out) / f"v{version}-standalone-strict"
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    for entry in source.iterdir():
        if entry.name.endswith(".json") and not entry.name.startswith(("_", "all")):
            schema = standalone(json.loads(entry.read_text()), definitions)
            (target / entry.name).write_text(json.dumps(schema))
            count += 1
    return target, count


if __name__ == "__main__":
    where, written = write(*sys.argv[1:3])
    print(f"{written} schemas in {where}")
