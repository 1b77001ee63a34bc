"""Render and lint the Helm chart with real Helm: v4, embedded as a library by helm-python-sdk
(`helm_python`), so no helm binary is needed.

    render_chart(CHART, values_a, values_b) -> Rendered(manifests=[...], notes="...", values={...})

is `helm template zantara CHART -n llm -f a.yaml -f b.yaml` (an install, no cluster: `lookup` finds
nothing), values.schema.json checked as Helm checks it; `lint_chart` is `helm lint --strict`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import yaml

SCHEMA = "values.schema.json"


class RenderFail(Exception):
    """A template failed: the chart called `fail` (a values combination it refuses) or did not execute.
    The message is Helm's, `fail`'s text included."""


class ValuesRejected(Exception):
    """Helm's validation against values.schema.json refused the values (the message names each path)."""


@dataclass(frozen=True)
class Rendered:
    """The manifests (one dict per Kubernetes object, in template-file order), the rendered NOTES.txt
    and the values the templates saw."""

    manifests: list[dict[str, Any]]
    notes: str
    values: dict[str, Any]


def merge_overrides(*overrides: dict[str, Any]) -> dict[str, Any]:
    """The user values of repeated `-f` files, merged as Helm's CLI merges them (pkg/cli/values
    mergeMaps): maps deep-merge, anything else (a list, a null) replaces. Helm then coalesces the
    result with the chart's values.yaml, where a null deletes the default."""

    def merge_maps(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
        merged = dict(base)
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge_maps(merged[key], value)
            else:
                merged[key] = value
        return merged

    values: dict[str, Any] = {}
    for override in overrides:
        values = merge_maps(values, override)
    return values


@contextmanager
def load_chart(chart_dir: Path, *, schema: bool = True) -> Iterator[helm_python.Chart]:
    """The chart loaded by Helm; without `schema`, from a copy lacking values.schema.json (what
    `--skip-schema-validation` renders, the templates' own checks alone)."""
    if schema:
        with helm_python.Chart.load(chart_dir) as chart:
            yield chart
        return
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / chart_dir.name
        shutil.copytree(chart_dir, copy, ignore=shutil.ignore_patterns(SCHEMA))
        with helm_python.Chart.load(copy) as chart:
            yield chart


def chart_values(chart_dir: Path, *overrides: dict[str, Any]) -> dict[str, Any]:
    """values.yaml coalesced with the overrides by Helm, as the templates see them."""
    with load_chart(chart_dir) as chart:
        return chart.merge_values(merge_overrides(*overrides))


def validate_values(chart_dir: Path, *overrides: dict[str, Any]) -> None:
    """Helm's own check of the values against values.schema.json; raises ValuesRejected."""
    with load_chart(chart_dir) as chart:
        try:
            chart.validate_schema(merge_overrides(*overrides))
        except helm_python.HelmValuesError as error:
            raise ValuesRejected(str(error)) from error


def render_chart(
    chart_dir: Path,
    *overrides: dict[str, Any],
    release: str = "zantara",
    namespace: str = "llm",
    schema: bool = True,
) -> Rendered:
    """Every template rendered like `helm template RELEASE CHART -n NAMESPACE -f ...`. Raises
    ValuesRejected when values.schema.json refuses the values (unless `schema` is False) and
    RenderFail when a template fails."""
    values = merge_overrides(*overrides)
    with load_chart(chart_dir, schema=schema) as chart:
        try:
            files = chart.render(values, name=release, namespace=namespace, is_install=True)
        except helm_python.HelmValuesError as error:
            raise ValuesRejected(str(error)) from error
        except helm_python.HelmRenderError as error:
            raise RenderFail(str(error)) from error
        merged = chart.merge_values(values)
    manifests: list[dict[str, Any]] = []
    notes = ""
    for path in sorted(files):
        if path.endswith("/NOTES.txt"):
            notes = files[path]
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(files[path]) if doc is not None)
    return Rendered(manifests, notes, merged)


def lint_chart(
    chart_dir: Path, *overrides: dict[str, Any], kube_version: str | None = None
) -> dict[str, Any]:
    """`helm lint --strict` with the overrides as `-f` files: {"messages": [{"severity": 1 info /
    2 warning / 3 error, "path", "error"}], "errors": [the failures' texts], ...}."""
    return helm_python.lint(
        str(chart_dir), merge_overrides(*overrides), strict=True, kube_version=kube_version
    )


def container_environment(
    rendered: Rendered, container: dict[str, Any], secret: dict[str, str]
) -> dict[str, str]:
    """What a rendered container's environment holds, as the kubelet builds it: its ConfigMaps'
    settings, then its own entries in order (a later one wins), `secretKeyRef`s read from `secret` (a
    missing key that is not optional fails, as the pod would)."""
    config_maps = {
        m["metadata"]["name"]: m.get("data", {}) for m in rendered.manifests if m["kind"] == "ConfigMap"
    }
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        if ref["key"] in secret:
            env[entry["name"]] = secret[ref["key"]]
        elif not ref.get("optional"):
            raise KeyError(f"{entry['name']}: the Secret has no key {ref['key']!r} and it is not optional")
    return env
