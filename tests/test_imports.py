import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path


def test_query_side_never_imports_torch_or_fastapi(tmp_path):
    code = (
        "import sys, nasbench_ptb, nasbench_ptb.space, nasbench_ptb.schema, nasbench_ptb.summary, nasbench_ptb.cli\n"
        "bad = [m for m in ('torch', 'fastapi', 'uvicorn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # `info` runs without torch too (a missing table is the only problem here)
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "nasbench_ptb.cli", "info", str(tmp_path / "x.h5")],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "no such table file" in res.stderr
    assert "torch" not in {line.split("|")[-1].strip().split(".")[0] for line in res.stderr.splitlines()}


ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_one_namespace_that_cannot_collide(tmp_path):
    """The wheel holds nasbench_ptb, nasbench_ptb.builder and nasbench_ptb.server (with its static assets) and no
    top-level `builder` or `api`: another project's `builder`/`api` packages import beside it untouched."""
    src = tmp_path / "src"
    for name in ("nasbench_ptb", "builder", "api", "artifacts"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.parts"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                          str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (wheel,) = (tmp_path / "dist").glob("nasbench_ptb-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"nasbench_ptb", wheel.name.split("-py")[0] + ".dist-info",
                                                wheel.name.split("-py")[0] + ".data"}
    for must in ("nasbench_ptb/builder/cell.py", "nasbench_ptb/server/app.py", "nasbench_ptb/server/asgi.py",
                 "nasbench_ptb/server/static/swagger-ui-bundle.js"):
        assert must in names, must
    site, decoys = tmp_path / "site", tmp_path / "decoys"
    zipfile.ZipFile(wheel).extractall(site)
    for name in ("builder", "api"):  # somebody else's packages of those names
        (decoys / name).mkdir(parents=True)
        (decoys / name / "__init__.py").write_text(f"OWNER = 'someone else: {name}'\n")
    code = (
        "import builder, api, nasbench_ptb.builder.presets as p, nasbench_ptb.server.serve as s, uvicorn.importer\n"
        "import nasbench_ptb.server.app as a, nasbench_ptb.cli\n"
        "print(builder.OWNER, api.OWNER, p.__file__, a.__file__, sep='\\n')\n"
        "assert uvicorn.importer.import_from_string('nasbench_ptb.server.app:create_app') is a.create_app\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(decoys), str(site)])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[:2] == ["someone else: builder", "someone else: api"]
    assert all(line.startswith(str(site / "nasbench_ptb")) for line in lines[2:]), lines


def test_source_checkout_resolves_the_installed_names(tmp_path):
    """Without installing (PYTHONPATH=<checkout>, as on the GPU machine) nasbench_ptb.builder and .server are the
    checkout's builder/ and api/ folders, loaded once under those names (``-S``: no site-packages, so no editable
    install either; the two modules imported need neither torch nor FastAPI)."""
    code = ("import sys, nasbench_ptb.builder.progress as p, nasbench_ptb.server.asgi as s\n"
            "print(p.__file__, s.__file__, 'builder' in sys.modules, 'api' in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(ROOT / "builder" / "progress.py"), str(ROOT / "api" / "asgi.py"), "False", "False"]
