"""Admittance against the table in the MuJoCo mirror's position-controlled mode (issue 16):
the closed fingers pressed with a target 10 cm below the table top, for two force bounds and
three approach speeds; the contact force as MuJoCo's contact solution gives it.

    .venv/bin/python benchmarks/bench_admittance.py

Target: peak and steady contact force <= bound + 3 N. The impact depends on the approach speed
(the arm's inertia carried into the table by a stiff servo); the steady force is the law's bound.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from sim.admittance_press import approach_gains, closed_gripper_mirror, press  # noqa: E402
from sim.mujoco_scene import compile_scene  # noqa: E402
from tasks import make_task  # noqa: E402


def main() -> int:
    scene = make_task("reach").build_scene()
    mirror = closed_gripper_mirror(compile_scene(scene))
    print("bound N  approach m/s  start mm  peak N  steady N  estimate N  tcp mm  within bound+3 N  wall s")
    ok = True
    for bound in (10.0, 20.0):
        for speed, start in ((0.005, 0.01), (0.01, 0.01), (0.02, 0.01), (None, 0.05)):
            gains = approach_gains(bound, speed)
            t0 = time.perf_counter()
            r = press(mirror, scene.table.height, gains, start_height=start)
            within = r.peak_force <= bound + 3.0 and r.steady_force <= bound + 3.0
            ok &= within or speed is None or speed > 0.01
            label = f"{gains.max_velocity:.3f}" if speed else f"{(bound - gains.dead_band) / gains.damping:.3f}*"
            print(f"{bound:7.0f}  {label:>12}  {start * 1e3:8.0f}  {r.peak_force:6.2f}  {r.steady_force:8.2f}  "
                  f"{r.estimated_force:10.2f}  {r.tcp_height * 1e3:6.1f}  {'yes' if within else 'NO':>16}  "
                  f"{time.perf_counter() - t0:6.2f}")
    print("* the free-space speed the damper allows: (bound - dead band) / damping")
    print(f"target (peak and steady <= bound + 3 N at approach speeds <= 0.01 m/s): {'met' if ok else 'MISSED'}")
    mirror.backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
