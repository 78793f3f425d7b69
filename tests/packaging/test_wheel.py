"""The wheel works on its own: built, installed over the checkout, run from elsewhere.

The wheel is built from a copy of the sources (building in place would write build/ and
*.egg-info into a checkout that other test runs share), installed with ``pip --target DIR``
and used with ``PYTHONPATH=DIR``, so the installed ``gem_app`` shadows the checkout while the
environment's dependencies are reused. Nothing is downloaded (``--no-index``; setuptools is
already in the environment, hence ``--no-build-isolation``). From a folder outside the
checkout, ``gem fit`` + ``gem export`` run, the app's pages run from the wheel (AppTest),
and ``gem app`` serves its health endpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from tests.browser.server import running_app

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SOURCES = ["pyproject.toml", "README.md", "gem_app", "pages", "sample_data"]
APPTEST = """
import json
from streamlit.testing.v1 import AppTest
from gem_app.app.bundle import APP_ENTRY
at = AppTest.from_file(str(APP_ENTRY), default_timeout=600).run()
titles = [at.title[0].value]
at.switch_page("mix.py").run()
titles.append(at.title[0].value)
errors = [e.value for e in at.exception] + [e.value for e in at.error]
print(json.dumps([titles, errors]))
"""


def _run(argv, *, cwd, env, timeout=300) -> str:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"{argv[:3]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel path, install folder DIR, environment with PYTHONPATH=DIR, a folder outside)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GEM_WORKSPACE")}
    env["PIP_NO_INDEX"] = "1"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(
        pip
        + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", root / "dist", source],
        cwd=root,
        env=env,
    )
    (wheel,) = (root / "dist").glob("gem_studio-*.whl")
    target = root / "site"
    _run(pip + ["install", "--no-deps", "--no-index", "--target", target, wheel], cwd=root, env=env)
    outside = root / "elsewhere"
    outside.mkdir()
    env = dict(env, PYTHONPATH=str(target), GEM_APP_UMAP="0")
    return wheel, target, env, outside


def test_the_wheel_holds_every_module_the_pages_the_sample_and_the_schema(installed):
    wheel, _, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    library = {p.relative_to(REPO).as_posix() for p in (REPO / "gem_app").rglob("*.py")}
    missing = sorted(library - names)
    assert not missing, (
        f"not in the wheel (add the package to [tool.setuptools] packages): {missing}"
    )
    pages = {f"gem_studio_pages/{p.name}" for p in (REPO / "pages").glob("*.py")}
    assert "gem_studio_pages/streamlit_app.py" in pages and pages <= names
    assert {
        "gem_app/export/mixture.schema.json",
        "gem_app/sample_data/debian_packages.parquet",
        "gem_app/sample_data/embeddings.npy",
    } <= names
    assert not any(n.startswith(("pages/", "sample_data/", "tests/")) for n in names)


def test_installed_package_shadows_the_checkout(installed):
    _, target, env, outside = installed
    out = _run(
        [
            sys.executable,
            "-c",
            "import json, gem_app; from gem_app.app import bundle; print(json.dumps([gem_app.__file__,"
            " str(bundle.APP_ENTRY), str(bundle.SAMPLE_DATA), str(bundle.SAMPLE_EMBEDDINGS)]))",
        ],
        cwd=outside,
        env=env,
    )
    package, entry, data, embeddings = (Path(p) for p in json.loads(out))
    assert package == target / "gem_app" / "__init__.py"
    assert entry == target / "gem_studio_pages" / "streamlit_app.py" and entry.is_file()
    assert data == target / "gem_app" / "sample_data" / "debian_packages.parquet"
    assert embeddings == target / "gem_app" / "sample_data" / "embeddings.npy"
    assert np.load(embeddings, allow_pickle=False).shape == (5000, 384)
    assert len(pd.read_parquet(data)) == 5000


def test_gem_fit_and_export_from_the_wheel(installed):
    _, target, env, outside = installed
    rng = np.random.default_rng(0)
    topic = np.repeat(np.arange(3), [30, 60, 90])
    pd.DataFrame(
        {
            "id": range(180),
            "text": [f"topic{t} words {i}" for i, t in enumerate(topic)],
            "tokens": 10,
        }
    ).to_csv(outside / "corpus.csv", index=False)
    np.save(
        outside / "emb.npy", (np.eye(6)[topic] * 8 + rng.normal(size=(180, 6))).astype(np.float32)
    )
    gem = target / "bin" / "gem"
    _run(
        [
            gem,
            "fit",
            "corpus.csv",
            "--embeddings",
            "emb.npy",
            "--tokens-col",
            "tokens",
            "--k",
            "3",
            "--seed",
            "0",
            "--device",
            "cpu",
            "--out",
            "run",
        ],
        cwd=outside,
        env=env,
    )
    _run(
        [gem, "export", "run", "--tau", "2", "--format", "gem", "--out", "mixture.json"],
        cwd=outside,
        env=env,
    )
    doc = json.loads((outside / "mixture.json").read_text())
    schema = json.loads((target / "gem_app" / "export" / "mixture.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["mixing"]["tau"] == 2.0
    natural = np.array([d["natural_share"] for d in doc["domains"]])
    np.testing.assert_allclose(sorted(natural), [1 / 6, 1 / 3, 1 / 2], atol=0.02)  # the topics
    expected = np.sqrt(natural) / np.sqrt(natural).sum()  # tau = 2: w ∝ natural^(1/2)
    np.testing.assert_allclose([d["weight"] for d in doc["domains"]], expected, rtol=1e-6)


def test_the_pages_run_from_the_wheel(installed):
    _, _, env, outside = installed
    env = dict(env, GEM_WORKSPACE=str(outside / "ws_apptest"))
    out = _run([sys.executable, "-c", APPTEST], cwd=outside, env=env, timeout=600)
    titles, errors = json.loads(out.strip().splitlines()[-1])
    assert titles == ["Map of the hypersphere", "Mix & Export"] and errors == []


def test_gem_app_from_the_wheel_answers_health(installed):
    _, target, env, outside = installed
    with running_app(target / "bin" / "gem", outside / "ws_server", env=env, cwd=outside) as (
        _,
        proc,
    ):
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        if cmdline.exists():  # gem app exec'd Streamlit on the wheel's entry script
            argv = cmdline.read_bytes().split(b"\0")
            assert str(target / "gem_studio_pages" / "streamlit_app.py").encode() in argv
            # a viewer's toolbar (no Deploy button), no file watching: flags, so no config
            # file has to be found beside the installed pages
            flags = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i][:2] == b"--"}
            assert flags[b"--client.toolbarMode"] == b"viewer"
            assert flags[b"--server.fileWatcherType"] == b"none"
            assert flags[b"--server.runOnSave"] == b"false"
