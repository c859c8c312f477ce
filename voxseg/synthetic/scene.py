"""Procedural driving scenes: a road with gentle curves and slopes, curbs, sidewalks and terrain,
lined with buildings, fences, trees, poles and signs, with parked and moving cars and standing and
walking pedestrians. Everything is a labelled mesh (voxseg.synthetic.meshes) in world
coordinates, z up; the ego vehicle drives in the right lane.

Positions are given in road coordinates (s, d): arclength s along the centreline and lateral
offset d, positive to the left. Classes are SemanticKITTI raw ids; moving objects use the
"moving-" ids (252 moving-car, 254 moving-person), as SemanticKITTI labels them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from voxseg.synthetic import meshes
from voxseg.synthetic.meshes import Mesh

# SemanticKITTI raw ids used by the scenes
CAR, MOVING_CAR, PERSON, MOVING_PERSON = 10, 252, 30, 254
ROAD, PARKING, SIDEWALK, LANE_MARKING = 40, 44, 48, 60
BUILDING, FENCE, VEGETATION, TRUNK, TERRAIN, POLE, SIGN = 50, 51, 70, 71, 72, 80, 81

LANE_WIDTH = 3.5
EGO_LATERAL = -LANE_WIDTH / 2  # right-hand traffic: the ego lane is right of the centreline
SENSOR_HEIGHT = 1.73  # KITTI's Velodyne is mounted 1.73 m above the road
MARGIN = 110.0  # scene extent beyond the driven stretch, in metres of road


class Road:
    """Centreline with slowly varying heading and grade, sampled every `step` metres."""

    def __init__(self, rng: np.random.Generator, s_min: float, s_max: float, step: float = 0.5):
        self.s = np.arange(s_min, s_max + step, step)
        curve_amp, curve_len = rng.uniform(0.0, 0.25), rng.uniform(150, 400)
        self.heading = rng.uniform(-np.pi, np.pi) + curve_amp * np.sin(
            2 * np.pi * self.s / curve_len + rng.uniform(0, 2 * np.pi))
        d_xy = np.stack([np.cos(self.heading), np.sin(self.heading)], 1) * step
        xy = np.cumsum(d_xy, axis=0)
        self.xy = xy - xy[np.searchsorted(self.s, 0.0)]
        grade, wave_amp, wave_len = rng.uniform(-0.03, 0.03), rng.uniform(0.0, 1.5), rng.uniform(120, 300)
        self.z = grade * self.s + wave_amp * np.sin(2 * np.pi * self.s / wave_len + rng.uniform(0, 2 * np.pi))

    def _interp(self, s: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.interp(s, self.s, values)

    def heading_at(self, s) -> np.ndarray:
        return self._interp(np.asarray(s, float), self.heading)

    def grade_at(self, s) -> np.ndarray:
        return self._interp(np.asarray(s, float), np.gradient(self.z, self.s))

    def point(self, s, d, h=0.0) -> np.ndarray:
        """World xyz of road coordinates (s, d) at height h above the centreline's elevation."""
        s, d, h = np.broadcast_arrays(np.asarray(s, float), np.asarray(d, float), np.asarray(h, float))
        heading = self.heading_at(s)
        x = self._interp(s, self.xy[:, 0]) - np.sin(heading) * d
        y = self._interp(s, self.xy[:, 1]) + np.cos(heading) * d
        return np.stack([x, y, self._interp(s, self.z) + h], axis=-1)

    def strip(self, s0, s1, d0, d1, height: Callable, semantic, reflectivity: float, ds=1.0, dd=None) -> Mesh:
        """Surface over s in [s0, s1], d in [d0, d1] at `height(s, d)`; `semantic` may be a
        function of (s, d) at the triangle centres for strips whose class varies along the road."""
        n_s = max(int(np.ceil((s1 - s0) / ds)), 1) + 1
        n_d = 2 if dd is None else max(int(np.ceil(abs(d1 - d0) / dd)), 1) + 1
        S, D = np.meshgrid(np.linspace(s0, s1, n_s), np.linspace(d0, d1, n_d), indexing="ij")
        vertices = self.point(S, D, height(S, D)).reshape(-1, 3)
        i = (np.arange(n_s - 1)[:, None] * n_d + np.arange(n_d - 1)[None, :]).reshape(-1)
        triangles = np.concatenate([np.stack([i, i + n_d, i + 1], 1), np.stack([i + 1, i + n_d, i + n_d + 1], 1)])
        if callable(semantic):
            centre = lambda grid: grid.reshape(-1)[triangles].mean(1)  # noqa: E731
            labels = np.asarray(semantic(centre(S), centre(D)), dtype=np.int64)
        else:
            labels = np.full(len(triangles), semantic, np.int64)
        n = len(triangles)
        refl = np.full(n, reflectivity, np.float32)
        return Mesh(vertices, triangles, labels, np.zeros(n, np.int64), refl)

    def wall(self, s0, s1, d, h0: Callable, h1: Callable, semantic, reflectivity, ds=1.0) -> Mesh:
        """Vertical face at lateral offset d between heights h0(s) and h1(s) (a curb)."""
        n_s = max(int(np.ceil((s1 - s0) / ds)), 1) + 1
        s = np.linspace(s0, s1, n_s)
        bottom, top = self.point(s, d, h0(s)), self.point(s, d, h1(s))
        vertices = np.stack([bottom, top], 1).reshape(-1, 3)
        i = np.arange(n_s - 1) * 2
        triangles = np.concatenate([np.stack([i, i + 2, i + 1], 1), np.stack([i + 1, i + 2, i + 3], 1)])
        n = len(triangles)
        return Mesh(vertices, triangles, np.full(n, semantic, np.int64), np.zeros(n, np.int64),
                    np.full(n, reflectivity, np.float32))


