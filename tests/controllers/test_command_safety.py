"""The command safety filter: what it rejects (and says), what it clips, and what it reports."""

import math

import numpy as np
import pytest

from controllers.safety import (
    CommandRejected,
    SafetyLimits,
    filter_command,
    joint_limit_guard,
    rotation_angle,
    validate_command,
)

IDENTITY = np.array([1.0, 0.0, 0.0, 0.0])
LIMITS = SafetyLimits(workspace_min=(0.3, -0.3, 0.05), workspace_max=(0.75, 0.3, 0.6),
                      max_position_step=0.05, max_rotation_step=0.2)
REF_P = np.array([0.5, 0.0, 0.3])


def about_z(angle):
    return np.array([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)])


def flag_names(cmd):
    return [f for f, _ in cmd.flags]


@pytest.mark.parametrize("position, quaternion, gripper, field, words", [
    ([0.5, np.nan, 0.3], IDENTITY, None, "position", "non-finite value at index [1]"),
    ([0.5, 0.0, np.inf], IDENTITY, None, "position", "non-finite"),
    ([0.5, 0.0], IDENTITY, None, "position", "expected shape (3,), got shape (2,)"),
    ([[0.5, 0.0, 0.3]], IDENTITY, None, "position", "got shape (1, 3)"),
    ("up", IDENTITY, None, "position", "not numeric"),
    (REF_P, [0.0, 0.0, 0.0, 0.0], None, "quaternion", "too small to normalize"),
    (REF_P, [1.0, 0.0, 0.0], None, "quaternion", "expected shape (4,)"),
    (REF_P, [np.nan, 0, 0, 1], None, "quaternion", "non-finite"),
    (REF_P, IDENTITY, np.nan, "gripper", "not finite"),
    (REF_P, IDENTITY, [0.04, 0.04], "gripper", "expected one number"),
    (REF_P, IDENTITY, "open", "gripper", "expected one number"),
    (REF_P, IDENTITY, True, "gripper", "expected one number"),
])
def test_invalid_commands_are_rejected_with_a_clear_message(position, quaternion, gripper, field, words):
    with pytest.raises(CommandRejected) as info:
        validate_command(position, quaternion, gripper)
    message = str(info.value)
    assert message.startswith(field + ":")
    assert words in message
    assert "send" in message  # says what to do instead
    with pytest.raises(ValueError):  # CommandRejected is a ValueError
        filter_command(position, quaternion, gripper, REF_P, IDENTITY, LIMITS)


def test_valid_command_passes_unchanged():
    cmd = filter_command(REF_P + [0.01, -0.02, 0.0], about_z(0.1), 0.04, REF_P, IDENTITY, LIMITS)
    np.testing.assert_allclose(cmd.position, REF_P + [0.01, -0.02, 0.0])
    np.testing.assert_allclose(cmd.quaternion, about_z(0.1))
    assert cmd.gripper == 0.04 and cmd.flags == []
    position, quaternion, gripper = validate_command([0.5, 0, 0.3], [2.0, 0, 0, 0], 1)
    np.testing.assert_allclose(quaternion, IDENTITY)
    assert gripper == 1.0 and isinstance(gripper, float)


def test_workspace_clip_reports_axis_value_and_bound():
    ref = np.array([0.74, 0.0, 0.3])
    cmd = filter_command([0.91, 0.0, 0.3], IDENTITY, None, ref, IDENTITY, LIMITS)
    np.testing.assert_allclose(cmd.position, [0.75, 0.0, 0.3])
    assert cmd.flags == [("workspace_clipped", "x=0.910 m above workspace max 0.750 m")]
    cmd = filter_command([0.74, 0.0, 0.01], IDENTITY, None, ref, IDENTITY, LIMITS)
    assert cmd.position[2] >= 0.05
    assert "z=0.010 m below workspace min 0.050 m" in dict(cmd.flags)["workspace_clipped"]


def test_position_step_is_capped_along_the_commanded_direction():
    rng = np.random.default_rng(0)
    for _ in range(50):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        target = REF_P + direction * rng.uniform(0.06, 0.15)
        cmd = filter_command(target, IDENTITY, None, REF_P, IDENTITY, LIMITS)
        box = np.clip(target, LIMITS.workspace_min, LIMITS.workspace_max)
        step = cmd.position - REF_P
        assert np.linalg.norm(step) <= 0.05 + 1e-12
        if np.linalg.norm(box - REF_P) > 0.05:
            np.testing.assert_allclose(np.linalg.norm(step), 0.05, rtol=1e-12)
            np.testing.assert_allclose(step / np.linalg.norm(step), (box - REF_P) / np.linalg.norm(box - REF_P))
            assert "position_step_capped" in flag_names(cmd)


