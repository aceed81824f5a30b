"""Capture-to-observation latency of the camera server (robostack/cameras/server.py), measured in
one run on this machine:

    raw over ipc and JPEG over loopback tcp, at 128x128 and 640x480, synthetic camera at --fps

Latency is from the frame's capture_time (stamped by the camera's capture thread, in the server
process) to the moment CameraStream in this process holds it as a validated, decoded Frame
(JPEG decode and the raw copy included): what an env observation waits for. The consumer blocks
in poll() for each frame, so reading rarely adds nothing here (an env reading at its step rate
adds up to one period of its own).

Baseline, same run: the same synthetic camera in this process, read with wait_next(): the
capture thread's handoff alone, no socket, no encoding. Ratios are transport / baseline. The
server is a subprocess so the two sides do not share a GIL; on a loaded machine the absolute
numbers move, and p95 most.

    python benchmarks/bench_camera_latency.py            # ~20 s
    python benchmarks/bench_camera_latency.py --seconds 5 --fps 60
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
try:
    import robostack  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from robostack.cameras.stream import CameraStream  # noqa: E402
from robostack.cameras.synthetic import SyntheticCamera  # noqa: E402
from robostack.transport.endpoints import free_tcp_endpoint, ipc_endpoint  # noqa: E402

SIZES = [(128, 128), (640, 480)]


def summary(latencies: list[float]) -> tuple[float, float, int]:
    a = np.array(latencies) * 1e3
    return float(np.median(a)), float(np.percentile(a, 95)), len(a)


def baseline(width: int, height: int, fps: float, seconds: float) -> list[float]:
    out = []
    with SyntheticCamera("bench", width, height, fps) as cam:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            frame = cam.wait_next(timeout=1.0)
            out.append(time.monotonic() - frame.capture_time)
    return out


def over_server(width: int, height: int, fps: float, seconds: float, encoding: str,
                quality: int) -> tuple[list[float], dict]:
    endpoint = ipc_endpoint(f"bench-{uuid.uuid4().hex[:8]}") if encoding == "raw" else free_tcp_endpoint()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "robostack.cameras.server", "--cameras", f"cam=synthetic,{width}x{height},{fps}",
         "--endpoint", endpoint, "--encoding", encoding, "--jpeg-quality", str(quality), "--log-level", "WARNING"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30.0)
        if not ready or "publishing" not in proc.stdout.readline():
            raise SystemExit("the camera server did not start")
        out = []
        with CameraStream(endpoint, ["cam"], max_age=1.0) as stream:
            stream.latest("cam")  # connected and flowing; the first frames include the join
            cam = stream.cameras["cam"]
            last = cam.frame.seq
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                stream.poll(1.0)
                if cam.frame is not None and cam.frame.seq != last:
                    out.append(time.monotonic() - cam.frame.capture_time)
                    last = cam.frame.seq
            stats = stream.stats()
        return out, stats
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per case (default 3)")
    parser.add_argument("--fps", type=float, default=30.0, help="synthetic camera rate (default 30)")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality (default 90)")
    args = parser.parse_args(argv)

    print(f"capture -> observation latency, synthetic camera at {args.fps:g} fps, "
          f"{args.seconds:g} s per case, JPEG quality {args.jpeg_quality}")
    print(f"{'case':<24}{'median ms':>10}{'p95 ms':>9}{'frames':>8}{'x base med':>11}{'x base p95':>11}")
    for width, height in SIZES:
        base_med, base_p95, n = summary(baseline(width, height, args.fps, args.seconds))
        print(f"{f'in-process {width}x{height}':<24}{base_med:>10.3f}{base_p95:>9.3f}{n:>8}{1:>11.1f}{1:>11.1f}")
        for encoding, via in (("raw", "ipc"), ("jpeg", "tcp")):
            lat, stats = over_server(width, height, args.fps, args.seconds, encoding, args.jpeg_quality)
            med, p95, n = summary(lat)
            cam = stats["cameras"]["cam"]
            print(f"{f'{encoding}/{via} {width}x{height}':<24}{med:>10.3f}{p95:>9.3f}{n:>8}"
                  f"{med / base_med:>11.1f}{p95 / base_p95:>11.1f}"
                  f"   (server_dropped {cam['server_dropped']}, rejected {sum(stats['rejected'].values())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
