"""Pack + hash + dedupe check of a 2,000-file / 200 MB source folder, beside ``tar czf`` of the same
folder in the same run; then a resubmission of the unchanged folder, counting the bytes it uploads.

Usage: .venv/bin/python bench/snapshot.py [--reps 5] [--files 2000] [--mb 200]
Needs a running Docker engine and the base image (./scripts/test sets both up).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _server import running_server  # bench/ is this script's folder

from trainhub import Estimator, Experiment, Workspace
from trainhub.sdk.snapshot import pack

WORDS = b"epoch loss accuracy gradient tensor batch layer weight bias optimizer ".split()


def make_tree(root: Path, files: int, total_mb: int) -> None:
    """Source-like files: half text (compressible), half binary noise, in 20 folders."""
    rng = random.Random(7)
    size = total_mb * 1024 * 1024 // files
    for i in range(files - 1):  # plus train.py
        folder = root / f"pkg{i % 20}"
        folder.mkdir(parents=True, exist_ok=True)
        text = b" ".join(rng.choice(WORDS) for _ in range(size // 16))[: size // 2]
        (folder / f"file{i}.dat").write_bytes(text + rng.randbytes(size - len(text)))
    (root / "train.py").write_text("print('bench')\n")


def time_tar(root: Path, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["tar", "czf", str(out), "-C", str(root), "."], check=True)
    return time.perf_counter() - start


def time_pack(root: Path, ws: Workspace) -> float:
    start = time.perf_counter()
    snap = pack(root, max_bytes=400 * 1024 * 1024)
    try:
        ws.client.request("GET", f"/api/v1/snapshots/{snap.sha256}")
    except Exception:  # noqa: BLE001 - 404 is the expected answer for a new folder
        pass
    elapsed = time.perf_counter() - start
    snap.remove()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mb", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        root = tmpdir / "project"
        make_tree(root, args.files, args.mb)
        with running_server(tmpdir / "server") as client:
            ws = Workspace(str(client.base_url), token=client.headers["Authorization"].split()[1])
            tar_times, pack_times = [], []
            for _ in range(args.reps):  # interleaved, so machine noise hits both alike
                tar_times.append(time_tar(root, tmpdir / "baseline.tar.gz"))
                pack_times.append(time_pack(root, ws))
            sent: list[int] = []
            ws.client._http.event_hooks["request"].append(
                lambda request: (
                    sent.append(int(request.headers.get("content-length") or 0))
                    if request.method == "POST"
                    else None
                )
            )
            exp = Experiment(ws, "bench-snapshot")
            est = Estimator(str(root), entry_script="train.py")
            first = exp.submit(est, max_snapshot_bytes=400 * 1024 * 1024)
            second = exp.submit(est, max_snapshot_bytes=400 * 1024 * 1024)
            uploaded = [first.properties["snapshotUploaded"], second.properties["snapshotUploaded"]]
            first.wait_for_completion()
            second.wait_for_completion()
    med_tar, med_pack = statistics.median(tar_times), statistics.median(pack_times)
    print(f"folder: {args.files} files, {args.mb} MB; repetitions: {args.reps} (medians)")
    print(f"tar czf (baseline)                  {med_tar:6.2f} s")
    print(
        f"trainhub pack + hash + dedupe check {med_pack:6.2f} s   ratio {med_pack / med_tar:.2f}x (goal <= 1.2x)"
    )
    print(f"first submit:  snapshot uploaded={uploaded[0]}, request body {sent[0] / 2**20:.1f} MB")
    print(
        f"resubmission:  snapshot uploaded={uploaded[1]}, request body {sent[1]} bytes (the spec only; 0 snapshot bytes)"
    )


if __name__ == "__main__":
    main()