@dataclass
class Side:
    """Cross-section of one side of the road (sign +1 left, -1 right)."""

    sign: int
    road_edge: float  # |d| of the curb
    curb: float  # curb height
    sidewalk: float  # sidewalk width
    parking: list[tuple[float, float]]  # s-intervals where the outer band is a parking lane
    terrain_slope: float
    bumps: tuple  # (amplitude, wavelength_s, wavelength_d, phase)

    @property
    def sidewalk_edge(self) -> float:
        return self.road_edge + self.sidewalk

    def is_parking(self, s: np.ndarray) -> np.ndarray:
        out = np.zeros(np.shape(s), bool)
        for a, b in self.parking:
            out |= (s >= a) & (s <= b)
        return out

    def terrain_height(self, s: np.ndarray, d: np.ndarray) -> np.ndarray:
        amp, ls, ld, phase = self.bumps
        beyond = np.abs(d) - self.sidewalk_edge
        ramp = np.clip(beyond / 3.0, 0.0, 1.0)  # flat where it meets the sidewalk
        bumps = amp * np.sin(2 * np.pi * s / ls + phase) * np.sin(2 * np.pi * np.abs(d) / ld)
        return self.curb + self.terrain_slope * np.maximum(beyond - 3.0, 0.0) + ramp * bumps


@dataclass
class MovingObject:
    """An object that moves along the road: mesh in its own frame, placed at time t."""

    mesh: Mesh
    s0: float
    d: float
    speed: float  # along +s (negative: driving the other way)
    height: float  # above the centreline's elevation (camber, curb)
    road: Road

    def at(self, t: float) -> Mesh:
        s = self.s0 + self.speed * t
        yaw = float(self.road.heading_at(s)) + (np.pi if self.speed < 0 else 0.0)
        return self.mesh.transformed(meshes.yaw_matrix(yaw), self.road.point(s, self.d, self.height))


@dataclass
class Scene:
    road: Road
    static: Mesh
    moving: list[MovingObject]
    ego_s0: float
    ego_speed: float
    ego_phase: float
    sides: list[Side] = field(default_factory=list)

    def mesh_at(self, t: float) -> Mesh:
        return Mesh.concat([self.static] + [m.at(t) for m in self.moving])

    def ego_pose(self, t: float) -> np.ndarray:
        """World-from-LiDAR 4x4 pose at time t (x forward, y left, z up), following the lane."""
        s = self.ego_s0 + self.ego_speed * t + 0.4 * np.sin(0.7 * t + self.ego_phase)
        d = EGO_LATERAL + 0.12 * np.sin(0.4 * t + 2 * self.ego_phase)
        yaw = float(self.road.heading_at(s)) + 0.01 * np.sin(0.9 * t + self.ego_phase)
        pitch = -np.arctan(float(self.road.grade_at(s)))  # nose up when climbing
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        rotation = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]]) @ np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
        pose = np.eye(4)
        pose[:3, :3] = rotation
        pose[:3, 3] = self.road.point(s, d, SENSOR_HEIGHT)
        return pose


