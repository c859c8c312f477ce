"""A spinning multi-beam LiDAR with KITTI's geometry, simulated by ray casting.

Rays are cast with open3d's RaycastingScene (Embree). The sensor model:
  * beams: the Velodyne HDL-64E's 64 elevations, 32 from +2.0 to -8.33 deg (1/3 deg apart) and
    32 from -8.83 to -24.33 deg (1/2 deg apart), each with a small fixed calibration error;
  * azimuth: `azimuth_steps` columns per revolution (KITTI: about 2,000 at 10 Hz), random phase;
  * detection: a return needs enough signal, which falls with range squared and grows with the
    surface's reflectivity and (weakly) with the incidence angle; on top of that a random
    dropout. Dark, distant, grazing surfaces therefore thin out as in real scans;
  * range noise: Gaussian, 1.5 cm plus 0.03 % of the range;
  * intensity: reflectivity times an incidence and range falloff and a per-laser gain (the
    ring-to-ring intensity differences of real Velodynes), with multiplicative noise, in [0, 1]
    like KITTI's.
Not modelled: motion distortion within a sweep, multiple returns, mixed pixels at edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import open3d as o3d

from voxseg.synthetic.meshes import Mesh


def hdl64e_elevations() -> np.ndarray:
    upper = np.linspace(2.0, -8.33, 32)
    lower = np.linspace(-8.83, -24.33, 32)
    return np.concatenate([upper, lower])


@dataclass
class SpinningLidar:
    elevations_deg: np.ndarray = field(default_factory=hdl64e_elevations)
    azimuth_steps: int = 2048
    min_range: float = 2.5
    max_range: float = 100.0
    range_noise: float = 0.015
    range_noise_per_metre: float = 0.0003
    dropout: float = 0.02
    detection_range: float = 75.0  # a 0.33-reflectivity wall is detected about 1 - 1/e of the time here
    beam_error_deg: float = 0.03
    beam_gain_spread: float = 0.2  # log-normal sigma of the per-laser intensity gain

    def calibration(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Per-laser elevation error (deg) and intensity gain: fixed for a sensor, so draw them
        once per sequence."""
        n = len(self.elevations_deg)
        return rng.normal(0, self.beam_error_deg, n), rng.lognormal(0, self.beam_gain_spread, n)

    def directions(self, elevation_error: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(azimuth_steps * beams, 3) unit ray directions in the sensor frame, ordered by azimuth."""
        elevation = np.deg2rad(self.elevations_deg + elevation_error)
        azimuth = rng.uniform(0, 2 * np.pi) + np.arange(self.azimuth_steps) * (2 * np.pi / self.azimuth_steps)
        az, el = np.meshgrid(azimuth, elevation, indexing="ij")
        return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)

    def scan(self, mesh: Mesh, pose: np.ndarray, calibration: tuple[np.ndarray, np.ndarray],
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scan `mesh` (world frame) from world-from-sensor `pose` with a sensor `calibration`.

        Returns (points (N, 4) float32 x, y, z, intensity in the sensor frame, semantic (N,),
        instance (N,)).
        """
        rotation, translation = pose[:3, :3], pose[:3, 3]
        # Move the nearby scene into the sensor frame (small coordinates keep float32 precise).
        near = np.linalg.norm(mesh.vertices[mesh.triangles[:, 0], :2] - translation[:2], axis=1) < self.max_range + 20
        local = mesh.select(near)
        vertices = (local.vertices - translation) @ rotation
        scene = o3d.t.geometry.RaycastingScene()
        # open3d's stubs lack Tensor(ndarray) with dtype and device defaulted: hence the ignores
        scene.add_triangles(
            o3d.core.Tensor(vertices.astype(np.float32)),  # type: ignore[call-overload]
            o3d.core.Tensor(local.triangles.astype(np.uint32)),  # type: ignore[call-overload]
        )
        elevation_error, gain = calibration
        directions = self.directions(elevation_error, rng)
        beam = np.tile(np.arange(len(self.elevations_deg)), self.azimuth_steps)
        rays = np.concatenate([np.zeros_like(directions), directions], axis=1).astype(np.float32)
        hits = scene.cast_rays(o3d.core.Tensor(rays))  # type: ignore[call-overload]
        distance = hits["t_hit"].numpy().astype(np.float64)
        triangle = hits["primitive_ids"].numpy().astype(np.int64)
        normal = hits["primitive_normals"].numpy().astype(np.float64)

        valid = np.isfinite(distance) & (distance >= self.min_range) & (distance <= self.max_range)
        distance, triangle, normal, directions, beam = (
            a[valid] for a in (distance, triangle, normal, directions, beam)
        )
        reflectivity = local.reflectivity[triangle].astype(np.float64)
        cos_incidence = np.abs(np.einsum("ij,ij->i", normal, directions))

        signal = 3.0 * reflectivity * cos_incidence**0.3 * (self.detection_range / np.maximum(distance, 1.0)) ** 2
        detected = rng.random(len(distance)) < (1.0 - np.exp(-signal)) * (1.0 - self.dropout)

        distance = distance[detected] + rng.normal(0, 1, int(detected.sum())) * (
            self.range_noise + self.range_noise_per_metre * distance[detected]
        )
        intensity = reflectivity[detected] * (0.35 + 0.65 * cos_incidence[detected]) * np.exp(-distance / 250.0)
        intensity *= gain[beam[detected]]
        intensity = np.clip(intensity * rng.lognormal(0, 0.15, len(intensity)), 0.0, 0.99)
        xyz = directions[detected] * distance[:, None]
        points = np.concatenate([xyz, intensity[:, None]], axis=1).astype(np.float32)
        triangle = triangle[detected]
        return points, local.semantic[triangle], local.instance[triangle]
