"""Open3D side of the visualisation, run in a subprocess by :mod:`corrnet.visualization.render`.

Open3D aborts the whole process when no usable Vulkan driver exists, so this module is
the only one that imports it, and it is only ever run as a child process::

    python -m corrnet.visualization._worker render SCENE.npz OUT.npz --pair-size W H \
        --embed-size W H
    python -m corrnet.visualization._worker show SCENE.npz [--title TITLE]
    python -m corrnet.visualization._worker render3d SCENE3D.npz OUT.npz --size W H

``render`` writes OUT.npz holding the uint8 RGB views ``pair`` (H, W, 3) and ``embed``;
``render3d`` the views ``before`` and ``after`` of a registration scene
(:mod:`corrnet.visualization.registration`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import open3d as o3d
from open3d.visualization import rendering

from .scene import FRAME_RGB, KEYPOINT_RGB, OUTCOMES, PALETTE, Scene

Geometry = tuple[str, o3d.geometry.Geometry3D, rendering.MaterialRecord]

LINE_WIDTH = {"tn": 1.0, "fn": 1.5, "fp": 1.5, "tp": 1.5}
"""Correspondence line width per outcome at a 600 px high view, in pixels."""

POINT_SIZE = {"tn": 3.0, "fn": 5.0, "fp": 5.0, "tp": 5.0}
"""Embedded point size per outcome at a 600 px high view, in pixels."""

VERTICAL_FOV_DEG = 30.0


def _rgb(colour: tuple[int, int, int], n: int) -> o3d.utility.Vector3dVector:
    return o3d.utility.Vector3dVector(np.tile(np.asarray(colour, dtype=np.float64) / 255.0, (n, 1)))


def _material(
    shader: str, *, width: float = 1.0, texture: np.ndarray | None = None
) -> rendering.MaterialRecord:
    material = rendering.MaterialRecord()
    material.shader = shader
    material.line_width = width
    material.point_size = width
    if texture is not None:
        material.albedo_img = o3d.geometry.Image(_undo_srgb_decode(texture))
    return material


def _undo_srgb_decode(rgb: np.ndarray) -> np.ndarray:
    """sRGB-encode (H, W, 3) uint8 so that the renderer's sRGB->linear texture decode, with
    post-processing off, writes the original pixel values back out."""
    v = rgb.astype(np.float64) / 255.0
    encoded = np.where(v <= 0.0031308, 12.92 * v, 1.055 * np.power(v, 1 / 2.4) - 0.055)
    return np.ascontiguousarray(np.round(encoded * 255.0).astype(np.uint8))


def _line_set(ends: np.ndarray, colour: tuple[int, int, int]) -> o3d.geometry.LineSet:
    """LineSet from segment end points (L, 2, 3)."""
    lines = o3d.geometry.LineSet(
        o3d.utility.Vector3dVector(ends.reshape(-1, 3)),
        o3d.utility.Vector2iVector(np.arange(2 * len(ends)).reshape(-1, 2)),
    )
    lines.colors = _rgb(colour, len(ends))
    return lines


def _point_cloud(points: np.ndarray, colour: tuple[int, int, int]) -> o3d.geometry.PointCloud:
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.reshape(-1, 3)))
    cloud.colors = _rgb(colour, len(cloud.points))
    return cloud


def _quad(corners: np.ndarray) -> o3d.geometry.TriangleMesh:
    """Textured quad over corners (4, 3) TL, TR, BR, BL, image top row at TL-TR."""
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(corners),
        o3d.utility.Vector3iVector(np.array([[0, 3, 2], [0, 2, 1]])),
    )
    uv = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])  # texture v runs bottom-up
    mesh.triangle_uvs = o3d.utility.Vector2dVector(uv[[0, 3, 2, 0, 2, 1]])
    mesh.vertex_colors = _rgb((255, 255, 255), 4)  # the shader multiplies texture by vertex colour
    return mesh


def pair_geometries(scene: Scene, scale: float = 1.0) -> list[Geometry]:
    """Image panels (textured quads or framed keypoint clouds) and correspondence lines."""
    out: list[Geometry] = []
    for i, corners in enumerate(scene.panels):
        if scene.textures:
            out.append(
                (f"image{i}", _quad(corners), _material("defaultUnlit", texture=scene.textures[i]))
            )
        else:
            frame = np.stack([corners, np.roll(corners, -1, axis=0)], axis=1)
            out.append(
                (f"frame{i}", _line_set(frame, FRAME_RGB), _material("unlitLine", width=scale))
            )
    if len(scene.keypoints):
        out.append(
            (
                "keypoints",
                _point_cloud(scene.keypoints, KEYPOINT_RGB),
                _material("defaultUnlit", width=2.0 * scale),
            )
        )
    for name in OUTCOMES:
        if len(scene.lines[name]):
            out.append(
                (
                    f"lines_{name}",
                    _line_set(scene.lines[name], PALETTE[name]),
                    _material("unlitLine", width=LINE_WIDTH[name] * scale),
                )
            )
    return out


def embed_geometries(
    scene: Scene, scale: float = 1.0, offset: np.ndarray | None = None, zoom: float = 1.0
) -> list[Geometry]:
    """Embedded matches as coloured points, with three grey axes of length 2 (PC1-PC3)."""
    shift = np.zeros(3) if offset is None else offset
    axes = np.array(
        [[[-1, 0, 0], [1, 0, 0]], [[0, -1, 0], [0, 1, 0]], [[0, 0, -1], [0, 0, 1]]], float
    )
    out: list[Geometry] = [
        ("axes", _line_set(axes * zoom + shift, FRAME_RGB), _material("unlitLine", width=scale))
    ]
    for name in OUTCOMES:
        if len(scene.points[name]):
            out.append(
                (
                    f"points_{name}",
                    _point_cloud(scene.points[name] * zoom + shift, PALETTE[name]),
                    _material("defaultUnlit", width=POINT_SIZE[name] * scale),
                )
            )
    return out


def _renderer(size: tuple[int, int], geometries: list[Geometry]) -> rendering.OffscreenRenderer:
    renderer = rendering.OffscreenRenderer(*size)
    renderer.scene.set_background([1.0, 1.0, 1.0, 1.0])
    renderer.scene.view.set_post_processing(False)  # exact palette colours, no tone mapping
    for name, geometry, material in geometries:
        renderer.scene.add_geometry(name, geometry, material)
    return renderer


def render_pair_view(scene: Scene, size: tuple[int, int]) -> np.ndarray:
    """Orthographic front view of the pair, letterboxed to size (W, H) -> (H, W, 3) uint8."""
    renderer = _renderer(size, pair_geometries(scene, scale=max(1.0, size[1] / 600)))
    xmin, xmax, ymin, ymax = scene.pair_bounds
    half_h = max((ymax - ymin) / 2, (xmax - xmin) / 2 * size[1] / size[0])
    half_w = half_h * size[0] / size[1]
    centre = [(xmin + xmax) / 2, (ymin + ymax) / 2, 0.0]
    camera = renderer.scene.camera
    camera.set_projection(
        rendering.Camera.Projection.Ortho, -half_w, half_w, -half_h, half_h, 1.0, 20.0
    )
    camera.look_at(centre, [centre[0], centre[1], 10.0], [0.0, 1.0, 0.0])
    return np.asarray(renderer.render_to_image())


def render_embed_view(scene: Scene, size: tuple[int, int]) -> np.ndarray:
    """Oblique perspective view of the embedding fitted to scene.embed_radius -> (H, W, 3) uint8."""
    renderer = _renderer(size, embed_geometries(scene, scale=max(1.0, size[1] / 600)))
    half_v = math.radians(VERTICAL_FOV_DEG) / 2
    half_h = math.atan(math.tan(half_v) * size[0] / size[1])
    distance = scene.embed_radius / math.sin(min(half_v, half_h))
    direction = np.array([0.9, 0.55, 1.3])
    eye = direction / np.linalg.norm(direction) * distance
    renderer.setup_camera(VERTICAL_FOV_DEG, [0.0, 0.0, 0.0], eye.tolist(), [0.0, 1.0, 0.0])
    return np.asarray(renderer.render_to_image())


def show_geometries(scene: Scene) -> list[dict]:
    """Both views in one world for :func:`open3d.visualization.draw`: the embedding, halved
    to the pair's height, to the right of the pair view."""
    zoom = 0.5
    reach = max([1.0] + [float(np.abs(p[:, 0]).max()) for p in scene.points.values() if len(p)])
    offset = np.array([float(scene.pair_bounds[1]) + 0.1 + zoom * reach, 0.5, 0.0])
    geometries = pair_geometries(scene) + embed_geometries(scene, offset=offset, zoom=zoom)
    return [
        {"name": name, "geometry": geometry, "material": material}
        for name, geometry, material in geometries
    ]


