"""Synthetic 3-D pairs: random indoor-like rooms scanned by two virtual depth cameras.

A room (floor, ceiling, four walls; 3–7 m by 3–7 m, 2.4–3 m high) is furnished with 6–20
Open3D primitives standing on the floor: boxes (cupboards, tables), cylinders and spheres.
Camera 1 stands 1–1.8 m high inside the room and looks at a random point of it; camera 2 is
camera 1 moved by 0.05–1.2 m and turned by 2–40° about a random axis (the motions of the
overlapping frame pairs of a hand-held sequence such as ``../shared/real-dev-3d``, whose
10th–90th percentiles are 4–23° and 0.14–0.94 m).
Both render a Kinect-like depth image by ray casting (320×240, f = 292.5 px: the 640×480,
f = 585 field of view of ``../shared/real-dev-3d`` at half resolution), with depth noise of
standard deviation 0.0012 + 0.0019 (z − 0.4)² metres (Nguyen, Izadi and Lovell, 3DIMPVT
2012, Kinect v1 axial noise), 5 % of the pixels dropped and readings beyond 4 m removed.
The clouds then go through exactly the real pairs' pipeline (:mod:`corrnet.datasets.pairs3d`).
A pair whose overlap is below :data:`~corrnet.constants.MIN_OVERLAP` is drawn again.
Each pair is fixed by (seed, index).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset

from corrnet.constants import MIN_OVERLAP, NUM_MATCHES_3D

from .pairs3d import describe, make_sample3d, match_fragments, overlap
from .rgbd import MAX_DEPTH, depth_points

WIDTH, HEIGHT, FOCAL = 320, 240, 292.5
DROPOUT = 0.05
MAX_ATTEMPTS = 20


def kinect_sigma(z: np.ndarray) -> np.ndarray:
    """Axial depth noise (m) of a Kinect v1 at depth z (m), Nguyen et al. 2012."""
    return 0.0012 + 0.0019 * (z - 0.4) ** 2


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation (3, 3) about ``axis`` by ``angle`` radians."""
    k = axis / np.linalg.norm(axis)
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


Furniture = tuple[str, np.ndarray, tuple[float, ...]]
"""A piece of furniture: kind (box, cylinder, sphere), base (3,) on the floor in metres, and
its sizes: a box's (x, y, z, rotation about z in radians), a cylinder's (radius, height), a
sphere's (radius,)."""


def _draw_room(rng: np.random.Generator) -> tuple[np.ndarray, list[Furniture]]:
    """A room's (width, depth, height) in metres and its furniture, drawn (nothing built)."""
    size = np.array([rng.uniform(3, 7), rng.uniform(3, 7), rng.uniform(2.4, 3.0)])
    parts: list[Furniture] = []
    for _ in range(rng.integers(6, 21)):
        kind = str(rng.choice(["box", "box", "cylinder", "sphere"]))
        base = np.array([rng.uniform(0.3, size[0] - 0.3), rng.uniform(0.3, size[1] - 0.3), 0.0])
        if kind == "box":
            dims = rng.uniform([0.2, 0.2, 0.2], [1.6, 1.0, 2.0])
            parts.append((kind, base, (*dims, rng.uniform(0, np.pi))))
        elif kind == "cylinder":
            parts.append((kind, base, (rng.uniform(0.1, 0.4), rng.uniform(0.3, 1.5))))
        else:
            parts.append((kind, base, (rng.uniform(0.15, 0.5),)))
    return size, parts


