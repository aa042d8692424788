"""Search over the registry's loaded versions, by what their manifests say.

A query matches a version when every word of ``text`` appears (case-insensitive) in one of its
fields: name, description, tags, framework, signature tensor names and shapes, data file names
and hashes, code commit, parent digest; and when every filter holds: ``framework`` (equal),
``input`` (an input tensor of that name) and ``data_sha256`` (a training data file whose sha256
starts with it). A key sees only the models it may use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, Field

from core.errors import InvalidInput
from gateway.registry.records import VersionRecord
from modelpkg import Manifest

MAX_QUERY = 200


class SearchQuery(BaseModel):
    text: str = Field(default="", max_length=MAX_QUERY)
    framework: str | None = Field(default=None, max_length=32)
    input: str | None = Field(default=None, max_length=256)
    data_sha256: str | None = Field(default=None, max_length=64)

    @property
    def empty(self) -> bool:
        return not (self.text.strip() or self.framework or self.input or self.data_sha256)

    def check(self) -> None:
        if self.data_sha256 is not None and (
            len(self.data_sha256) < 6 or any(c not in "0123456789abcdef" for c in self.data_sha256.lower())
        ):
            raise InvalidInput("data_sha256 must be at least 6 hex digits of a training data file's sha256")


class VersionMatch(BaseModel):
    """A version that matched, what it does, and where the query found it."""

    version: str
    role: str | None
    """live, stable, candidate, shadow or staged."""
    summary: str
    """One line: description · framework · inputs · tags."""
    matched: list[str]
    """The fields the words were found in."""


@dataclass(frozen=True)
class Fields:
    """A manifest's searchable text, field by field, lower-cased."""

    values: dict[str, list[str]]

    @classmethod
    def of(cls, record: VersionRecord) -> Fields:
        m = record.manifest
        tensors = [*m.signature.inputs, *m.signature.outputs]
        values = {
            "name": [record.model],
            "description": [m.description],
            "tags": list(m.tags),
            "framework": [m.framework.name, m.framework.converter],
            "signature": [t.name for t in tensors] + [str(t.shape) for t in tensors],
            "data": [d.path for d in m.provenance.data] + [d.sha256 for d in m.provenance.data],
            "code commit": [m.provenance.code_commit or ""],
            "parent": [m.provenance.parent_digest or ""],
        }
        return cls({field: [value.lower() for value in texts if value] for field, texts in values.items()})

    def where(self, word: str) -> list[str]:
        return [field for field, texts in self.values.items() if any(word in text for text in texts)]


def matches(query: SearchQuery, record: VersionRecord) -> list[str] | None:
    """The fields that matched, or None when the version does not match."""
    manifest = record.manifest
    if query.framework and manifest.framework.name != query.framework.lower():
        return None
    if query.input and query.input not in [t.name for t in manifest.signature.inputs]:
        return None
    if query.data_sha256 and not any(
        d.sha256.startswith(query.data_sha256.lower()) for d in manifest.provenance.data
    ):
        return None
    fields = Fields.of(record)
    found: list[str] = []
    for word in query.text.lower().split():
        where = fields.where(word)
        if not where:
            return None
        found += [field for field in where if field not in found]
    for name, given in (
        ("framework", query.framework),
        ("signature", query.input),
        ("data", query.data_sha256),
    ):
        if given and name not in found:
            found.append(name)
    return found


def summary(manifest: Manifest) -> str:
    inputs = ", ".join(f"{t.name}{t.shape}" for t in manifest.signature.inputs)
    parts = [
        manifest.description.splitlines()[0] if manifest.description else "",
        manifest.framework.name,
        inputs,
    ]
    if manifest.tags:
        parts.append("tags " + ",".join(manifest.tags))
    return " · ".join(part for part in parts if part)


def search(
    query: SearchQuery, records: list[VersionRecord], role: Callable[[str, str], str | None]
) -> dict[str, list[VersionMatch]]:
    """Matching versions by model; ``role(model, version)`` says what each serves as."""
    found: dict[str, list[VersionMatch]] = {}
    for record in records:
        where = matches(query, record)
        if where is None:
            continue
        version = str(record.version)
        found.setdefault(record.model, []).append(
            VersionMatch(
                version=version,
                role=role(record.model, version),
                summary=summary(record.manifest),
                matched=where,
            )
        )
    return found