# ------------------------------------------------------------------------------ objects
def car(rng: np.random.Generator, semantic: int, instance: int) -> Mesh:
    """A car or van in its own frame: x forward, centred, wheels on z = 0."""
    van = rng.random() < 0.2
    length = rng.uniform(4.7, 5.3) if van else rng.uniform(3.9, 4.9)
    width = rng.uniform(1.75, 2.0) if van else rng.uniform(1.65, 1.9)
    height = rng.uniform(1.9, 2.2) if van else rng.uniform(1.38, 1.6)
    paint = float(rng.uniform(0.12, 0.75))
    body_h = 0.55 * height if not van else height - 0.35
    parts = [meshes.box((length, width, body_h - 0.3), (0, 0, 0.3 + (body_h - 0.3) / 2), semantic, instance, paint)]
    cabin_len = 0.5 * length if not van else 0.8 * length
    cabin_h = height - body_h
    parts.append(meshes.box((cabin_len, width - 0.12, cabin_h), (-0.05 * length, 0, body_h + cabin_h / 2),
                            semantic, instance, 0.1))
    for fx in (-0.32, 0.32):
        for fy in (-1, 1):
            base = (fx * length, fy * (width / 2 - 0.1) - 0.11, 0.33)
            parts.append(meshes.cylinder(0.33, 0.22, base, semantic, instance, 0.05, axis=(0, 1, 0), resolution=10))
    return Mesh.concat(parts)


def pedestrian(rng: np.random.Generator, semantic: int, instance: int) -> Mesh:
    height = rng.uniform(1.5, 1.92)
    cloth = float(rng.uniform(0.1, 0.6))
    leg_h, torso_h = 0.47 * height, 0.33 * height
    stride = rng.uniform(-0.15, 0.15)
    parts = [
        meshes.box((0.14, 0.13, leg_h), (stride, 0.1, leg_h / 2), semantic, instance, cloth),
        meshes.box((0.14, 0.13, leg_h), (-stride, -0.1, leg_h / 2), semantic, instance, cloth),
        meshes.box((0.24, 0.42, torso_h), (0, 0, leg_h + torso_h / 2), semantic, instance, cloth),
        meshes.box((0.1, 0.09, torso_h * 0.95), (0, 0.26, leg_h + torso_h * 0.5), semantic, instance, cloth),
        meshes.box((0.1, 0.09, torso_h * 0.95), (0, -0.26, leg_h + torso_h * 0.5), semantic, instance, cloth),
        meshes.sphere(0.11, (0, 0, height - 0.11), semantic, instance, 0.3),
    ]
    return Mesh.concat(parts)


def tree(rng: np.random.Generator, base: np.ndarray, trunk_height: float | None = None) -> Mesh:
    trunk_h = trunk_height or rng.uniform(1.8, 3.5)
    radius = rng.uniform(0.1, 0.22)
    r_xy, r_z = rng.uniform(1.4, 3.2), rng.uniform(1.2, 2.8)
    count = int(90 * (2 * r_xy * r_xy + r_xy * r_z))
    crown = meshes.leaf_cloud(base + (0, 0, trunk_h + 0.7 * r_z), (r_xy, r_xy * rng.uniform(0.8, 1.2), r_z), count, rng,
                              reflectivity=rng.uniform(0.35, 0.55))
    trunk = meshes.cylinder(radius, trunk_h + r_z, base - (0, 0, 0.2), TRUNK, 0, rng.uniform(0.3, 0.5), resolution=8)
    return Mesh.concat([trunk, crown])


