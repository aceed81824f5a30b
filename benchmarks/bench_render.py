"""What a simulated camera frame costs: MuJoCo's default visual settings against the lean ones
sim/mujoco_cameras.py uses, at 128 x 128 and 640 x 480, with the coarse and full robot meshes;
and the lock-step budget of a pick_cube env step (100 physics ticks at 1 ms + two 128 x 128
frames), physics and frames alone, without the ZeroMQ round trip.

    MUJOCO_GL=egl OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_render.py [--frames 60]

"default" is `mujoco.Renderer` as it comes (4x multisampling, shadows, reflections, skybox, all
geom groups: collision and visual meshes both drawn); "lean" is `MujocoCameras`.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402

from sim.mujoco_cameras import MujocoCameras  # noqa: E402
from sim.mujoco_scene import compile_scene  # noqa: E402
from sim.scene import Camera  # noqa: E402
from tasks.common import front_camera, wrist_camera  # noqa: E402
from tasks.pick_cube import PickCube  # noqa: E402


def _scene(size):
    width, height = size
    base = PickCube().build_scene()
    front, wrist = front_camera(0.0), wrist_camera()
    cameras = tuple(Camera(c.name, c.position, look_at=c.look_at, fovy=c.fovy, width=width,
                           height=height, attached_to=c.attached_to) for c in (front, wrist))
    return type(base)(table=base.table, objects=base.objects, cameras=cameras)


def _state(model):
    data = mujoco.MjData(model)
    data.qpos[:7] = PickCube().config.home_q
    mujoco.mj_forward(model, data)
    return data


def _time(render, frames):
    render()  # first frame uploads and warms up
    start = time.perf_counter()
    for _ in range(frames):
        render()
    return (time.perf_counter() - start) / frames


def default_frame(model, data, size, frames):
    renderer = mujoco.Renderer(model, size[1], size[0])
    model.vis.quality.offsamples = 4  # MuJoCo's default, whatever the scene compiler chose

    def render():
        renderer.update_scene(data, "front")
        return renderer.render()
    try:
        return _time(render, frames)
    finally:
        renderer.close()


def ablation(model, data, size, frames):
    """What each cut saves: `mujoco.Renderer` from its defaults, cutting one thing after another."""
    steps = []
    for samples in (4, 0):
        model.vis.quality.offsamples = samples
        renderer = mujoco.Renderer(model, size[1], size[0])
        option = mujoco.MjvOption()
        settings = [("defaults" if samples else "no multisampling", lambda: None)]
        if not samples:
            def no_effects():
                for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                             mujoco.mjtRndFlag.mjRND_SKYBOX):
                    renderer.scene.flags[flag] = 0

            def camera_groups():
                option.geomgroup[:] = [g in (0, 2) for g in range(len(option.geomgroup))]
            settings += [("+ no shadows/reflections/skybox", no_effects),
                         ("+ only scene and visual geom groups", camera_groups)]
        for label, apply in settings:
            apply()

            def render():
                renderer.update_scene(data, "front", scene_option=option)
                # update_scene resets nothing in scene.flags: the flags set above stay.
                return renderer.render()
            steps.append((label, _time(render, frames)))
        renderer.close()
    model.vis.quality.offsamples = 4
    return steps


def lean_frame(model, data, frames):
    with MujocoCameras(model, data) as cameras:
        return _time(lambda: cameras.render("front"), frames)


def env_step(model, frames):
    """Seconds per env step: 100 physics ticks, then both cameras."""
    data = _state(model)
    with MujocoCameras(model, data) as cameras:
        def step():
            for _ in range(100):
                mujoco.mj_step(model, data)
            cameras.render("front")
            cameras.render("wrist")
        physics = _time(lambda: [mujoco.mj_step(model, data) for _ in range(100)], frames)
        total = _time(step, frames)
    return physics, total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=60, help="frames timed per setting")
    args = parser.parse_args()
    print(f"MUJOCO_GL={os.environ['MUJOCO_GL']}  frames per figure: {args.frames}")
    for visual in ("coarse", "full"):
        for size in ((128, 128), (640, 480)):
            start = time.perf_counter()
            model = compile_scene(_scene(size), visual=visual)
            compile_s = time.perf_counter() - start
            data = _state(model)
            default = default_frame(model, data, size, args.frames)
            lean = lean_frame(model, data, args.frames)
            print(f"{visual:6s} {size[0]:3d}x{size[1]:<3d}  compile {compile_s * 1e3:6.0f} ms  "
                  f"default {default * 1e3:7.2f} ms/frame  lean {lean * 1e3:6.2f} ms/frame  "
                  f"ratio {default / lean:5.1f}x")
            for label, seconds in ablation(model, data, size, args.frames):
                print(f"    {label:38s} {seconds * 1e3:7.2f} ms/frame")
    start = time.perf_counter()
    compile_scene(_scene((128, 128)), visual="none")
    print(f"model without visual meshes: compile {(time.perf_counter() - start) * 1e3:.0f} ms")
    for visual in ("coarse", "full"):
        model = compile_scene(_scene((128, 128)), visual=visual)
        physics, total = env_step(model, args.frames)
        print(f"{visual:6s} env step (100 ticks + 2 x 128x128 frames): physics {physics * 1e3:.2f} ms, "
              f"total {total * 1e3:.2f} ms -> {1 / total:.0f} steps/s before the wire")


if __name__ == "__main__":
    main()
