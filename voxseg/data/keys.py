"""The per-point keys of a sample: arrays with one row per point, that follow the points when
transforms drop some and that collate concatenates.

Declared here only. A dataset, transform or test adds its own with `register_point_key("normal")`;
id-valued keys (`register_point_key("group", ids=True)`) hold non-negative ids with -1 for "none",
and collate makes them unique across the samples of a batch.
"""

from __future__ import annotations

_POINT_KEYS: dict[str, bool] = {}  # name -> id-valued


def register_point_key(name: str, ids: bool = False) -> None:
    """Declare `name` a per-point key (`ids`: its values are ids, -1 = none). Registering a key
    again with the same `ids` is allowed; with a different one it is an error."""
    if _POINT_KEYS.get(name, ids) != ids:
        raise ValueError(f"point key {name!r} is already registered with ids={_POINT_KEYS[name]}")
    _POINT_KEYS[name] = ids


def is_point_key(name: str) -> bool:
    return name in _POINT_KEYS


def is_id_key(name: str) -> bool:
    return _POINT_KEYS.get(name, False)


register_point_key("coord")  # (N, 3) float32 metres
register_point_key("feat")  # (N, C) float32 network input
register_point_key("intensity")  # (N, 1) float32
register_point_key("segment")  # (N,) train ids, -1 = ignore
register_point_key("point_index")  # (N,) row of the point in its scan file
register_point_key("instance", ids=True)  # (N,) dense instance ids, -1 = none
register_point_key("group", ids=True)  # (N,) pretraining groups, -1 = none