def bush(rng: np.random.Generator, base: np.ndarray, yaw: float, length: float | None = None) -> Mesh:
    rx = length / 2 if length else rng.uniform(0.6, 2.0)
    ry, rz = rng.uniform(0.5, 1.2), rng.uniform(0.4, 1.0)
    count = int(110 * (rx * ry + ry * rz + rx * rz))
    cloud = meshes.leaf_cloud(np.zeros(3), (rx, ry, rz), count, rng, reflectivity=rng.uniform(0.35, 0.55),
                              leaf_size=0.25)
    return cloud.transformed(meshes.yaw_matrix(yaw), base + (0, 0, rz * 0.8))


def street_lamp(rng: np.random.Generator, base: np.ndarray, toward_road: np.ndarray) -> Mesh:
    h = rng.uniform(6.5, 9.0)
    arm = rng.uniform(1.0, 2.0)
    top = base + (0, 0, h)
    return Mesh.concat([
        meshes.cylinder(rng.uniform(0.08, 0.14), h + 0.3, base - (0, 0, 0.3), POLE, 0, 0.45),
        meshes.cylinder(0.05, arm, top - (0, 0, 0.1), POLE, 0, 0.45, axis=(*toward_road, 0.0)),
        meshes.box((0.5, 0.25, 0.15), top + np.r_[toward_road * arm, -0.2], POLE, 0, 0.5),
    ])


def traffic_sign(rng: np.random.Generator, base: np.ndarray, yaw: float) -> Mesh:
    h = rng.uniform(2.0, 2.8)
    size = rng.uniform(0.55, 0.85)
    plate = meshes.box((0.04, size, size), base + (0, 0, h + size / 2), SIGN, 0, rng.uniform(0.85, 1.0), yaw=yaw)
    return Mesh.concat([meshes.cylinder(0.04, h + 0.3, base - (0, 0, 0.3), POLE, 0, 0.4, resolution=8), plate])


# -------------------------------------------------------------------------------- scene
def build_scene(rng: np.random.Generator, drive_length: float) -> Scene:
    """A scene around a drive of `drive_length` metres starting at s = 0."""
    s_min, s_max = -MARGIN, drive_length + MARGIN
    road = Road(rng, s_min - 5, s_max + 5)
    sides = [_side(rng, sign, s_min, s_max) for sign in (1, -1)]
    static: list[Mesh] = [_road_surface(road, sides, s_min, s_max)]
    moving: list[MovingObject] = []
    next_instance = iter(range(1, 0xFFFF))

    for side in sides:
        static += _roadside(rng, road, side, s_min, s_max)
        # parked cars along the parking stretches
        for a, b in side.parking:
            s = a + rng.uniform(0.5, 4.0)
            while s < b - 5:
                if rng.random() < 0.65:
                    yaw_flip = np.pi if rng.random() < 0.5 else 0.0
                    mesh = car(rng, CAR, next(next_instance))
                    length = np.ptp(mesh.vertices[:, 0])
                    centre = s + length / 2
                    yaw = float(road.heading_at(centre)) + yaw_flip + rng.normal(0, 0.03)
                    d = side.sign * (LANE_WIDTH + 1.2 + rng.normal(0, 0.1))
                    position = road.point(centre, d, -0.02 * abs(d))  # on the cambered asphalt
                    static.append(mesh.transformed(meshes.yaw_matrix(yaw), position))
                    s += length + rng.uniform(0.6, 3.0)
                else:
                    s += rng.uniform(4.0, 8.0)
        # pedestrians on the sidewalk: some standing, some walking
        for _ in range(rng.poisson(0.08 * (s_max - s_min))):
            s = rng.uniform(s_min, s_max)
            d = side.sign * (side.road_edge + rng.uniform(0.5, max(side.sidewalk - 0.5, 0.6)))
            h = side.curb
            if rng.random() < 0.5:
                mesh = pedestrian(rng, MOVING_PERSON, next(next_instance))
                moving.append(MovingObject(mesh, s, d, rng.choice([-1, 1]) * rng.uniform(1.0, 1.6), h, road))
            else:
                yaw = rng.uniform(-np.pi, np.pi)
                person = pedestrian(rng, PERSON, next(next_instance))
                static.append(person.transformed(meshes.yaw_matrix(yaw), road.point(s, d, h)))

    ego_speed = float(rng.uniform(6.0, 9.0))
    duration = drive_length / ego_speed
    # oncoming traffic in the left lane, spread so that several cars pass during the drive
    for _ in range(rng.integers(2, 6)):
        speed = rng.uniform(8.0, 13.0)
        s0 = rng.uniform(0.3 * MARGIN, drive_length + speed * duration + 0.6 * MARGIN)
        d = LANE_WIDTH / 2
        moving.append(MovingObject(car(rng, MOVING_CAR, next(next_instance)), s0, d, -speed, -0.02 * d, road))
    # traffic ahead in the ego lane, keeping roughly the ego's pace
    for gap in np.cumsum(rng.uniform(14.0, 35.0, rng.integers(0, 3))):
        speed = ego_speed + rng.uniform(-0.8, 1.5)
        moving.append(MovingObject(car(rng, MOVING_CAR, next(next_instance)), float(gap), EGO_LATERAL, speed,
                                   -0.02 * abs(EGO_LATERAL), road))
    return Scene(road, Mesh.concat(static), moving, 0.0, ego_speed, float(rng.uniform(0, 2 * np.pi)), sides)


