"""Labelled triangle meshes: the building blocks of synthetic scenes.

A Mesh is a triangle soup whose every triangle carries a SemanticKITTI raw class, an instance id
(0 for "stuff") and a reflectivity in [0, 1] that drives the simulated intensity. Primitives come
from open3d's mesh factories; objects are concatenations of primitives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d


@dataclass
class Mesh:
    vertices: np.ndarray  # (V, 3) float64
    triangles: np.ndarray  # (T, 3) int64
    semantic: np.ndarray  # (T,) raw class id
    instance: np.ndarray  # (T,) instance id, 0 for stuff
    reflectivity: np.ndarray  # (T,) float32

    @staticmethod
    def empty() -> "Mesh":
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64),
                    *(np.zeros(0, t) for t in (np.int64, np.int64, np.float32)))

    @staticmethod
    def concat(meshes: list["Mesh"]) -> "Mesh":
        meshes = [m for m in meshes if len(m.triangles)]
        if not meshes:
            return Mesh.empty()
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
        return Mesh(
            np.concatenate([m.vertices for m in meshes]),
            np.concatenate([m.triangles + o for m, o in zip(meshes, offsets, strict=True)]),
            np.concatenate([m.semantic for m in meshes]),
            np.concatenate([m.instance for m in meshes]),
            np.concatenate([m.reflectivity for m in meshes]),
        )

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> "Mesh":
        return Mesh(self.vertices @ rotation.T + translation, self.triangles, self.semantic, self.instance,
                    self.reflectivity)

    def relabelled(self, semantic: int | None = None, instance: int | None = None) -> "Mesh":
        n = len(self.triangles)
        return Mesh(
            self.vertices,
            self.triangles,
            self.semantic if semantic is None else np.full(n, semantic, np.int64),
            self.instance if instance is None else np.full(n, instance, np.int64),
            self.reflectivity,
        )

    def select(self, keep: np.ndarray) -> "Mesh":
        """The triangles where `keep` is true (vertices are shared, unused ones are harmless)."""
        return Mesh(self.vertices, self.triangles[keep], self.semantic[keep], self.instance[keep],
                    self.reflectivity[keep])


def _labelled(mesh: o3d.geometry.TriangleMesh, semantic: int, instance: int, reflectivity: float) -> Mesh:
    triangles = np.asarray(mesh.triangles, dtype=np.int64)
    n = len(triangles)
    return Mesh(
        np.asarray(mesh.vertices, dtype=np.float64),
        triangles,
        np.full(n, semantic, np.int64),
        np.full(n, instance, np.int64),
        np.full(n, reflectivity, np.float32),
    )


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def box(size, center, semantic: int, instance: int = 0, reflectivity: float = 0.3, yaw: float = 0.0) -> Mesh:
    """Box of `size` (x, y, z) centred at `center`, turned by `yaw` about z."""
    size = np.asarray(size, dtype=np.float64)
    mesh = o3d.geometry.TriangleMesh.create_box(*size)  # spans [0, size]: centre it, turn it, place it
    rotation = yaw_matrix(yaw)
    translation = np.asarray(center) - rotation @ (size / 2)
    return _labelled(mesh, semantic, instance, reflectivity).transformed(rotation, translation)


def cylinder(radius: float, height: float, base, semantic: int, instance: int = 0, reflectivity: float = 0.3,
             axis=(0.0, 0.0, 1.0), resolution: int = 12) -> Mesh:
    """Cylinder standing on `base` along `axis` (default: upright)."""
    mesh = o3d.geometry.TriangleMesh.create_cylinder(radius, height, resolution=resolution, split=1)
    mesh.translate((0.0, 0.0, height / 2))  # open3d centres it; move the base to the origin
    return _labelled(mesh, semantic, instance, reflectivity).transformed(_rotation_to(axis), np.asarray(base, float))


def sphere(radius: float, center, semantic: int, instance: int = 0, reflectivity: float = 0.3,
           scale=(1.0, 1.0, 1.0)) -> Mesh:
    mesh = o3d.geometry.TriangleMesh.create_sphere(radius, resolution=8)
    return _labelled(mesh, semantic, instance, reflectivity).transformed(np.diag(scale), np.asarray(center, float))


def leaf_cloud(center, radii, count: int, rng: np.random.Generator, semantic: int = 70, instance: int = 0,
               reflectivity: float = 0.45, leaf_size: float = 0.35) -> Mesh:
    """Randomly oriented small triangles filling an ellipsoid: foliage that rays partly pass through,
    so crowns and bushes return the scattered, porous points real LiDAR gets from vegetation."""
    u = rng.normal(size=(count, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    centers = np.asarray(center) + u * rng.uniform(0, 1, (count, 1)) ** (1 / 3) * np.asarray(radii)
    corners = rng.normal(scale=leaf_size / 2, size=(count, 3, 3))
    vertices = (centers[:, None, :] + corners).reshape(-1, 3)
    triangles = np.arange(3 * count, dtype=np.int64).reshape(-1, 3)
    refl = np.clip(rng.normal(reflectivity, 0.08, count), 0.05, 1.0).astype(np.float32)
    return Mesh(vertices, triangles, np.full(count, semantic, np.int64), np.full(count, instance, np.int64), refl)


def _rotation_to(axis) -> np.ndarray:
    """A rotation taking +z onto `axis`."""
    a = np.asarray(axis, dtype=np.float64)
    a /= np.linalg.norm(a)
    z = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(z, a), float(z @ a)
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1 + c)
