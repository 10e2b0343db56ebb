"""Point-robot trajectories: scenes, the grid planner, exact collision checks, metrics, energies and the classical
trajectory optimiser."""
import math

import pytest
import torch

from energy_utils import trajectories as tr


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _scene(centres, radii, start, goal):
    """One scene (batch of 1) from plain lists."""
    return tr.Scenes(torch.tensor([centres], dtype=torch.float32).reshape(1, -1, 2),
                     torch.tensor([radii], dtype=torch.float32).reshape(1, -1),
                     torch.tensor([start], dtype=torch.float32), torch.tensor([goal], dtype=torch.float32))


def _traj(waypoints):
    """One trajectory (1, 2, 1, T) from a list of (x, y)."""
    return tr.to_traj(torch.tensor([waypoints], dtype=torch.float32))


UNIT_CIRCLE = dict(centres=[[0.5, 0.5]], radii=[0.1], start=[0.1, 0.5], goal=[0.9, 0.5])


# ---------------------------------------------------------------------------------------------- scenes

def test_random_scenes_are_valid_and_deterministic():
    sc = tr.random_scenes(200, _g(0), n_obstacles=3)
    assert sc.centres.shape == (200, 3, 2) and sc.radii.shape == (200, 3) and len(sc) == 200
    assert sc.start.shape == sc.goal.shape == (200, 2) and sc.n_obstacles == 3
    assert ((sc.radii >= 0.08) & (sc.radii <= 0.15)).all()
    for p in (sc.start, sc.goal):
        assert ((p >= 0) & (p <= 1)).all()
        assert ((sc.centres - p[:, None]).norm(dim=-1) >= sc.radii + 0.05).all()       # clear of the obstacles
    assert ((sc.goal - sc.start).norm(dim=-1) >= 0.5).all()
    again = tr.random_scenes(200, _g(0), n_obstacles=3)
    assert all(torch.equal(a, b) for a, b in zip(vars(sc).values(), vars(again).values()))
    assert not torch.equal(tr.random_scenes(200, _g(1), n_obstacles=3).centres, sc.centres)
    assert sc[3].centres.shape == (1, 3, 2) and torch.equal(sc[3].start, sc.start[3:4])
    assert torch.equal(sc[-1].goal, sc.goal[-1:])
    assert torch.equal(sc[torch.tensor(4)].radii, sc.radii[4:5]) and len(sc[torch.arange(3)]) == 3


def test_bad_scenes_and_trajectories_raise():
    with pytest.raises(ValueError, match="centres"):
        tr.Scenes(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="radii"):
        tr.Scenes(torch.zeros(2, 3, 2), torch.ones(2, 4), torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="positive"):
        tr.Scenes(torch.zeros(2, 3, 2), -torch.ones(2, 3), torch.zeros(2, 2), torch.zeros(2, 2))
    sc = _scene(**UNIT_CIRCLE)
    with pytest.raises(ValueError, match=r"\(B, 2, 1, T\)"):
        tr.path_length(torch.zeros(1, 2, 5))
    with pytest.raises(ValueError, match="T >= 3"):
        tr.smoothness(torch.zeros(1, 2, 1, 2))
    with pytest.raises(ValueError, match="T must be"):
        tr.straight_line(sc, T=2)
    with pytest.raises(ValueError, match="2 trajectories but scenes holds 1"):
        tr.collides(torch.zeros(2, 2, 1, 5), sc)
    with pytest.raises(ValueError, match="n must be"):
        tr.random_scenes(0, _g())


# ---------------------------------------------------------------------------------------------- planner

def test_plan_gives_collision_free_paths_with_exact_endpoints():
    sc = tr.random_scenes(24, _g(3))
    traj, ok = tr.plan(sc, T=32)
    assert traj.shape == (24, 2, 1, 32) and traj.dtype == torch.float32 and ok.dtype == torch.bool
    assert ok.all()
    assert not tr.collides(traj, sc).any() and (tr.min_clearance(traj, sc) > 0.005).all()
    p = tr.points(traj)
    assert torch.equal(p[:, 0], sc.start) and torch.equal(p[:, -1], sc.goal)
    assert torch.equal(tr.endpoint_error(traj, sc), torch.zeros(24)) and tr.success(traj, sc).all()
    # the planner detours: never shorter than the straight line, and it removes the line's collisions
    assert (tr.path_length(traj) >= (sc.goal - sc.start).norm(dim=-1) - 1e-5).all()
    assert tr.collides(tr.straight_line(sc), sc).any()
    # waypoints are (nearly) equally spaced in arc length: resampling, then gentle smoothing
    seg = (p[:, 1:] - p[:, :-1]).norm(dim=-1)
    assert (seg.amax(1) / seg.mean(1) < 1.5).all()


