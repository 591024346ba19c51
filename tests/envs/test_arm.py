"""Tests of the robot-arm environment (envs/arm_reach.py): dynamics against textbook and finite-difference
references, conservation laws of the integrator, the scripted controller, determinism, conformance and errors."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs  # noqa: F401  (registers the ids)
from envs.arm_reach import (
    ArmCore,
    ArmReachEnv,
    ArmReachVectorEnv,
    bias_torques,
    fingertip_jacobian,
    forward_dynamics,
    forward_kinematics,
    inertia_coefficients,
    inverse_kinematics,
    kinetic_energy,
    mass_matrix,
    potential_energy,
    render_arm,
    scripted_reach_action,
    split_observation,
)
from envs.core import InvalidActionError

ARM_IDS = ("rlopt/ArmReach-v0", "rlopt/ArmReach3-v0")


def random_arm(num_links: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unequal link lengths and masses, so that no formula passes by symmetry."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 0.2, num_links), rng.uniform(0.2, 1.5, num_links)


def finite_difference_kinetic_energy(q, qd, lengths, masses, eps=1e-6):
    """Sum over links of 1/2 m |v_centre|^2 + 1/2 (m l^2 / 12) omega^2, velocities by central differences of FK."""

    def centres(angles):
        points = forward_kinematics(angles, lengths)
        return 0.5 * (points[..., :-1, :] + points[..., 1:, :])

    velocity = (centres(q + eps * qd) - centres(q - eps * qd)) / (2 * eps)
    omega = np.cumsum(qd, axis=-1)
    translation = 0.5 * np.sum(masses * np.sum(velocity**2, axis=-1), axis=-1)
    rotation = 0.5 * np.sum(masses * lengths**2 / 12.0 * omega**2, axis=-1)
    return translation + rotation


def energy_gradient(q, qd, lengths, masses, eps=1e-6):
    """dT/dq by central differences of kinetic_energy, shape like q."""
    gradient = np.zeros_like(q)
    for j in range(q.shape[-1]):
        shift = np.zeros(q.shape[-1])
        shift[j] = eps
        upper = kinetic_energy(q + shift, qd, lengths, masses)
        lower = kinetic_energy(q - shift, qd, lengths, masses)
        gradient[..., j] = (upper - lower) / (2 * eps)
    return gradient


# --- kinematics and dynamics against references --------------------------------------------------------------------


def test_forward_kinematics_known_poses():
    lengths = np.array([0.1, 0.11])
    straight = forward_kinematics(np.zeros(2), lengths)
    np.testing.assert_allclose(straight, [[0, 0], [0.1, 0], [0.21, 0]], atol=1e-15)
    up_then_left = forward_kinematics(np.array([np.pi / 2, np.pi / 2]), lengths)
    np.testing.assert_allclose(up_then_left[-1], [-0.11, 0.1], atol=1e-15)


def test_fingertip_jacobian_matches_finite_differences():
    lengths, _ = random_arm(4, seed=1)
    q = np.random.default_rng(2).uniform(-np.pi, np.pi, (5, 4))
    eps = 1e-6
    numeric = np.stack(
        [
            (
                forward_kinematics(q + eps * np.eye(4)[j], lengths)[:, -1]
                - forward_kinematics(q - eps * np.eye(4)[j], lengths)[:, -1]
            )
            / (2 * eps)
            for j in range(4)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(fingertip_jacobian(q, lengths), numeric, atol=1e-8)


@pytest.mark.parametrize("num_links", [2, 3, 5])
def test_mass_matrix_symmetric_positive_definite(num_links):
    lengths, masses = random_arm(num_links, seed=num_links)
    q = np.random.default_rng(0).uniform(-np.pi, np.pi, (200, num_links))
    inertia = mass_matrix(q, lengths, masses)
    assert inertia.shape == (200, num_links, num_links)
    np.testing.assert_allclose(inertia, np.swapaxes(inertia, -1, -2), atol=1e-15)
    assert np.linalg.eigvalsh(inertia).min() > 0.0


def test_two_link_mass_matrix_and_bias_match_textbook():
    # Spong, Hutchinson and Vidyasagar, "Robot Modeling and Control" (2006), section 7.4: the two-link planar
    # arm with centres of mass at lc_i and inertias I_i about them.
    (l1, l2), (m1, m2) = random_arm(2, seed=7)
    lc1, lc2 = l1 / 2, l2 / 2
    inertia1, inertia2 = m1 * l1**2 / 12, m2 * l2**2 / 12
    rng = np.random.default_rng(3)
    q = rng.uniform(-np.pi, np.pi, (50, 2))
    qd = rng.uniform(-5, 5, (50, 2))
    g = 9.81
    c2 = np.cos(q[:, 1])
    d11 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * c2) + inertia1 + inertia2
    d12 = m2 * (lc2**2 + l1 * lc2 * c2) + inertia2
    d22 = np.full_like(d11, m2 * lc2**2 + inertia2)
    expected = np.stack([np.stack([d11, d12], -1), np.stack([d12, d22], -1)], -2)
    np.testing.assert_allclose(mass_matrix(q, [l1, l2], [m1, m2]), expected, rtol=1e-12)

    h = -m2 * l1 * lc2 * np.sin(q[:, 1])
    coriolis = np.stack([h * (2 * qd[:, 0] * qd[:, 1] + qd[:, 1] ** 2), -h * qd[:, 0] ** 2], -1)
    phi2 = m2 * lc2 * g * np.cos(q[:, 0] + q[:, 1])
    phi1 = (m1 * lc1 + m2 * l1) * g * np.cos(q[:, 0]) + phi2
    gravity = np.stack([phi1, phi2], -1)
    np.testing.assert_allclose(bias_torques(q, qd, [l1, l2], [m1, m2], gravity=g), coriolis + gravity, rtol=1e-10)


@pytest.mark.parametrize("num_links", [2, 3, 4])
def test_kinetic_energy_matches_link_velocities(num_links):
    lengths, masses = random_arm(num_links, seed=10 + num_links)
    rng = np.random.default_rng(4)
    q = rng.uniform(-np.pi, np.pi, (20, num_links))
    qd = rng.uniform(-3, 3, (20, num_links))
    np.testing.assert_allclose(
        kinetic_energy(q, qd, lengths, masses), finite_difference_kinetic_energy(q, qd, lengths, masses), rtol=1e-7
    )


@pytest.mark.parametrize("num_links", [2, 3, 4])
def test_bias_torques_follow_from_the_lagrangian(num_links):
    # c(q, qd) = dM/dt qd - dT/dq and g(q) = dV/dq, each by central differences of M, T and V
    lengths, masses = random_arm(num_links, seed=20 + num_links)
    rng = np.random.default_rng(5)
    q = rng.uniform(-np.pi, np.pi, (10, num_links))
    qd = rng.uniform(-3, 3, (10, num_links))
    eps, g = 1e-6, 9.81
    inertia_rate = (mass_matrix(q + eps * qd, lengths, masses) - mass_matrix(q - eps * qd, lengths, masses)) / (2 * eps)
    coriolis = np.einsum("bkl,bl->bk", inertia_rate, qd) - energy_gradient(q, qd, lengths, masses)
    potential_gradient = np.stack(
        [
            (
                potential_energy(q + eps * np.eye(num_links)[j], lengths, masses, g)
                - potential_energy(q - eps * np.eye(num_links)[j], lengths, masses, g)
            )
            / (2 * eps)
            for j in range(num_links)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(
        bias_torques(q, qd, lengths, masses, gravity=g), coriolis + potential_gradient, atol=1e-7
    )


def test_inertia_coefficients_of_a_single_rod_and_a_tip_mass():
    # one rod about its hinge: m l^2 / 3; a second, distal rod adds its full mass at the first link's end
    coefficients = inertia_coefficients([0.3, 0.2], [2.0, 1.0])
    np.testing.assert_allclose(coefficients[1, 1], 1.0 * 0.2**2 / 3)
    np.testing.assert_allclose(coefficients[0, 0], 2.0 * 0.3**2 / 3 + 1.0 * 0.3**2)
    np.testing.assert_allclose(coefficients[0, 1], 0.3 * 0.2 * 1.0 / 2)


# --- the core's integrator -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_links", [2, 3, 4])
def test_one_substep_is_symplectic_euler_of_the_reference_dynamics(num_links):
    # the momentum-form symplectic Euler step, written with the joint-space reference functions:
    # M(q) v = M(q) qd + h (tau - D v - g(q) + dT/dq(q, v)),  q' = q + h v,  qd' = M(q')^{-1} M(q) v
    lengths, masses = random_arm(num_links, seed=30 + num_links)
    rng = np.random.default_rng(6)
    count = 6
    q = rng.uniform(-np.pi, np.pi, (count, num_links))
    qd = rng.uniform(-2, 2, (count, num_links))
    actions = rng.uniform(-1, 1, (count, num_links)).astype(np.float32)
    core = ArmCore(
        count,
        num_links=num_links,
        link_lengths=lengths,
        link_masses=masses,
        damping=0.3,
        torque_limit=2.0,
        substeps=1,
        gravity=9.81,
    )
    core.newton_iterations = 8  # converge the implicit step, to compare with the converged reference
    core.set_state(q, qd)
    np.testing.assert_allclose(core.joint_velocities, qd, atol=1e-12)
    core.step(actions, None)

    h = core.dt
    inertia = mass_matrix(q, lengths, masses)
    momentum = np.einsum("bkl,bl->bk", inertia, qd)
    gravity = bias_torques(q, np.zeros_like(q), lengths, masses, gravity=9.81)
    velocity = qd.copy()
    for _ in range(40):
        right = momentum + h * (2.0 * actions - gravity + energy_gradient(q, velocity, lengths, masses))
        velocity = np.linalg.solve(inertia + h * 0.3 * np.eye(num_links), right[..., None])[..., 0]
    next_q = q + h * velocity
    next_qd = np.linalg.solve(mass_matrix(next_q, lengths, masses), (inertia @ velocity[..., None]))[..., 0]
    wrapped = np.angle(np.exp(1j * (core.joint_angles - next_q)))
    # float32 trigonometry in the core (documented) limits the agreement to about 1e-6 relative
    np.testing.assert_allclose(wrapped, 0.0, atol=1e-7)
    np.testing.assert_allclose(core.joint_velocities, next_qd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_links", [2, 3, 5])
def test_core_accelerations_match_forward_dynamics(num_links):
    # over a tiny step the core's velocity change is the reference forward dynamics (np.linalg.solve in joint
    # space); undamped, as the core takes damping implicitly (checked in the next test)
    lengths, masses = random_arm(num_links, seed=40 + num_links)
    rng = np.random.default_rng(13)
    q = rng.uniform(-np.pi, np.pi, (8, num_links))
    qd = rng.uniform(-2, 2, (8, num_links))
    actions = rng.uniform(-1, 1, (8, num_links)).astype(np.float32)
    options = {"link_lengths": lengths, "link_masses": masses, "damping": 0.0, "torque_limit": 1.5, "gravity": 9.81}
    core = ArmCore(8, num_links=num_links, dt=1e-5, substeps=1, **options)
    core.set_state(q, qd)
    core.step(actions, None)
    expected = forward_dynamics(q, qd, 1.5 * actions, lengths, masses, gravity=9.81)
    scale = np.abs(expected).max()
    np.testing.assert_allclose((core.joint_velocities - qd) / 1e-5, expected, rtol=1e-3, atol=1e-3 * scale)


@pytest.mark.parametrize("num_links", [2, 3])
def test_default_newton_iterations_match_the_converged_step(num_links):
    # an episode of bang-bang torques, the hardest case for the implicit solve's first guess
    count = 64
    cores = [ArmCore(count, num_links=num_links) for _ in range(2)]
    cores[1].newton_iterations = 10
    for core in cores:
        core.rng.seed(np.arange(count), list(range(count)))
        core.reset_envs(np.arange(count))
    rng = np.random.default_rng(12)
    for _ in range(50):
        actions = np.sign(rng.uniform(-1, 1, (count, num_links))).astype(np.float32)
        for core in cores:
            core.step(actions, None)
        # measured: 6e-4 (2 links) and 4e-3 rad/s (3 links), at joint speeds up to 30 rad/s
        np.testing.assert_allclose(cores[0].joint_velocities, cores[1].joint_velocities, rtol=0, atol=0.02)


def run_free_motion(num_links: int, substeps: int, total_substeps: int, seed: int = 0, count: int = 32):
    """Undamped, unactuated arms from random poses at up to 1 rad/s per joint: relative energy error per step, the
    angular momentum about the base at the start and end, and the integrator's own momenta at the start and end."""
    core = ArmCore(count, num_links=num_links, damping=0.0, substeps=substeps)
    rng = np.random.default_rng(seed)
    q = rng.uniform(-np.pi, np.pi, (count, num_links))
    qd = rng.uniform(-1.0, 1.0, (count, num_links))
    core.set_state(q, qd)
    state0 = core.momentum.sum(axis=0)  # sum of the absolute angles' momenta: the angular momentum
    energy0 = kinetic_energy(q, qd, core.link_lengths, core.link_masses)
    momentum0 = (mass_matrix(q, core.link_lengths, core.link_masses) @ qd[..., None])[:, 0, 0]
    zero = np.zeros((count, num_links), dtype=np.float32)
    errors = []
    for _ in range(total_substeps // substeps):
        core.step(zero, None)
        energy = kinetic_energy(core.joint_angles, core.joint_velocities, core.link_lengths, core.link_masses)
        errors.append(np.max(np.abs(energy / energy0 - 1.0)))
    q, qd = core.joint_angles, core.joint_velocities
    momentum = (mass_matrix(q, core.link_lengths, core.link_masses) @ qd[..., None])[:, 0, 0]
    return np.array(errors), (momentum0, momentum), (state0, core.momentum.sum(axis=0))


@pytest.mark.parametrize("num_links", [2, 3])
def test_free_motion_conserves_energy_and_angular_momentum(num_links):
    # Symplectic Euler keeps the energy error bounded and of order h (no drift). Stated tolerance: at the default
    # h = 5 ms and up to 1 rad/s per joint, within 3% over 1000 substeps, and halving h roughly halves it.
    errors, (momentum0, momentum), (state0, state) = run_free_motion(num_links, substeps=4, total_substeps=1000)
    assert errors.max() < 0.03, f"kinetic energy changed by {errors.max():.2%}"  # measured: 0.6% and 1.5%
    finer, _, _ = run_free_motion(num_links, substeps=8, total_substeps=2000)
    assert finer.max() < 0.65 * errors.max(), "energy error is not first order in h"  # measured: 0.50
    # no torque about the base: its angular momentum is a linear invariant, which symplectic Euler keeps to
    # rounding; read out through the float32 trigonometry, to about 1e-7
    scale = np.abs(momentum0).max()
    np.testing.assert_allclose(state, state0, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(momentum, momentum0, rtol=0, atol=1e-6 * scale)


def test_free_motion_energy_error_does_not_drift():
    errors, _, _ = run_free_motion(3, substeps=4, total_substeps=8000)
    early, late = errors[:250].max(), errors[-250:].max()
    assert late < 1.5 * early, f"energy error grew from {early:.2%} to {late:.2%}"


def test_gravity_exchanges_kinetic_and_potential_energy():
    count = 16
    core = ArmCore(count, num_links=2, damping=0.0, gravity=9.81)
    rng = np.random.default_rng(8)
    # released from rest up to 0.8 rad from hanging straight down: a double pendulum swinging, not whirling
    q = rng.uniform(-0.8, 0.8, (count, 2)) + np.array([-np.pi / 2, 0.0])
    core.set_state(q, np.zeros((count, 2)))
    lengths, masses = core.link_lengths, core.link_masses

    def total():
        angles = core.joint_angles
        return kinetic_energy(angles, core.joint_velocities, lengths, masses) + potential_energy(
            angles, lengths, masses, 9.81
        )

    scale = 9.81 * masses.sum() * core.reach  # the energy scale of a fall through the reach
    start = total()
    swings = []
    for _ in range(250):
        core.step(np.zeros((count, 2), dtype=np.float32), None)
        swings.append(np.abs(total() - start).max() / scale)
    kinetic = kinetic_energy(core.joint_angles, core.joint_velocities, lengths, masses)
    assert kinetic.max() > 0.05 * scale  # the arms did fall
    assert max(swings) < 0.02


def test_damping_dissipates_energy():
    core = ArmCore(8, num_links=3, damping=0.05)
    rng = np.random.default_rng(9)
    core.set_state(rng.uniform(-1, 1, (8, 3)), rng.uniform(-3, 3, (8, 3)))
    lengths, masses = core.link_lengths, core.link_masses
    start = previous = kinetic_energy(core.joint_angles, core.joint_velocities, lengths, masses)
    for _ in range(50):
        core.step(np.zeros((8, 3), dtype=np.float32), None)
        energy = kinetic_energy(core.joint_angles, core.joint_velocities, lengths, masses)
        assert np.all(energy <= previous * (1 + 1e-9))
        previous = energy
    assert np.all(previous < 0.5 * start)


@pytest.mark.parametrize("num_links", [2, 3])
def test_random_and_bang_bang_torques_stay_finite(num_links):
    count = 64
    core = ArmCore(count, num_links=num_links)
    core.reset_envs(np.arange(count))
    rng = np.random.default_rng(10)
    fastest = 0.0
    for t in range(1500):
        actions = rng.uniform(-1, 1, (count, num_links))
        if t % 2:
            actions = np.sign(actions)  # saturated torques, the hardest case
        core.step(actions.astype(np.float32), None)
        fastest = max(fastest, float(np.abs(core.joint_velocities).max()))
    observation = core.observe()
    assert np.all(np.isfinite(observation)) and np.all(np.isfinite(core.momentum))
    assert fastest < 100.0  # damping bounds the joint speeds (about 40 rad/s at full torque)


def test_runaway_undamped_arm_raises_a_clear_error():
    # no damping and a constant push: the arm spins up without bound until a substep turns it by over a radian
    core = ArmCore(2, num_links=2, damping=0.0, dt=0.05, substeps=1, torque_limit=5.0)
    core.reset_envs(np.arange(2))
    push = np.ones((2, 2), dtype=np.float32)
    with pytest.raises(FloatingPointError, match="raise damping"):
        for _ in range(1000):
            core.step(push, None)


def test_inactive_envs_are_untouched_and_earn_nothing():
    core = ArmCore(4, num_links=3)
    core.reset_envs(np.arange(4))
    before = core.observe()
    active = np.array([True, False, True, False])
    reward, terminated, truncated, info = core.step(np.full((4, 3), 0.7, dtype=np.float32), active)
    after = core.observe()
    np.testing.assert_array_equal(after[~active], before[~active])
    assert not np.array_equal(after[active], before[active])
    assert np.all(reward[~active] == 0.0) and np.all(reward[active] < 0.0)
    assert not info["is_success"][~active].any()
    for term in info["reward_terms"].values():
        assert np.all(term[~active] == 0.0)
    assert not terminated.any() and not truncated.any()


# --- inverse kinematics and the scripted controller ----------------------------------------------------------------


@pytest.mark.parametrize("num_links", [2, 3, 4])
def test_inverse_kinematics_reaches_the_target_distribution(num_links):
    core = ArmCore(500, num_links=num_links)
    core.rng.seed(np.arange(500), list(range(500)))
    core.reset_envs(np.arange(500))
    angles = inverse_kinematics(core.target, core.link_lengths)
    tips = forward_kinematics(angles, core.link_lengths)[:, -1]
    assert np.abs(tips - core.target).max() < 1e-6


@pytest.mark.parametrize("env_id", ARM_IDS)
def test_scripted_controller_reaches_most_targets(env_id):
    count = 100
    env = gym.make_vec(env_id, num_envs=count, autoreset_mode="Disabled")
    core = env.core
    observation, _ = env.reset(seed=2024)
    reached = np.zeros(count, dtype=bool)
    for _ in range(50):
        actions = scripted_reach_action(
            observation, core.link_lengths, core.link_masses, core.torque_limit, core.damping, core.gravity
        )
        assert actions.dtype == np.float32 and np.abs(actions).max() <= 1.0  # within the torque limits
        observation, _, terminated, truncated, info = env.step(actions)
        reached |= info["is_success"]
    assert truncated.all() and not terminated.any()  # 50 steps from the registration
    assert reached.mean() >= 0.8, f"reached {reached.mean():.0%} of the targets"
    assert info["is_success"].mean() >= 0.8  # and holds them at the end
    env.close()


def test_scripted_controller_holds_a_vertical_arm_against_gravity():
    env = gym.make("rlopt/ArmReach-v0", gravity=9.81, torque_limit=3.0)
    core = env.unwrapped.core
    observation, _ = env.reset(seed=5)
    for _ in range(50):
        action = scripted_reach_action(
            observation[None], core.link_lengths, core.link_masses, core.torque_limit, core.damping, core.gravity
        )[0]
        observation, _, _, _, info = env.step(action)
    assert info["is_success"]


# --- the task: observation, reward, success ------------------------------------------------------------------------


def test_observation_layout_and_reward():
    core = ArmCore(3, num_links=3, control_cost_weight=0.25)
    rng = np.random.default_rng(11)
    q, qd = rng.uniform(-2, 2, (3, 3)), rng.uniform(-1, 1, (3, 3))
    target = rng.uniform(-0.1, 0.1, (3, 2))
    core.set_state(q, qd, target)
    observation = core.observe()
    assert observation.shape == (3, 13) and observation.dtype == np.float32
    parts = split_observation(observation, 3)
    np.testing.assert_allclose(parts["joint_angles"], np.angle(np.exp(1j * q)), atol=1e-6)
    np.testing.assert_allclose(parts["joint_velocities"], qd, atol=1e-6)
    np.testing.assert_allclose(parts["target"], target, atol=1e-7)
    tips = forward_kinematics(q, core.link_lengths)[:, -1]
    np.testing.assert_allclose(parts["fingertip_to_target"], tips - target, atol=1e-6)
    assert core.single_observation_space.contains(observation[0])

    actions = rng.uniform(-1, 1, (3, 3)).astype(np.float32)
    reward, _, _, info = core.step(actions, None)
    distance = np.linalg.norm(forward_kinematics(core.joint_angles, core.link_lengths)[:, -1] - target, axis=1)
    control = 0.25 * np.sum(actions.astype(np.float64) ** 2, axis=1)
    np.testing.assert_allclose(info["reward_terms"]["distance"], -distance, atol=1e-6)
    np.testing.assert_allclose(info["reward_terms"]["control"], -control, rtol=1e-12)
    np.testing.assert_allclose(reward, -distance - control, atol=1e-6)
    assert reward.dtype == np.float64


def test_success_means_within_threshold_after_the_step():
    core = ArmCore(2, num_links=2, success_threshold=0.02)
    q = np.array([[0.3, 1.0], [0.3, 1.0]])
    tip = forward_kinematics(q[0], core.link_lengths)[-1]
    # targets 1.5 cm and 2.5 cm from the fingertip of an arm at rest; a zero action keeps it (nearly) there
    target = tip + np.array([[0.015, 0.0], [0.025, 0.0]])
    core.set_state(q, np.zeros((2, 2)), target)
    reward, _, _, info = core.step(np.zeros((2, 2), dtype=np.float32), None)
    np.testing.assert_array_equal(info["is_success"], [True, False])
    np.testing.assert_allclose(reward, [-0.015, -0.025], atol=1e-7)  # float32 trigonometry: ~1e-8 m


def test_reset_distribution():
    core = ArmCore(2000, num_links=3)
    core.reset_envs(np.arange(2000))
    radius = np.linalg.norm(core.target, axis=1)
    assert radius.min() >= 0.2 * core.reach - 1e-12 and radius.max() <= 0.95 * core.reach + 1e-12
    assert np.abs(core.joint_angles).max() <= 0.1 and np.abs(core.joint_velocities).max() <= 0.005 + 1e-12
    bearing = np.arctan2(core.target[:, 1], core.target[:, 0])
    assert np.histogram(bearing, bins=4, range=(-np.pi, np.pi))[0].min() > 400  # all around the base


# --- determinism ----------------------------------------------------------------------------------------------------


def rollout(env, seed, steps=30):
    observation, _ = env.reset(seed=seed)
    rng = np.random.default_rng(0)
    trajectory = [observation]
    for _ in range(steps):
        observation, reward, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        trajectory.append(observation)
    return np.array(trajectory)


@pytest.mark.parametrize("env_id", ARM_IDS)
def test_seeds_reproduce_and_differ(env_id):
    env = gym.make(env_id)
    first, again, other = rollout(env, 3), rollout(env, 3), rollout(env, 4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[0], other[0])


def test_single_env_matches_any_vector_slot_bitwise():
    single = gym.make("rlopt/ArmReach3-v0")
    vector = gym.make_vec("rlopt/ArmReach3-v0", num_envs=5)
    observation, _ = single.reset(seed=42)
    batch, _ = vector.reset(seed=[7, 8, 42, 9, 10])
    np.testing.assert_array_equal(batch[2], observation)
    rng = np.random.default_rng(1)
    for _ in range(20):
        actions = rng.uniform(-1, 1, (5, 3)).astype(np.float32)
        observation, reward, *_ = single.step(actions[2])
        batch, rewards, *_ = vector.step(actions)
        np.testing.assert_array_equal(batch[2], observation)
        assert rewards[2] == reward


# --- conformance ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ARM_IDS)
def test_check_env(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the joint velocities have no bound (like Reacher-v5's observation), which the checker points out
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(gym.make(env_id).unwrapped)
        check_env(gym.make(env_id, render_mode="rgb_array").unwrapped)
        sb3_check_env(gym.make(env_id))


def test_registration_builds_the_right_classes():
    env = gym.make("rlopt/ArmReach3-v0")
    assert isinstance(env.unwrapped, ArmReachEnv) and env.unwrapped.core.num_links == 3
    assert env.spec.max_episode_steps == 50
    vector = gym.make_vec("rlopt/ArmReach-v0", num_envs=4)
    assert isinstance(vector, ArmReachVectorEnv) and vector.max_episode_steps == 50
    assert vector.observation_space.shape == (4, 10) and vector.action_space.shape == (4, 2)


def test_time_limit_truncates_without_terminating():
    env = gym.make("rlopt/ArmReach-v0")
    env.reset(seed=0)
    for step in range(1, 51):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert not terminated and truncated == (step == 50)
        assert set(info["reward_terms"]) == {"distance", "control"} and isinstance(info["is_success"], bool)


def test_vector_env_autoresets_after_the_time_limit():
    env = gym.make_vec("rlopt/ArmReach-v0", num_envs=3)  # NEXT_STEP, Gymnasium's default
    observation, _ = env.reset(seed=[1, 2, 3])
    zero = np.zeros((3, 2), dtype=np.float32)
    for _ in range(50):
        last, reward, terminated, truncated, _ = env.step(zero)
    assert truncated.all() and not terminated.any()
    restarted, reward, terminated, truncated, _ = env.step(zero)
    np.testing.assert_array_equal(reward, 0.0)
    assert not truncated.any() and not np.array_equal(restarted, last)
    assert np.abs(split_observation(restarted, 2)["joint_velocities"]).max() <= 0.005  # a fresh start


@pytest.mark.parametrize("render_through", ["single", "vector"])
def test_render_draws_the_arm_and_the_target(render_through):
    if render_through == "single":
        env = gym.make("rlopt/ArmReach-v0", render_mode="rgb_array")
        env.reset(seed=1)
        frame = env.render()
        core = env.unwrapped.core
    else:
        env = gym.make_vec("rlopt/ArmReach-v0", num_envs=2, render_mode="rgb_array")
        env.reset(seed=1)
        frames = env.render()
        assert len(frames) == 2
        frame, core = frames[0], env.core
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
    scale = 256 / (2.2 * core.reach)

    def pixel(point):
        return frame[int(128 - point[1] * scale), int(128 + point[0] * scale)]

    red, _, blue = pixel(core.target[0]).astype(int)
    assert red > 150 and blue < 120  # the target
    midpoint = forward_kinematics(core.joint_angles[0], core.link_lengths)[1] / 2
    red, _, blue = pixel(midpoint).astype(int)
    assert blue > 120 and red < 100  # the first link
    assert render_arm(np.zeros((3, 2)), np.zeros(2), 0.2, 0.02, size=64).shape == (64, 64, 3)


# --- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "action",
    [np.array([1.5, 0.0]), np.array([np.nan, 0.0]), np.array([0.0, -np.inf]), np.zeros(3), np.zeros((1, 2))],
)
def test_bad_actions_raise(action):
    env = gym.make("rlopt/ArmReach-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(InvalidActionError):
        env.step(action.astype(np.float32))


def test_bad_vector_actions_raise():
    env = gym.make_vec("rlopt/ArmReach-v0", num_envs=3)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="outside the action space"):
        env.step(np.full((3, 2), 2.0, dtype=np.float32))
    with pytest.raises(InvalidActionError, match="NaN"):
        env.step(np.full((3, 2), np.nan, dtype=np.float32))
    with pytest.raises(InvalidActionError, match="shape"):
        env.step(np.zeros((2, 2), dtype=np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_links": 1}, "num_links"),
        ({"num_links": 2.5}, "num_links"),
        ({"link_lengths": [0.1, 0.1, 0.1]}, "link_lengths"),
        ({"link_lengths": [0.1, -0.1]}, "link_lengths"),
        ({"link_masses": [1.0, 0.0]}, "link_masses"),
        ({"damping": -0.1}, "damping"),
        ({"torque_limit": [1.0, np.inf]}, "torque_limit"),
        ({"dt": 0.0}, "dt"),
        ({"substeps": 0}, "substeps"),
        ({"success_threshold": -1.0}, "success_threshold"),
        ({"control_cost_weight": "high"}, "control_cost_weight"),
        ({"gravity": np.nan}, "gravity"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make("rlopt/ArmReach-v0", **kwargs)


def test_bad_state_and_render_mode_raise():
    core = ArmCore(2)
    with pytest.raises(ValueError, match="shape"):
        core.set_state(np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="render mode"):
        core.render(0, "human")
    with pytest.raises(ValueError, match="render_mode"):
        ArmReachEnv(render_mode="human")
    with pytest.raises(ValueError, match="render_mode"):
        gym.make_vec("rlopt/ArmReach-v0", num_envs=2, render_mode="ansi")
