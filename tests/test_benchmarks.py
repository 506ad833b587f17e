"""The benchmark scripts keep working (tiny mode; their timings are not part of the tests)."""

import subprocess
import sys

from conftest import ROOT, TINY


def test_compare_runs_variants_and_prints_ratios(tiny_data, tmp_path):
    extra = " ".join([f"data.root={tiny_data}", *TINY[:2]])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--epochs", "2", "--repeats", "1", "--extra", extra,
         "augmentation=none", "augmentation=noise_affine"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.startswith("augmentation=")}
    assert rows["augmentation=none"][2] == "1.000" and float(rows["augmentation=noise_affine"][2]) > 0