def test_plan_is_straight_in_free_space_and_fails_cleanly_when_walled_off():
    free = _scene(centres=[[0.5, 0.9]], radii=[0.08], start=[0.1, 0.3], goal=[0.9, 0.4])
    traj, ok = tr.plan(free, T=16)
    assert ok.all() and torch.allclose(traj, tr.straight_line(free, T=16), atol=1e-6)
    # a wall of overlapping circles from the bottom to the top edge separates start and goal
    wall = [[0.6, 0.1], [0.6, 0.3], [0.6, 0.5], [0.6, 0.7], [0.6, 0.9]]
    walled = _scene(centres=wall, radii=[0.12] * 5, start=[0.2, 0.5], goal=[0.85, 0.5])
    around = _scene(centres=wall[:4] + [[0.1, 0.1]], radii=[0.12] * 4 + [0.05], start=[0.2, 0.5],
                    goal=[0.85, 0.5])                                       # the top circle moved away
    both = tr.Scenes(*(torch.cat([getattr(walled, k), getattr(around, k)])
                       for k in ("centres", "radii", "start", "goal")))
    traj, ok = tr.plan(both)
    assert ok.tolist() == [False, True]
    assert torch.isfinite(traj).all() and torch.equal(traj[0], tr.straight_line(walled)[0])
    assert tr.success(traj[1:], both[1]).all() and tr.points(traj)[1, :, 1].max() > 0.82  # over the top


def test_plan_rejects_infeasible_scenes():
    with pytest.raises(ValueError, match="inside an obstacle"):
        tr.plan(_scene(centres=[[0.5, 0.5]], radii=[0.1], start=[0.52, 0.5], goal=[0.9, 0.5]))
    with pytest.raises(ValueError, match="outside the unit square"):
        tr.plan(_scene(centres=[[0.5, 0.5]], radii=[0.1], start=[0.1, 0.5], goal=[1.2, 0.5]))
    with pytest.raises(ValueError, match="T must be"):
        tr.plan(_scene(**UNIT_CIRCLE), T=2)


# ---------------------------------------------------------------------------------------------- geometry, metrics

def test_collides_checks_segments_not_only_waypoints():
    sc = _scene(**UNIT_CIRCLE)
    through = _traj([[0.1, 0.5], [0.3, 0.5], [0.7, 0.5], [0.9, 0.5]])      # every waypoint is outside the circle
    assert ((tr.points(through) - 0.5).norm(dim=-1) > 0.1).all()
    assert tr.collides(through, sc).all()
    assert tr.min_clearance(through, sc).item() == pytest.approx(-0.1)
    above = _traj([[0.1, 0.8], [0.5, 0.8], [0.9, 0.8]])
    assert not tr.collides(above, sc).any() and tr.min_clearance(above, sc).item() == pytest.approx(0.2, abs=1e-6)
    grazing = _traj([[0.1, 0.601], [0.9, 0.601], [0.9, 0.5]])
    touching = _traj([[0.1, 0.599], [0.9, 0.599], [0.9, 0.5]])
    assert not tr.collides(grazing, sc).any() and tr.collides(touching, sc).all()
    assert tr.success(above, _scene(centres=[[0.5, 0.5]], radii=[0.1], start=[0.1, 0.8], goal=[0.9, 0.8])).all()
    assert not tr.success(above, sc).any()                                  # wrong endpoints


def test_metrics_of_a_straight_line():
    sc = tr.random_scenes(5, _g(2))
    T = 20
    line = tr.straight_line(sc, T)
    dist = (sc.goal - sc.start).norm(dim=-1)
    assert torch.allclose(tr.path_length(line), dist, atol=1e-6)
    assert tr.smoothness(line).abs().max() < 1e-10
    assert torch.allclose(tr.smoothness_energy(line), 0.5 * dist ** 2 / (T - 1), atol=1e-7)
    assert torch.equal(tr.endpoint_error(line, sc), torch.zeros(5))
    kinked = _traj([[0.0, 0.0], [0.5, 0.5], [1.0, 0.0]])
    assert tr.smoothness(kinked).item() == pytest.approx(1.0)               # ‖(1, 0) − 2(0.5, 0.5) + 0‖² = 1
    assert tr.path_length(kinked).item() == pytest.approx(math.sqrt(2))