def _side(rng: np.random.Generator, sign: int, s_min: float, s_max: float) -> Side:
    parking, s = [], s_min
    while s < s_max:
        length = rng.uniform(20, 70)
        if rng.random() < 0.4:
            parking.append((s, s + length))
        s += length + rng.uniform(5, 40)
    return Side(
        sign=sign,
        road_edge=LANE_WIDTH + 2.4,  # two lanes plus a parking / shoulder band on each side
        curb=float(rng.uniform(0.1, 0.18)),
        sidewalk=float(rng.uniform(1.8, 4.0)),
        parking=parking,
        terrain_slope=float(rng.uniform(-0.12, 0.25)),
        bumps=(rng.uniform(0.05, 0.3), rng.uniform(15, 40), rng.uniform(6, 20), rng.uniform(0, 2 * np.pi)),
    )


def _road_surface(road: Road, sides: list[Side], s0: float, s1: float) -> Mesh:
    camber = lambda s, d: -0.02 * np.abs(d)  # noqa: E731  (crowned road drains to the curbs)
    parts = []
    for side in sides:
        sg, edge = side.sign, side.road_edge

        def band_class(s, d, side=side):
            return np.where(side.is_parking(s), PARKING, ROAD)

        parts.append(road.strip(s0, s1, 0.0, sg * LANE_WIDTH, camber, ROAD, 0.22, dd=1.75))
        parts.append(road.strip(s0, s1, sg * LANE_WIDTH, sg * edge, camber, band_class, 0.22, ds=0.5, dd=1.2))
        low = lambda s, edge=edge: -0.02 * edge + 0 * s  # noqa: E731
        high = lambda s, side=side: side.curb + 0 * s  # noqa: E731
        parts.append(road.wall(s0, s1, sg * edge, low, high, SIDEWALK, 0.3))
        parts.append(road.strip(s0, s1, sg * edge, sg * side.sidewalk_edge, lambda s, d, c=side.curb: c + 0 * s,
                                SIDEWALK, 0.3))
        parts.append(road.strip(s0, s1, sg * side.sidewalk_edge, sg * 75.0, side.terrain_height, TERRAIN, 0.35, dd=1.5))
    # lane markings: dashed centre line (3 m of paint every 9 m), 1 cm above the asphalt
    paint = []
    for a in np.arange(s0, s1 - 3, 9.0):
        paint.append(road.strip(a, a + 3, -0.08, 0.08, lambda s, d: 0.01 + 0 * s, LANE_MARKING, 0.75, ds=1.5))
    for side in sides:  # solid lines between the lanes and the shoulder / parking band
        d = side.sign * LANE_WIDTH
        paint.append(road.strip(s0, s1, d - 0.07, d + 0.07, lambda s, d: 0.01 - 0.02 * np.abs(d), LANE_MARKING, 0.75))
    return Mesh.concat(parts + paint)


