"""The deployment files (Dockerfile, Helm chart, Grafana dashboard) checked against the real code.

Nothing here needs Docker, Helm or a network: the files are parsed, and every name they rely on (a
setting, a metric, a label, a route, a CLI command or option, a values key) is looked up in the code
or in values.yaml, so renaming any of them on one side fails here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from service.app import create_app
from service.metrics import Metrics
from service.settings import Settings
from tests.prometheus import all_panels, dashboard, dashboard_queries
from zantara.cli import app as cli_app

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CHART = REPO / "helm" / "zantara"
TEMPLATES = CHART / "templates"

TARGETS = ("gpu-serve", "gpu-train", "cpu", "migrate", "cpu-demo")
SERVER_TARGETS = ("gpu-serve", "cpu", "cpu-demo")
BATCH_TARGETS = ("gpu-train", "migrate")
PORT = "8000"

# Read by the command line straight from the environment, not settings: the URL `zantara rollout` talks
# to (zantara/cli.py) and the service `zantara retrain` asks to hot-load (training/retrain/cli.py).
CLI_ONLY_VARIABLES = {"ZANTARA_URL": "zantara/cli.py", "ZANTARA_SERVICE_URL": "training/retrain/cli.py"}

# Values whose content is passed through to Kubernetes or the environment as it stands: keys below them
# in an override file are not looked up in values.yaml.
FREE_FORM_VALUES = {
    "config",
    "env",
    "tolerations",
    "resources",
    "startupProbe",
    "livenessProbe",
    "readinessProbe",
    "podSecurityContext",
    "securityContext",
    "strategy",
    "nodeSelector",
    "affinity",
    "podAnnotations",
    "podLabels",
    "annotations",
    "labels",
}

# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
GRAFANA_BUILTIN_VARIABLES = {"__rate_interval", "__range", "__interval", "__range_s", "__interval_ms"}


# --- helpers ----------------------------------------------------------------------------------------


def chart_files() -> list[Path]:
    """Every text file of the chart (templates, helpers, NOTES, values, CI values, Chart.yaml)."""
    return sorted(
        p for p in CHART.rglob("*") if p.is_file() and p.suffix in {".yaml", ".yml", ".tpl", ".txt"}
    )


def template_files() -> list[Path]:
    return sorted(p for p in TEMPLATES.iterdir() if p.is_file())


@cache
def values() -> dict[str, Any]:
    loaded = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def settings_variables() -> set[str]:
    return {f"ZANTARA_{name.upper()}" for name in Settings.model_fields}


def zantara_variables(text: str) -> set[str]:
    return {m.rstrip("_") for m in re.findall(r"\bZANTARA_[A-Z0-9_]+", text)}


def make_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Settings built from exactly `env` (nothing from the outer environment or a .env file)."""
    for name in list(os.environ):
        if name.startswith("ZANTARA_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name not in CLI_ONLY_VARIABLES:
            monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


@cache
def app_paths() -> set[str]:
    return set(create_app(Settings(_env_file=None)).openapi()["paths"])  # type: ignore[call-arg]


def cli_command(words: list[str]) -> tuple[Any, list[str]]:
    """The `zantara` (sub)command named by the leading words, and the words left after it (click objects,
    duck-typed: typer may bring its own copy of click)."""
    command = typer.main.get_command(cli_app)
    rest = list(words)
    while rest and hasattr(command, "commands") and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        assert sub is not None, (
            f"`zantara {' '.join(words)}`: no command {rest[0]!r} (has {sorted(command.commands)})"
        )
        command, rest = sub, rest[1:]
    return command, rest


def assert_cli_call(words: list[str]) -> None:
    """`zantara WORDS` names a real command and only options it has."""
    command, rest = cli_command(words)
    if hasattr(command, "commands"):
        assert rest == ["--help"], f"`zantara {' '.join(words)}` stops at a command group"
        return
    options = {"--help"} | {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for word in rest:
        if word.startswith("--"):
            assert word.split("=", 1)[0] in options, (
                f"`zantara {' '.join(words)}`: no option {word} ({options})"
            )


# --- Dockerfile ---------------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


@cache
def dockerfile_stages() -> dict[str, Stage]:
    """Stages by name (lower case), each with its instructions; comments and line continuations handled."""
    logical: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.strip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            logical.append(current.strip())
        current = ""
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction, args = instruction.upper(), args.strip()
        if instruction == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2].lower() if len(words) >= 3 and words[1].upper() == "AS" else f"#{len(stages)}"
            stage = Stage(name=name, base=words[0].lower())
            stages[name] = stage
        elif stage is not None:
            stage.instructions.append((instruction, args))
    return stages


def stage_chain(target: str) -> list[Stage]:
    """The stage and the stages it is built FROM, base first."""
    stages = dockerfile_stages()
    chain = [stages[target]]
    while chain[0].base in stages:
        chain.insert(0, stages[chain[0].base])
    return chain


def effective(target: str, instruction: str) -> list[str]:
    """Arguments of every `instruction` that applies to the target, in order."""
    return [args for stage in stage_chain(target) for ins, args in stage.instructions if ins == instruction]


def parse_env(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def target_env(target: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in effective(target, "ENV"):
        env.update(parse_env(args))
    return env


def base_image(target: str) -> str:
    """The external image a target is built on, with `${ARG}` replaced by the ARG's default."""
    base = stage_chain(target)[0].base
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M))
    return re.sub(r"\$\{?(\w+)\}?", lambda m: {k.lower(): v for k, v in defaults.items()}[m.group(1)], base)


def test_dockerfile_has_every_target_on_pinned_bases() -> None:
    stages = dockerfile_stages()
    for target in TARGETS:
        assert target in stages, f"Dockerfile has no `FROM ... AS {target}` stage"
        image = base_image(target)
        name, _, tag = image.partition("@")[0].rpartition(":")
        pinned = "@sha256:" in image or (name and re.search(r"\d", tag) and tag != "latest")
        assert pinned, f"target {target} is built on {image}, not pinned by a version tag or digest"
    assert base_image("gpu-serve").startswith("vllm/vllm-openai:v"), base_image("gpu-serve")
    assert "cuda" in base_image("gpu-train"), base_image("gpu-train")
    assert base_image("cpu").startswith("python:3.11."), base_image("cpu")
    assert re.search(r"^# vLLM range: .*vLLM >= [\d.]+, < [\d.]+", DOCKERFILE.read_text(), re.M)


def test_no_secret_is_baked_into_an_image() -> None:
    secretish = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|HASH_KEY|CREDENTIAL|DATABASE_URL", re.I)
    for target in TARGETS:
        for instruction in ("ENV", "ARG"):
            for args in effective(target, instruction):
                names = parse_env(args) if instruction == "ENV" else {args.split("=")[0]: ""}
                leaked = [name for name in names if secretish.search(name)]
                assert not leaked, f"target {target}: {instruction} {leaked} (secrets come at run time)"


def test_batch_targets_run_their_command_without_a_health_check() -> None:
    assert json.loads(effective("gpu-train", "CMD")[-1]) == ["retrain"]
    assert json.loads(effective("migrate", "CMD")[-1]) == ["db", "upgrade"]
    for target in BATCH_TARGETS:
        assert effective(target, "HEALTHCHECK")[-1].strip().upper() == "NONE", target


def test_every_target_runs_as_a_non_root_user() -> None:
    for target in TARGETS:
        users = effective(target, "USER")
        assert users, f"target {target} never sets USER (it would run as root)"
        user = users[-1].split(":")[0]
        assert user not in {"root", "0"}, f"target {target} runs as {users[-1]}"


def test_server_targets_serve_on_port_8000_with_a_health_check() -> None:
    for target in SERVER_TARGETS:
        checks = effective(target, "HEALTHCHECK")
        assert checks, f"target {target} has no HEALTHCHECK"
        assert "NONE" not in checks[-1].upper().split(), f"target {target} disables its HEALTHCHECK"
        paths = re.findall(r"/[a-z]+z\b", checks[-1])
        assert paths == ["/healthz"], f"target {target} HEALTHCHECK should hit /healthz: {checks[-1]}"
        assert set(paths) <= app_paths()
        assert any(PORT in args.split() for args in effective(target, "EXPOSE")), f"{target}: EXPOSE {PORT}"
        env = target_env(target)
        assert env.get("ZANTARA_HOST") == "0.0.0.0", f"{target} must listen on all interfaces"
        assert env.get("ZANTARA_PORT", PORT) == PORT
        assert json.loads(effective(target, "ENTRYPOINT")[-1]) == ["zantara"]
        assert json.loads(effective(target, "CMD")[-1]) == ["serve"]


def test_every_target_has_the_zantara_entrypoint() -> None:
    for target in TARGETS:
        entrypoints = effective(target, "ENTRYPOINT")
        assert entrypoints and json.loads(entrypoints[-1]) == ["zantara"], target
        assert_cli_call(json.loads(effective(target, "CMD")[-1]))


def test_dockerfile_commands_are_real_cli_commands() -> None:
    for stage in dockerfile_stages().values():
        for instruction, args in stage.instructions:
            if instruction != "RUN":
                continue
            for call in re.findall(r"(?:^|[;&|]\s*|\s)zantara\s+([a-z][^;&|]*)", args):
                words = [w for w in shlex.split(call) if not w.startswith("/")]
                assert_cli_call(words)


def test_environment_the_images_set_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for target in TARGETS:
        env = {k: v for k, v in target_env(target).items() if k.startswith("ZANTARA_")}
        unknown = set(env) - settings_variables() - set(CLI_ONLY_VARIABLES)
        assert not unknown, f"target {target} sets variables that are no setting: {sorted(unknown)}"
        settings = make_settings(monkeypatch, env)
        assert str(settings.var_dir) == env.get("ZANTARA_VAR_DIR", "var")


def test_cpu_torch_matches_the_makefile() -> None:
    makefile = (REPO / "Makefile").read_text()
    make_spec = re.search(r"^TORCH_SPEC\s*\?=\s*torch==(\S+)", makefile, re.M)
    docker_spec = re.search(r"^ARG TORCH_CPU_VERSION=(\S+)", DOCKERFILE.read_text(), re.M)
    assert make_spec and docker_spec
    assert make_spec.group(1) == docker_spec.group(1), (
        "the cpu image and `make` should install the same torch"
    )
    locked = [p for p in tomllib.loads((REPO / "uv.lock").read_text())["package"] if p["name"] == "torch"]
    assert [p["version"] for p in locked] == [f"{make_spec.group(1)}+cpu"], (
        "uv.lock (the main venv) should pin the same CPU torch as `make vllm` and the cpu image"
    )


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    lines = [
        ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore is an allow-list: it starts with `*`"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert not allowed & {"var", ".venv", ".git", "tests"}, "the build context must not carry local state"
    copied: set[str] = set()
    for stage in dockerfile_stages().values():
        for instruction, args in stage.instructions:
            if instruction in {"COPY", "ADD"} and "--from=" not in args:
                words = [w for w in args.split() if not w.startswith("--")]
                copied.update(w.rstrip("/") for w in words[:-1])
    assert copied, "the Dockerfile copies nothing from the build context"
    for path in copied:
        assert (REPO / path).exists(), f"COPY {path}: not in the repository"
        assert path in allowed, f"COPY {path}: excluded by .dockerignore"
    for package in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]["include"]:
        assert package.rstrip("*") in copied, f"the images lack the package {package}"


def test_every_image_installs_the_wheel_never_the_source_tree() -> None:
    """Only the `wheel` stage copies the source; every target's Python gets the project from that wheel
    (package data inside: templates, static files, knowledge/data, migrations), never editable."""
    stages = dockerfile_stages()
    assert "wheel" in stages, "Dockerfile has no `FROM ... AS wheel` stage"
    assert any(
        ins == "RUN" and re.search(r"\bpip wheel\b.*--wheel-dir /wheels", args)
        for ins, args in stages["wheel"].instructions
    ), "the wheel stage builds no wheel into /wheels"
    for stage in stages.values():
        for instruction, args in stage.instructions:
            if instruction in {"COPY", "ADD"} and "--from=" not in args:
                assert stage.name == "wheel", (
                    f"{stage.name}: {instruction} {args} (only the wheel stage takes the source)"
                )
            if instruction == "RUN":
                assert not re.search(r"\bpip install\b.*(\s-e\s|--editable)", args), (
                    f"{stage.name}: editable install"
                )
    for target in TARGETS:
        chain = stage_chain(target)
        copied_from = {
            word.split("=", 1)[1].lower()
            for stage in chain
            for ins, args in stage.instructions
            if ins == "COPY"
            for word in args.split()
            if word.startswith("--from=")
        }
        runs = [
            args
            for stage in [*chain, *(stages[name] for name in copied_from if name in stages)]
            for ins, args in stage.instructions
            if ins == "RUN"
        ]
        installs = [args for args in runs if re.search(r"\bpip install\b.*/wheels/zantara-\*\.whl", args)]
        assert installs, f"target {target} does not install the wheel"
        assert all("from=wheel" in args for args in installs), installs


# --- environment variables: Dockerfile and chart ------------------------------------------------------


def test_every_zantara_variable_is_a_real_setting() -> None:
    real = settings_variables()
    for name, reader in CLI_ONLY_VARIABLES.items():
        assert f'"{name}"' in (REPO / reader).read_text(), f"{name} is no longer read by {reader}"
    for path in [DOCKERFILE, *chart_files()]:
        unknown = zantara_variables(path.read_text()) - real - set(CLI_ONLY_VARIABLES)
        assert not unknown, f"{path.relative_to(REPO)} names variables that are no setting: {sorted(unknown)}"


def test_the_variables_the_brief_requires_exist() -> None:
    for name in (
        "DATABASE_URL",
        "ENGINE",
        "BASE_MODEL",
        "ADMIN_TOKEN",
        "API_KEYS",
        "ROLLOUT_SALT",
        "ADAPTERS_DIR",
        "MIGRATE_ON_START",
        "ENVIRONMENT",
        "HOST",
        "PORT",
    ):
        assert f"ZANTARA_{name}" in settings_variables()


# --- Helm chart ---------------------------------------------------------------------------------------


def test_chart_yaml() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "zantara"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"], "Chart.yaml appVersion != pyproject.toml version"


def lookup(tree: Any, path: list[str]) -> bool:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def values_references(text: str) -> set[str]:
    return set(re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text))