# ---------------------------------------------------------------------------------------------- energies

def test_obstacle_energy_zero_far_positive_inside_and_pushes_outwards():
    sc = _scene(**UNIT_CIRCLE)
    far = _traj([[0.1, 0.8], [0.5, 0.8], [0.9, 0.8]])
    assert tr.obstacle_energy(far, sc).item() == 0
    x = _traj([[0.1, 0.1], [0.56, 0.53], [0.9, 0.9]]).requires_grad_(True)   # middle waypoint inside
    e = tr.obstacle_energy(x, sc)
    assert e.item() == pytest.approx((0.1 + tr.MARGIN - math.hypot(0.06, 0.03)) ** 2, rel=1e-5)
    (grad,) = torch.autograd.grad(e.sum(), x)
    g = tr.points(grad)[0, 1]
    outward = torch.tensor([0.06, 0.03]) / math.hypot(0.06, 0.03)
    assert torch.dot(-g, outward) > 0 and torch.allclose(-g / g.norm(), outward, atol=1e-5)
    # the gradient reaches every waypoint of a path lying inside an obstacle, and midpoints add to the energy
    big = _scene(centres=[[0.5, 0.5]], radii=[0.4], start=[0.3, 0.45], goal=[0.7, 0.45])
    inside = tr.straight_line(big, 9).requires_grad_(True)
    (grad,) = torch.autograd.grad(tr.obstacle_energy(inside, big).sum(), inside)
    assert (tr.points(grad).norm(dim=-1) > 0).all()
    assert tr.obstacle_energy(inside, big) > tr.obstacle_energy(inside, big, midpoints=False)
    # dead centre: zero gradient, not NaN
    centre = _traj([[0.1, 0.5], [0.5, 0.5], [0.9, 0.5]]).requires_grad_(True)
    (grad,) = torch.autograd.grad(tr.obstacle_energy(centre, sc, midpoints=False).sum(), centre)
    assert torch.isfinite(grad).all()


# ---------------------------------------------------------------------------------------------- optimiser

def test_optimise_trajectory_lowers_energy_and_beats_the_straight_line():
    sc = tr.random_scenes(64, _g(5))
    line = tr.straight_line(sc)
    traj, e = tr.optimise_trajectory(sc, generator=_g(1), disable=True)
    assert traj.shape == (64, 2, 1, 32) and e.shape == (64,)
    p = tr.points(traj)
    assert torch.equal(p[:, 0], sc.start) and torch.equal(p[:, -1], sc.goal)
    recomputed = tr.smoothness_energy(traj) + 10.0 * tr.obstacle_energy(traj, sc)
    assert torch.allclose(e, recomputed, atol=1e-6)
    e_line = tr.smoothness_energy(line) + 10.0 * tr.obstacle_energy(line, sc)
    assert e.mean() < 0.1 * e_line.mean()
    rate = tr.success(traj, sc).float().mean()
    assert rate >= 0.85 and rate > tr.success(line, sc).float().mean() + 0.3
    # without the margin continuation every accepted step lowers E, so no scene ends above its start
    _, e_plain = tr.optimise_trajectory(sc, n_iter=50, margin_start=tr.MARGIN, perturbation=0.0, disable=True)
    assert (e_plain <= e_line + 1e-7).all()


def test_optimise_trajectory_is_deterministic_and_accepts_an_init():
    sc = tr.random_scenes(8, _g(6))
    a, ea = tr.optimise_trajectory(sc, n_iter=40, generator=_g(2), disable=True)
    b, eb = tr.optimise_trajectory(sc, n_iter=40, generator=_g(2), disable=True)
    c, _ = tr.optimise_trajectory(sc, n_iter=40, generator=_g(3), disable=True)
    assert torch.equal(a, b) and torch.equal(ea, eb) and not torch.equal(a, c)
    planned, _ = tr.plan(sc)
    d, _ = tr.optimise_trajectory(sc, init=planned, n_iter=0, disable=True)
    assert torch.equal(d, planned)
    with pytest.raises(ValueError, match="init has T"):
        tr.optimise_trajectory(sc, T=16, init=planned, disable=True)
    with pytest.raises(ValueError, match="weights"):
        tr.optimise_trajectory(sc, weights=(0.0, 1.0), disable=True)
