"""Model references: how a prompts file, `--model` or the Python API names what to run.

    owner/name                 the model's latest version (created by model)
    owner/name:VERSION         one pinned version (created through POST /v1/predictions)
    deployments/owner/name     a deployment (created through POST /v1/deployments/{owner}/{name}/predictions)

A reference is also how a model is named in the registry, in task arguments and in results, so
`str(ref)` gives back exactly the text above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEPLOYMENT_PREFIX = "deployments/"
_PART = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_MODEL = re.compile(rf"^({_PART})/({_PART})$")
_VERSION = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelRef:
    owner: str
    name: str
    version: str | None = None  # a pinned version id (64 hex digits)
    deployment: bool = False

    @property
    def model(self) -> str:
        """owner/name: the model's name, or the deployment's."""
        return f"{self.owner}/{self.name}"

    @property
    def kind(self) -> str:
        """How a prediction is created: "model", "version" or "deployment"."""
        if self.deployment:
            return "deployment"
        return "version" if self.version else "model"

    def __str__(self) -> str:
        if self.deployment:
            return f"{DEPLOYMENT_PREFIX}{self.model}"
        return f"{self.model}:{self.version}" if self.version else self.model


def parse_ref(text: object) -> ModelRef:
    """The reference `text` names; ValueError (with what a reference looks like) otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"a model is named by a string like 'owner/name', not {type(text).__name__}")
    value = text.strip()
    if value.startswith(DEPLOYMENT_PREFIX):
        match = _MODEL.match(value[len(DEPLOYMENT_PREFIX) :])
        if match is None:
            raise ValueError(f"{text!r} is not a deployment: write deployments/owner/name")
        return ModelRef(match.group(1), match.group(2), deployment=True)
    model, colon, version = value.partition(":")
    match = _MODEL.match(model)
    if match is None:
        raise ValueError(
            f"{text!r} is not a model reference: write owner/name, owner/name:VERSION "
            "or deployments/owner/name"
        )
    if colon and not _VERSION.match(version):
        raise ValueError(f"{text!r}: a version id is 64 lowercase hexadecimal characters, not {version!r}")
    return ModelRef(match.group(1), match.group(2), version=version or None)


def is_reference(text: object) -> bool:
    try:
        parse_ref(text)
    except ValueError:
        return False
    return True