def test_values_references_in_templates_exist_in_values_yaml() -> None:
    missing = {
        f"{path.name}: .Values{ref}"
        for path in template_files()
        for ref in values_references(path.read_text())
        if not lookup(values(), ref.strip(".").split("."))
    }
    assert not missing, f"templates use values that values.yaml lacks: {sorted(missing)}"


def test_every_top_level_value_is_used() -> None:
    used = {
        ref.strip(".").split(".")[0]
        for path in template_files()
        for ref in values_references(path.read_text())
    }
    assert not set(values()) - used, f"values.yaml keys no template reads: {sorted(set(values()) - used)}"


def unknown_override_keys(override: Any, defaults: Any, prefix: str = "") -> Iterator[str]:
    if not isinstance(override, dict):
        return
    for key, value in override.items():
        if not isinstance(defaults, dict) or key not in defaults:
            yield prefix + key
        elif key not in FREE_FORM_VALUES:
            yield from unknown_override_keys(value, defaults[key], f"{prefix}{key}.")


def test_ci_values_files_only_set_known_values() -> None:
    files = sorted((CHART / "ci").glob("*.yaml"))
    assert files
    for path in files:
        unknown = list(unknown_override_keys(yaml.safe_load(path.read_text()), values()))
        assert not unknown, f"{path.name} sets values the chart does not have: {unknown}"


