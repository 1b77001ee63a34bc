"""The layers are a contract (`[tool.importlinter]` in pyproject.toml): the `zantara` commands on top,
`service` and `training` beside each other and never importing one another, then `router`, `feedback`
and `knowledge`; serving imports nothing of the training extra. `lint-imports` checks it on the whole
import graph, indirect imports included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_layer_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    assert lint_imports.exists(), "import-linter is missing: install the dev extra"
    done = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_serving_imports_and_serves_without_the_training_package(
    demo_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """A serving install needs no `training` (nor its extra): with `training` made unimportable, the
    app starts on the demo model, answers a chat and takes its rating."""
    models, adapters = demo_dirs
    code = f"""
import asyncio, sys
sys.modules["training"] = None
import httpx
from asgi_lifespan import LifespanManager
from service.app import create_app
from service.settings import Settings

async def main():
    settings = Settings(
        var_dir={str(tmp_path)!r}, models_dir={str(models)!r}, adapters_dir={str(adapters)!r}
    )
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=300) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            for _ in range(3000):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            question = {{"role": "user", "content": "Apa itu KITAS?"}}
            body = {{"model": "zantara", "messages": [question], "max_tokens": 4}}
            answer = await client.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200, answer.text
            rating = {{"response_id": answer.json()["id"], "rating": 5}}
            rated = await client.post("/v1/feedback", json=rating)
            assert rated.status_code == 200, rated.text
    assert not [m for m in sys.modules if m.startswith("training.")]
    print("served without training")

asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "served without training" in done.stdout, done.stdout + done.stderr