def _roadside(rng: np.random.Generator, road: Road, side: Side, s0: float, s1: float) -> list[Mesh]:
    parts: list[Mesh] = []
    sg, outer = side.sign, side.sidewalk_edge
    ground = lambda s, d: road.point(s, d, side.terrain_height(np.asarray(s), np.asarray(d)))  # noqa: E731

    # buildings in blocks; front yards (terrain, bushes, fences) between some and the sidewalk
    s = s0 + rng.uniform(-10, 10)
    while s < s1:
        length = rng.uniform(8, 32)
        if rng.random() < 0.65:
            setback = 0.0 if rng.random() < 0.35 else rng.uniform(3, 14)
            depth, height = rng.uniform(8, 16), rng.uniform(4, 20)
            centre_s = s + length / 2
            d = sg * (outer + setback + depth / 2)
            base = ground(centre_s, d)
            yaw = float(road.heading_at(centre_s))
            refl = float(rng.uniform(0.2, 0.6))
            parts.append(meshes.box((length, depth, height + 2), base + (0, 0, height / 2 - 1), BUILDING, 0, refl,
                                    yaw=yaw))
            if rng.random() < 0.35:  # a lower wing or annex for less box-like blocks
                wing = (rng.uniform(3, length * 0.6), rng.uniform(2, 5), rng.uniform(2.5, height * 0.6) + 1)
                d_wing = sg * (outer + setback - wing[1] / 2 + 0.01)
                if setback > wing[1] + 0.5:
                    parts.append(meshes.box(wing, ground(centre_s, d_wing) + (0, 0, wing[2] / 2 - 1), BUILDING, 0,
                                            refl, yaw=yaw))
            if setback > 2 and rng.random() < 0.5:  # fence along the sidewalk
                fence_d = sg * (outer + 0.3)
                fh = rng.uniform(0.9, 1.8)
                parts.append(meshes.box((length, 0.06, fh), ground(centre_s, fence_d) + (0, 0, fh / 2), FENCE, 0, 0.35,
                                        yaw=yaw))
            if setback > 2 and rng.random() < 0.4:  # a hedge along the yard
                hs = centre_s + rng.uniform(-0.2, 0.2) * length
                hedge_len = rng.uniform(0.4, 0.9) * length
                parts.append(bush(rng, ground(hs, sg * (outer + 1.0)), float(road.heading_at(hs)), hedge_len))
            for _ in range(rng.poisson(setback / 2.5)):
                bs = rng.uniform(s, s + length)
                bd = sg * (outer + rng.uniform(0.8, max(setback - 0.8, 1.0)))
                if rng.random() < 0.35 and setback > 4:
                    parts.append(tree(rng, ground(bs, bd)))
                else:
                    parts.append(bush(rng, ground(bs, bd), float(road.heading_at(bs))))
        else:  # an open lot: terrain with trees, bushes and often a hedge along the sidewalk
            if rng.random() < 0.6:
                hs = s + length / 2
                parts.append(bush(rng, ground(hs, sg * (outer + 0.9)), float(road.heading_at(hs)), 0.9 * length))
            for _ in range(rng.poisson(length / 3)):
                ts = rng.uniform(s, s + length)
                td = sg * (outer + rng.uniform(2, 25))
                if rng.random() < 0.6:
                    parts.append(tree(rng, ground(ts, td)))
                else:
                    parts.append(bush(rng, ground(ts, td), float(road.heading_at(ts))))
        s += length + (rng.uniform(0, 3) if rng.random() < 0.6 else rng.uniform(5, 15))

    # street trees, lamps and signs on the sidewalk
    curb_side = sg * (side.road_edge + 0.45)
    if rng.random() < 0.85:
        spacing = rng.uniform(6, 12)
        for ts in np.arange(s0 + rng.uniform(0, spacing), s1, spacing):
            if rng.random() < 0.8:
                parts.append(tree(rng, road.point(ts, sg * (side.road_edge + min(1.0, side.sidewalk / 2)), side.curb)))
    spacing = rng.uniform(20, 35)
    for ls in np.arange(s0 + rng.uniform(0, spacing), s1, spacing):
        heading = float(road.heading_at(ls))
        toward_road = -sg * np.array([-np.sin(heading), np.cos(heading)])
        parts.append(street_lamp(rng, road.point(ls, curb_side, side.curb), toward_road))
    for ss in np.arange(s0 + rng.uniform(0, 40), s1, rng.uniform(35, 70)):
        yaw = float(road.heading_at(ss))
        parts.append(traffic_sign(rng, road.point(ss, sg * (side.road_edge + 0.3), side.curb), yaw))
    return parts