def show(scene: Scene, title: str) -> None:
    """Interactive window with both views (needs a display)."""
    o3d.visualization.draw(
        show_geometries(scene), title=title, bg_color=(1.0, 1.0, 1.0, 1.0), show_skybox=False
    )


def render_registration_views(
    scene: dict[str, np.ndarray], size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """The ``before`` and ``after`` views of a registration scene, seen by one perspective
    camera behind and above the target scan's camera (y points down in its frame).  One
    renderer draws both, its scene cleared in between and at the end (Filament aborts when a
    renderer is destroyed while line materials are in use)."""
    target = scene["target"]
    centre = np.median(target, axis=0)
    reach = float(np.percentile(np.linalg.norm(target - centre, axis=1), 90))
    eye = centre + reach * np.array([0.0, -1.2, -2.2])
    scale = max(1.0, size[1] / 600)
    renderer = _renderer(size, [])
    views = {}
    for view in ("before", "after"):
        renderer.scene.clear_geometry()
        geometries: list[Geometry] = [
            (
                "target",
                _point_cloud(target, tuple(scene["target_rgb"])),
                _material("defaultUnlit", width=2.0 * scale),
            ),
            (
                "source",
                _point_cloud(scene[f"source_{view}"], tuple(scene["source_rgb"])),
                _material("defaultUnlit", width=2.0 * scale),
            ),
        ]
        for name in OUTCOMES:
            key = f"lines_{name}_{view}"
            if key in scene and len(scene[key]):
                geometries.append(
                    (
                        key,
                        _line_set(scene[key], PALETTE[name]),
                        _material("unlitLine", width=LINE_WIDTH[name] * scale),
                    )
                )
        for name, geometry, material in geometries:
            renderer.scene.add_geometry(name, geometry, material)
        renderer.setup_camera(
            VERTICAL_FOV_DEG * 1.6, centre.tolist(), eye.tolist(), [0.0, -1.0, 0.0]
        )
        views[view] = np.asarray(renderer.render_to_image())
    renderer.scene.clear_geometry()
    return views


def main(argv: list[str] | None = None) -> None:
    """Command line of the worker process (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m corrnet.visualization._worker")
    sub = parser.add_subparsers(dest="mode", required=True)
    render = sub.add_parser("render")
    render.add_argument("scene", type=Path)
    render.add_argument("out", type=Path)
    render.add_argument("--pair-size", type=int, nargs=2, required=True)
    render.add_argument("--embed-size", type=int, nargs=2, required=True)
    show_parser = sub.add_parser("show")
    show_parser.add_argument("scene", type=Path)
    show_parser.add_argument("--title", default="corrnet")
    render3d = sub.add_parser("render3d")
    render3d.add_argument("scene", type=Path)
    render3d.add_argument("out", type=Path)
    render3d.add_argument("--size", type=int, nargs=2, required=True)
    args = parser.parse_args(argv)
    if args.mode == "render3d":
        with np.load(args.scene) as data:
            np.savez(args.out, **render_registration_views(dict(data), tuple(args.size)))
        return
    scene = Scene.load(args.scene)
    if args.mode == "show":
        show(scene, args.title)
        return
    np.savez(
        args.out,
        pair=render_pair_view(scene, tuple(args.pair_size)),
        embed=render_embed_view(scene, tuple(args.embed_size)),
    )


if __name__ == "__main__":
    main()
