import subprocess
import sys


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