def _room_mesh(size: np.ndarray, parts: list[Furniture]):
    """The furnished room of :func:`_draw_room` as one legacy Open3D mesh."""
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh()
    wall = 0.05
    for axis in range(3):  # two slabs per axis: walls, floor and ceiling
        extent = size.copy() + 2 * wall
        extent[axis] = wall
        for side in (-wall, size[axis]):
            slab = o3d.geometry.TriangleMesh.create_box(*extent)
            offset = -np.full(3, wall)
            offset[axis] = side
            mesh += slab.translate(offset)
    for kind, base, sizes in parts:
        if kind == "box":
            dims, angle = np.array(sizes[:3]), sizes[3]
            part = o3d.geometry.TriangleMesh.create_box(*dims).translate(
                base - [dims[0] / 2, dims[1] / 2, 0]
            )
            part.rotate(_rotation(np.array([0.0, 0.0, 1.0]), angle), center=base)
        elif kind == "cylinder":
            r, h = sizes
            part = o3d.geometry.TriangleMesh.create_cylinder(r, h, resolution=24).translate(
                base + [0, 0, h / 2]
            )
        else:
            (r,) = sizes
            part = o3d.geometry.TriangleMesh.create_sphere(r, resolution=16).translate(
                base + [0, 0, r]
            )
        mesh += part
    return mesh


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world (4, 4) of a camera at eye looking at target (x right, y down, z ahead)."""
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    if np.linalg.norm(x) < 1e-6:
        x = np.array([1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(z, x), z], 1)
    T[:3, 3] = eye
    return T


def _scan(scene, T: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noisy depth scan of a ray-casting scene from camera-to-world T -> (P, 3) camera frame."""
    import open3d as o3d

    K = np.array([[FOCAL, 0, (WIDTH - 1) / 2], [0, FOCAL, (HEIGHT - 1) / 2], [0, 0, 1]])
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        o3d.core.Tensor(K), o3d.core.Tensor(np.linalg.inv(T)), WIDTH, HEIGHT
    )
    hit = scene.cast_rays(rays)["t_hit"].numpy()
    directions = rays.numpy()[..., 3:]
    z = hit * (directions @ T[:3, 2])  # depth along the optical axis
    z = np.where(np.isfinite(z), z, 0.0)
    z = z + rng.normal(size=z.shape) * kinect_sigma(z)
    z[rng.random(z.shape) < DROPOUT] = 0.0
    return depth_points(z, K, MAX_DEPTH)


def generate_pair3d(seed: int, index: int, num_matches: int = NUM_MATCHES_3D) -> dict:
    """Pair ``index`` of the synthetic stream ``seed``, as a
    :func:`~corrnet.datasets.pairs3d.match_fragments` dictionary with ``overlap`` and ``name``."""
    import open3d as o3d

    rng = np.random.default_rng([seed, index])
    for _ in range(MAX_ATTEMPTS):
        size, parts = _draw_room(rng)
        eye = np.array(
            [
                rng.uniform(0.4, size[0] - 0.4),
                rng.uniform(0.4, size[1] - 0.4),
                rng.uniform(1.0, 1.8),
            ]
        )
        target = rng.uniform([0, 0, 0.2], [size[0], size[1], 1.5])
        if np.linalg.norm(target - eye) < 1.0:  # drawn again before the room is built
            continue
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(_room_mesh(size, parts)))
        T1 = _look_at(eye, target)
        step = rng.normal(size=3)
        motion = np.eye(4)
        motion[:3, :3] = _rotation(rng.normal(size=3), np.deg2rad(rng.uniform(2, 40)))
        motion[:3, 3] = step / np.linalg.norm(step) * rng.uniform(0.05, 1.2)
        T2 = T1 @ motion
        frag1, frag2 = describe(_scan(scene, T1, rng)), describe(_scan(scene, T2, rng))
        if min(len(frag1.points), len(frag2.points)) < 100:
            continue
        rel = np.linalg.inv(T2) @ T1
        R, t = rel[:3, :3], rel[:3, 3]
        share = overlap(frag1.points, frag2.points, R, t)
        if share >= MIN_OVERLAP:
            pair = match_fragments(frag1, frag2, R, t, num_matches, seed=int(rng.integers(2**31)))
            return {**pair, "overlap": share, "name": f"synthetic-{seed}-{index}"}
    raise RuntimeError(
        f"synthetic pair ({seed}, {index}): no overlapping views in {MAX_ATTEMPTS} draws"
    )


class Synthetic3DPairs(Dataset):
    """``length`` synthetic 3-D pairs of stream ``seed`` as sample dictionaries
    (:func:`~corrnet.datasets.pairs3d.make_sample3d`), generated on access (~0.5 s a pair)."""

    def __init__(
        self,
        length: int,
        seed: int = 0,
        num_matches: int = NUM_MATCHES_3D,
        side_info: bool | Sequence[str] = False,
    ) -> None:
        if length < 1:
            raise ValueError(f"length: expected a positive number of pairs, got {length}")
        self.length, self.seed, self.num_matches, self.side_info = (
            length,
            seed,
            num_matches,
            side_info,
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(f"pair {i} out of range (0..{self.length - 1})")
        p = generate_pair3d(self.seed, i, self.num_matches)
        return make_sample3d(p["xs"], p["R"], p["t"], p["ratios"], p["mutuals"], i, self.side_info)
