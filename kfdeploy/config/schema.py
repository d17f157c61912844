"""The JSON Schema of environment files, for editors (`kfdeploy schema`)."""

from __future__ import annotations

from typing import Any

from kfdeploy.config.model import Environment


def environment_schema() -> dict[str, Any]:
    schema = Environment.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kfdeploy environment"
    props = schema.setdefault("properties", {})
    # Loader-level keys (not model fields): a base file to extend; the name defaults to the file's.
    props["extends"] = {
        "type": "string",
        "description": "Base environment file to extend (name or relative path)",
    }
    schema["required"] = [r for r in schema.get("required", []) if r != "name"]
    return schema