def test_probes_hit_real_routes() -> None:
    expected = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for tier in ("engine", "router"):
        for probe, path in expected.items():
            assert values()[tier][probe]["httpGet"]["path"] == path
            assert values()[tier][probe]["httpGet"]["port"] == "http"
            assert path in app_paths()
    startup = values()["engine"]["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= 15 * 60, "the startup probe should allow a large model's download and load"
    assert "/metrics" in app_paths()
    assert "/metrics" in (TEMPLATES / "servicemonitor.yaml").read_text()


def test_gpu_is_a_configurable_extended_resource() -> None:
    assert values()["engine"]["gpu"] == {"count": 1, "resourceName": "nvidia.com/gpu"}
    deployment = (TEMPLATES / "engine-deployment.yaml").read_text()
    assert ".Values.engine.gpu.resourceName" in deployment and ".Values.engine.gpu.count" in deployment


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook() -> None:
    job = (TEMPLATES / "migration-job.yaml").read_text()
    assert re.search(r"helm\.sh/hook:\s*pre-install,\s*pre-upgrade", job)
    assert "kind: Job" in job
    args = json.loads(re.search(r"args:\s*(\[.*\])", job).group(1))  # type: ignore[union-attr]
    assert args == ["db", "upgrade"]
    assert_cli_call(args)
    secret = (TEMPLATES / "secret.yaml").read_text()
    weight = int(re.search(r'helm\.sh/hook-weight:\s*"(-?\d+)"', secret).group(1))  # type: ignore[union-attr]
    job_weight = int(re.search(r'helm\.sh/hook-weight:\s*"(-?\d+)"', job).group(1))  # type: ignore[union-attr]
    assert weight < job_weight, "the Secret must exist before the migration Job reads the database URL"
    deployment = (TEMPLATES / "engine-deployment.yaml").read_text()
    assert re.search(r"name: ZANTARA_MIGRATE_ON_START\n\s+value: .*ternary \"false\" \"true\"", deployment)


def test_notes_commands_are_real_cli_commands() -> None:
    notes = (TEMPLATES / "NOTES.txt").read_text()
    calls = re.findall(r"-- zantara ([^\n]+)", notes)
    assert any(call.startswith("rollout set 30") for call in calls), (
        "NOTES should show `zantara rollout set 30`"
    )
    for call in calls:
        assert_cli_call(shlex.split(call))
    assert "port-forward" in notes


def test_files_the_templates_read_exist() -> None:
    for path in template_files():
        for name in re.findall(r'\.Files\.Get "([^"]+)"', path.read_text()):
            assert (CHART / name).is_file(), f"{path.name} reads {name}, which the chart lacks"
    assert values()["grafanaDashboard"]["labels"] == {"grafana_dashboard": "1"}


# --- Grafana dashboard --------------------------------------------------------------------------------


SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


@cache
def metric_families() -> dict[str, set[str]]:
    """Every metric family of a real Metrics(), with the series names Prometheus stores for it."""
    return {
        family.name: {family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ("",))}
        | {sample.name for sample in family.samples}
        for family in Metrics().registry.collect()
    }


