"""The distribution works on its own: the wheel built from the working tree carries every file of the
packages (code, review templates and static files, the project's data, migrations), and installed
(not editable) in a fresh virtual environment outside the source tree it serves a chat, shows the
review pages with their static files, reads its data and builds the demo model.

The fresh environment gets its third-party dependencies from this one, without downloading: a `.pth`
file puts this environment's site-packages after its own (a plain path line: the editable install's
finder there is never run), so `zantara`'s own packages come only from the wheel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

from service.settings import DEMO_BASE_MODEL
from tests.served import REPO, running_server

SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGES = tuple(name.rstrip("*") for name in SETUPTOOLS["packages"]["find"]["include"])
API_KEY = "sk-wheel-test-0123456789"
REVIEW_PAGES = ("/review/queue", "/review/ab", "/review/dataset")
STATIC = re.compile(r'(?:href|src)="(/review/[^"?#]+\.(?:css|js))"')
"""A page's own style sheets and scripts (the only ones its CSP allows)."""
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def working_tree_files() -> list[str]:
    """The files a build of the working tree sees: tracked and untracked, less what git ignores."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted(name for name in set(listed.split("\0")) if name and (REPO / name).is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of a copy of the working tree (a copy: a build in place would leave `build/` behind,
    and a stale `build/` could slip deleted files into the wheel); built offline with this environment's
    setuptools."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    for name in working_tree_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(root / "dist"), str(source)],
        check=True,
        timeout=300,
    )
    (built,) = (root / "dist").glob("zantara-*.whl")
    return built


def test_every_package_of_the_checkout_is_in_the_distribution() -> None:
    """A new top-level package (a folder with `__init__.py`) must be named in pyproject.toml's
    `packages.find`, or the wheel leaves it out; only the tests are not distributed."""
    packages = {name.split("/", 1)[0] for name in working_tree_files() if name.count("/") == 1}
    packages = {name for name in packages if (REPO / name / "__init__.py").is_file()}
    assert packages - {"tests"} == set(PACKAGES), (
        f"pyproject.toml distributes {PACKAGES}, the checkout has {packages}"
    )


def test_the_wheel_holds_every_file_of_the_packages_and_nothing_else(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {name for name in working_tree_files() if name.split("/", 1)[0] in PACKAGES}
    assert not expected - names, f"the wheel lacks {sorted(expected - names)}"
    outside = {name for name in names - expected if not name.startswith("zantara-0.1.0.dist-info/")}
    assert not outside, f"the wheel holds files that are not the packages' {sorted(outside)}"
    for needed in (
        "knowledge/data/facts.yaml",
        "knowledge/data/seed/questions.jsonl",
        "knowledge/data/general/general.jsonl",
        "knowledge/data/eval/gates.yaml",
        "service/templates/review/review_dataset.html",
        "service/static/review/review_dataset.js",
        "service/static/review/review_dataset.css",
        "migrations/script.py.mako",
        "migrations/versions/0001_initial_schema.py",
        "training/evaluation/templates/report.html.j2",
    ):
        assert needed in names, needed


def installed(wheel: Path, folder: Path) -> Path:
    """A fresh virtual environment in `folder` with the wheel installed (not editable); this
    environment's site-packages after its own for the third-party dependencies."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "zantara-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return folder


def outside_env(**settings: str) -> dict[str, str]:
    """This process's environment less its ZANTARA_* settings, with `settings`; no PYTHONPATH."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ZANTARA_")}
    return {**env, "PYTHONPATH": "", **settings}


@pytest.mark.slow
def test_the_installed_wheel_serves_reviews_and_builds_the_demo_model(
    wheel: Path, demo_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    venv = installed(wheel, tmp_path / "venv")
    zantara = str(venv / "bin" / "zantara")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    var_dir = tmp_path / "var"

    # Every package comes from the wheel, none from this checkout.
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import json, sys, importlib; print(json.dumps("
            "{name: importlib.import_module(name).__file__ for name in sys.argv[1:]}))",
            *PACKAGES,
        ],
        cwd=elsewhere,
        env=outside_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    for name, path in json.loads(where.stdout).items():
        assert Path(path).is_relative_to(venv), f"{name} imported from {path}, not from the installed wheel"

    # The project's data, from inside the installed package.
    stats = subprocess.run(
        [zantara, "dataset", "stats", "--json"],
        cwd=elsewhere,
        env=outside_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert stats.returncode == 0, stats.stdout + stats.stderr
    assert json.loads(stats.stdout)

    env = outside_env(
        ZANTARA_VAR_DIR=str(var_dir),
        ZANTARA_MODELS_DIR=str(demo_dirs[0]),
        ZANTARA_ADAPTERS_DIR=str(demo_dirs[1]),
        ZANTARA_API_KEYS=API_KEY,
    )
    with (
        running_server(env, timeout_s=180, command=[zantara, "serve"], cwd=elsewhere) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        chat = client.post(
            "/v1/chat/completions",
            json={
                "model": "zantara",
                "messages": [{"role": "user", "content": "Apa itu NIB?"}],
                "max_tokens": 16,
            },
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert chat.status_code == 200, chat.text
        assert isinstance(chat.json()["choices"][0]["message"]["content"], str)

        added = subprocess.run(
            [zantara, "reviewers", "add", "wheel-reviewer"],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert added.returncode == 0, added.stdout + added.stderr
        token = added.stdout.strip().splitlines()[-1]
        login = client.get("/review/login", params={"next": "/review/queue"})
        assert login.status_code == 200 and (csrf := CSRF.search(login.text)), login.text
        signed_in = client.post(
            "/review/login", data={"token": token, "csrf_token": csrf.group(1), "next": "/review/queue"}
        )
        assert signed_in.status_code == 303, signed_in.text

        linked: set[str] = set()
        for page in REVIEW_PAGES:
            shown = client.get(page)
            assert shown.status_code == 200, f"{page}: {shown.status_code} {shown.text[:500]}"
            linked.update(STATIC.findall(shown.text))
        assert {
            "/review/static/review.css",
            "/review/queue/static/review_queue.css",
            "/review/queue/static/review_queue.js",
            "/review/dataset/assets/review_dataset.css",
            "/review/dataset/assets/review_dataset.js",
        } <= linked, linked
        for path in sorted(linked | {"/review/static/ab.js"}):
            asset = client.get(path)
            assert asset.status_code == 200 and asset.content, f"{path}: {asset.status_code}"

    built = tmp_path / "built"
    demo = subprocess.run(
        [zantara, "demo-model", "--var-dir", str(built)],
        cwd=elsewhere,
        env=outside_env(),
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-4000:]
    assert (built / "models" / DEMO_BASE_MODEL / "config.json").is_file()
    assert list((built / "adapters").glob("*/*/adapter_config.json")), "no demo adapter was built"
