"""benchmarks/bench_monitor_overhead.py runs headless (--quick) on every workload and prints its table."""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_quick_run_prints_every_workload():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "benchmarks" / "bench_monitor_overhead.py"),
                        "--quick", "--clock", "cpu", "--tier2", "--markdown"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    for key in ("mlp:", "cnn:", "gpt:", "lstm:"):
        assert key in p.stdout
    assert "| workload | plain step | tier 0 |" in p.stdout and "tier 1 every 25" in p.stdout
    assert "light (tier0_every=5, uncertainty_every=25)" in p.stdout and "; light x" in p.stdout
    assert "tier 2" in p.stdout


def test_bad_workload_name_is_one_clear_error():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_monitor_overhead.py"), "--only", "resnet"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "unknown workload(s) ['resnet']" in p.stderr and "Traceback" not in p.stderr


def test_breakdown_prints_each_part_of_the_default_schedule():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "benchmarks" / "bench_monitor_overhead.py"),
                        "--quick", "--breakdown", "--only", "mlp,lstm"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    for key in ("mlp: plain", "lstm: plain"):
        line = next(ln for ln in p.stdout.splitlines() if ln.startswith(key))
        for part in ("norm_pass +", "grad_only +", "grad_update +", "tier0_all +", "default_all +"):
            assert part in line