@cache
def exported_metrics() -> dict[str, set[str] | None]:
    """Every series name a real Metrics() exports, with its label names (None: no sample to tell them)."""
    names: dict[str, set[str] | None] = {
        series: None for all_series in metric_families().values() for series in all_series
    }
    for family in Metrics().registry.collect():
        for sample in family.samples:
            labels = names.get(sample.name) or set()
            names[sample.name] = labels | set(sample.labels)
    return names


PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def promql_metrics(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are no function, keyword, label or variable."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    found = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)\s*(\()?", text):
        if match.group(2) is None and match.group(1).lower() not in PROMQL_WORDS:
            found.add(match.group(1))
    return found


def promql_selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched) for each `metric{...}` selector."""
    return [
        (name, set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers)))
        for name, matchers in re.findall(r"([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}", expr)
    ]


def promql_grouping_labels(expr: str) -> set[str]:
    groups = re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^()]*)\)", expr)
    return {label.strip() for group in groups for label in group.split(",") if label.strip()}


def variable_label_values(variable: dict[str, Any]) -> list[tuple[str, str]]:
    """(selector, label) of each label_values() in a variable's query and its definition."""
    query = variable.get("query")
    texts = [
        query.get("query", "") if isinstance(query, dict) else str(query or ""),
        variable.get("definition", ""),
    ]
    return [
        pair for text in texts for pair in re.findall(r"label_values\(\s*([^,()]+?)\s*,\s*(\w+)\s*\)", text)
    ]


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every query on the service's own metrics: panel targets, annotations, and
    label_values() variables (the vLLM row's queries of vLLM's metrics are evaluated against a real
    vLLM engine in tests/vllm/test_dashboard.py)."""
    found = dashboard_queries(vllm=False)
    for variable in dashboard()["templating"]["list"]:
        for selector, _label in variable_label_values(variable):
            found.append((f"variable {variable['name']!r}", selector))
    return found


def test_promql_helpers_find_what_they_should() -> None:
    assert promql_metrics('sum by (le) (rate(up{job=~"$job"}[$__rate_interval])) / on(x) foo_total') == {
        "up",
        "foo_total",
    }
    assert promql_metrics("histogram_quantile(0.95, sum by (variant, le) (rate(a_bucket[5m])))") == {
        "a_bucket"
    }
    assert promql_selectors('x{stars=~"1|2", job="a"}') == [("x", {"stars", "job"})]
    assert promql_grouping_labels("sum by (variant, le) (x) / ignoring(stars) y") == {
        "variant",
        "le",
        "stars",
    }
    assert "zantara_requests_total" in exported_metrics()
    assert "zantara_rollout_changes_total" in exported_metrics()
    assert "zantara_requests" not in exported_metrics()


def test_dashboard_loads_with_a_prometheus_datasource_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    assert board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    datasources = {
        name for name, v in variables.items() if v["type"] == "datasource" and v["query"] == "prometheus"
    }
    assert datasources, "the dashboard needs a Prometheus datasource variable"
    for panel in all_panels(board["panels"]):
        for ref in [panel.get("datasource"), *(t.get("datasource") for t in panel.get("targets", []))]:
            if isinstance(ref, dict) and str(ref.get("uid", "")).startswith("$"):
                assert ref["uid"].strip("${}") in datasources, f"panel {panel.get('title')!r}: {ref}"


def test_every_panel_has_a_unique_id_and_a_title() -> None:
    panels = list(all_panels(dashboard()["panels"]))
    assert len(panels) >= 10
    assert all(isinstance(panel.get("id"), int) for panel in panels), [panel.get("id") for panel in panels]
    ids: list[int] = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    for panel in panels:
        assert isinstance(panel.get("title"), str) and panel["title"].strip(), (
            f"panel {panel.get('id')} has no title"
        )
        if panel["type"] != "row":
            assert panel.get("targets"), f"panel {panel['title']!r} queries nothing"


def test_dashboard_queries_only_exported_metrics_and_labels() -> None:
    metrics = exported_metrics()
    for variable in dashboard()["templating"]["list"]:
        for selector, label in variable_label_values(variable):
            for name in promql_metrics(selector):
                assert label in (metrics.get(name) or set()) | TARGET_LABELS, (
                    f"${variable['name']}: {name} {label}"
                )
    variables = {v["name"] for v in dashboard()["templating"]["list"]} | GRAFANA_BUILTIN_VARIABLES
    for where, expr in dashboard_expressions():
        names = promql_metrics(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - set(metrics)
        assert not unknown, f"{where}: {sorted(unknown)} not exported by service.metrics.Metrics"
        for variable in re.findall(r"\$\{?(\w+)", expr):
            assert variable in variables, f"{where}: undefined variable ${variable}"
        known_labels: set[str] = set(TARGET_LABELS)
        for name in names:
            known_labels |= metrics[name] or set()
        lenient = any(metrics[name] is None for name in names)
        for metric, labels in promql_selectors(expr):
            if metrics.get(metric) is not None:
                assert labels <= (metrics[metric] or set()) | TARGET_LABELS, (
                    f"{where}: {metric} has no {labels}"
                )
        if not lenient:
            assert promql_grouping_labels(expr) <= known_labels, (
                f"{where}: grouping by unknown labels in {expr!r}"
            )


def test_dashboard_covers_every_exported_metric() -> None:
    used = {name for _where, expr in dashboard_expressions() for name in promql_metrics(expr)}
    uncovered = {family for family, series in metric_families().items() if not series & used}
    assert not uncovered, f"metrics without a panel on the dashboard: {sorted(uncovered)}"