def test_rotation_step_is_capped_by_slerp():
    ref = about_z(0.3)
    cmd = filter_command(REF_P, about_z(1.3), None, REF_P, ref, LIMITS)
    np.testing.assert_allclose(cmd.quaternion, about_z(0.5), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(cmd.quaternion), 1.0)
    assert flag_names(cmd) == ["rotation_step_capped"]
    assert "1.0000 rad capped at 0.2000 rad" in cmd.flags[0][1]
    # -q is the same target: it must not be taken the long way round.
    cmd = filter_command(REF_P, -about_z(0.4), None, REF_P, ref, LIMITS)
    assert rotation_angle(cmd.quaternion, about_z(0.4)) < 1e-9 and cmd.flags == []


def test_reference_outside_the_box_walks_back_in_by_steps():
    position = np.array([0.5, 0.0, 0.8])  # 0.2 m above the box
    for n in range(10):
        cmd = filter_command([0.5, 0.0, 0.9], IDENTITY, None, position, IDENTITY, LIMITS)
        assert np.linalg.norm(cmd.position - position) <= 0.05 + 1e-12
        position = cmd.position
        if n < 3:
            assert "outside_workspace" in flag_names(cmd)
    np.testing.assert_allclose(position, [0.5, 0.0, 0.6])
    assert flag_names(cmd) == ["workspace_clipped"]


def test_gripper_and_quaternion_norm_are_fixed_and_flagged():
    cmd = filter_command(REF_P, 2.0 * IDENTITY, 0.12, REF_P, IDENTITY, LIMITS)
    assert cmd.gripper == 0.08
    np.testing.assert_allclose(cmd.quaternion, IDENTITY)
    assert flag_names(cmd) == ["quaternion_normalized", "gripper_clipped"]
    assert filter_command(REF_P, IDENTITY, -0.01, REF_P, IDENTITY, LIMITS).gripper == 0.0
    # float32 round-off is normal and not worth a flag
    cmd = filter_command(REF_P, np.float32(about_z(0.1)), 0.0, REF_P, IDENTITY, LIMITS)
    assert cmd.flags == []


def test_broken_reference_or_limits_fail_loudly():
    with pytest.raises(ValueError, match="reference pose"):
        filter_command(REF_P, IDENTITY, None, [np.nan, 0, 0], IDENTITY, LIMITS)
    with pytest.raises(ValueError, match="workspace_min"):
        SafetyLimits(workspace_min=(1.0, 0, 0), workspace_max=(0.5, 1, 1))
    with pytest.raises(ValueError, match="max_position_step"):
        SafetyLimits(max_position_step=0.0)


def test_joint_limit_guard():
    home = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
    assert joint_limit_guard(home) == []
    near = home.copy()
    near[3] = -3.05  # 0.022 rad from joint 4's lower limit -3.0718
    near[5] = 3.80  # beyond joint 6's upper limit 3.7525
    flags = joint_limit_guard(near, margin=0.05)
    assert [f for f, _ in flags] == ["joint_near_limit", "joint_near_limit"]
    assert flags[0][1] == "joint 4 q=-3.0500 rad within 0.050 rad of lower limit -3.0718 rad"
    assert flags[1][1] == "joint 6 q=3.8000 rad beyond upper limit 3.7525 rad"
    assert joint_limit_guard(near, margin=0.0)[0][1].startswith("joint 6")
    bad = home.copy()
    bad[0] = np.nan
    assert joint_limit_guard(bad)[0][0] == "joint_state_invalid"
    assert joint_limit_guard(home[:6])[0][0] == "joint_state_invalid"


def test_a_reference_that_overshot_a_face_gets_a_target_back_inside_the_box():
    # The tcp (the server's reference) is 1 cm above the top face; a push sideways and up would
    # otherwise keep the capped target outside, and the tcp would chase it further out.
    top = LIMITS.workspace_max[2]
    overshot = np.array([0.5, 0.0, top + 0.01])
    cmd = filter_command([-5.0, 0.0, 3.0], IDENTITY, None, overshot, IDENTITY, LIMITS)
    assert cmd.position[2] <= top + 1e-12
    assert (cmd.position >= np.asarray(LIMITS.workspace_min) - 1e-12).all()
    assert np.linalg.norm(cmd.position - overshot) <= LIMITS.max_position_step + 0.01 + 1e-12
    assert "outside_workspace" in flag_names(cmd)
    assert "clipped back into the box" in dict(cmd.flags)["outside_workspace"]


def test_a_quaternion_of_huge_components_is_normalized_not_lost():
    cmd = filter_command(REF_P, 1e200 * about_z(0.1), None, REF_P, IDENTITY, LIMITS)
    assert rotation_angle(cmd.quaternion, about_z(0.1)) < 1e-9
    assert "quaternion_normalized" in flag_names(cmd)
