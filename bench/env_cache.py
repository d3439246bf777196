"""Time spent in ``Preparing``: the first run of an environment (the image build) beside a second run
of the same environment (the cached path: an image lookup only), several repetitions; for a pip
environment and for a conda one (conda packages from a local channel this script makes, solved and
installed with py-rattler, plus the same pip package). The conda path's cost on a cached environment
is the cached conda run's ``Preparing`` less the cached pip run's, measured in the same repetitions.

Usage: .venv/bin/python bench/env_cache.py [--reps 5]
Needs a running Docker engine and the base image (./scripts/test sets both up). Each repetition uses a
fresh environment (a wheel folder marker, a new conda spec), so every first run really builds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
from _server import one_file_snapshot, running_server  # bench/ is this script's folder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conda_channel import Package, make_channel  # noqa: E402

TINYPKG = Package("tinypkg", files={"lib/python3.11/site-packages/tinypkg/__init__.py": "V = 1\n"})


def preparing_seconds(client: httpx.Client, spec: dict[str, object], snap: bytes) -> float:
    run = client.post(
        "/api/v1/experiments/bench-env/runs",
        files={
            "estimator": (None, json.dumps(spec)),
            "snapshot": ("s.tar.gz", snap, "application/gzip"),
        },
    ).json()
    while True:
        details = client.get(f"/api/v1/runs/{run['runId']}").json()
        if details["status"] in ("Completed", "Failed", "Canceled"):
            break
        time.sleep(0.05)
    if details["status"] != "Completed":
        raise SystemExit(f"run failed: {details['error']}")
    times = {
        e["status"]: datetime.fromisoformat(e["timeUtc"].replace("Z", "+00:00"))
        for e in details["statusHistory"]
    }
    return (times["Starting"] - times["Preparing"]).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        wheels = tmpdir / "wheels"
        wheels.mkdir()
        settings = {
            "build_ca_bundle": "/etc/ssl/certs/ca-certificates.crt",
            "wheel_dir": str(wheels),
            "conda_channels": str(make_channel(tmpdir / "channel", [TINYPKG])),
        }
        with running_server(tmpdir, **settings) as client:
            snap = one_file_snapshot("train.py", "print('env ok')\n")
            times: dict[str, list[float]] = {k: [] for k in ("pip", "pip+", "conda", "conda+")}
            for rep in range(args.reps):
                # A new marker in the wheel folder makes a new environment: the first run builds.
                (wheels / f"marker-{uuid.uuid4().hex}.txt").write_text("x")
                pip: dict[str, object] = {
                    "entry_script": "train.py",
                    "pip_packages": ["six==1.16.0"],
                }
                # A new spec makes a new conda prefix: the first run solves and installs.
                conda: dict[str, object] = {**pip, "conda_packages": [f"tinypkg>=0.{rep}"]}
                for name, spec in (("pip", pip), ("conda", conda)):
                    times[name].append(preparing_seconds(client, spec, snap))
                    times[name + "+"].append(preparing_seconds(client, spec, snap))
            images = client.get("/api/v1/images").json()["images"]
            client.post("/api/v1/images/prune", params={"days": 0})
    median = {k: statistics.median(v) for k, v in times.items()}
    added = statistics.median(c - p for c, p in zip(times["conda+"], times["pip+"], strict=True))
    print(f"repetitions: {args.reps} (medians); pip_packages=['six==1.16.0']; conda adds tinypkg")
    print(f"first run, Preparing (image build)          pip {median['pip']:7.3f} s")
    print(f"                                           conda {median['conda']:7.3f} s")
    print(
        f"second run, Preparing (cached image)        pip {median['pip+']:7.3f} s   (goal < 0.2 s)"
    )
    print(f"                                           conda {median['conda+']:7.3f} s")
    print(f"time the conda path adds to a cached run        {added:+7.3f} s   (goal < 0.2 s)")
    print(f"images built: {len(images)} (two per repetition), removed afterwards")


if __name__ == "__main__":
    main()
