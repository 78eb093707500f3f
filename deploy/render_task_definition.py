"""Turn a task definition, as `aws ecs describe-task-definition` prints it, into a new one.

    aws ecs describe-task-definition --task-definition concord --query taskDefinition \
        | python3 deploy/render_task_definition.py --image '<IMAGE1_NAME>' > taskdef.json

The output is what `aws ecs register-task-definition --cli-input-json` and CodeDeploy's
ECS action accept: the read-only fields AWS adds on registration are removed, and the image
of the named container (every container by default) is replaced. The pipeline uses it to
give the migration task the new image and to write CodeDeploy's taskdef.json template.
Python's standard library only: it runs in CodeBuild before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# Fields that describe-task-definition reports and register-task-definition refuses.
READ_ONLY = (
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
)


def render(description: dict[str, Any], image: str, container: str | None = None) -> dict[str, Any]:
    """The registrable task definition with `image` in `container` (or every container)."""
    definition = description.get("taskDefinition", description)
    rendered = {key: value for key, value in definition.items() if key not in READ_ONLY}
    containers = rendered.get("containerDefinitions") or []
    names = [c.get("name") for c in containers]
    if container is not None and container not in names:
        raise SystemExit(f"render_task_definition: no container {container!r} in {names}")
    if not containers:
        raise SystemExit("render_task_definition: the task definition has no containers")
    for definition_of_container in containers:
        if container is None or definition_of_container.get("name") == container:
            definition_of_container["image"] = image
    return rendered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", required=True, help="the image (or <IMAGE1_NAME>)")
    parser.add_argument("--container", help="only this container (default: every one)")
    args = parser.parse_args(argv)
    try:
        description = json.load(sys.stdin)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"render_task_definition: stdin is not JSON: {exc}") from exc
    json.dump(render(description, args.image, args.container), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
