#!/usr/bin/env python3
"""Turn Natural Earth land polygons (TopoJSON, from the npm package
``world-atlas``) into the SVG path of the status page's world map.

Usage::

    python3 docs/maps/make_land_path.py path/to/land-110m.json [geodns/static/status.html]

The path replaces whatever lies between ``<!-- land:begin -->`` and
``<!-- land:end -->`` in the page.  See docs/maps/README.md.

Theory of operation.  A TopoJSON topology stores each shared boundary once,
as an *arc*: a list of integer positions, each but the first a delta from the
one before, mapped to degrees by ``transform`` (scale and translate).  A ring
is a list of arc indices; index ``~i`` (that is, ``-i - 1``) means arc ``i``
reversed, and consecutive arcs share their joining point, which is kept once.

The map is equirectangular: x = lon + 180, y = 90 - lat, in a 360 x 180 box.
Positions are written in tenths of a degree (the path carries
``transform="scale(.1)"``), as integers, relative to the previous point, so
the path stays small; 0.1 degree is about a third of a pixel on a full-width
map.

Two kinds of ring need care on a flat map:

* a ring that crosses the antimeridian (Chukotka, Fiji, Wrangel Island) jumps
  by about 360 degrees between two points.  The ring is unwrapped into
  continuous longitudes and then clipped at x = 0 and x = 360; what lies
  beyond one edge is shifted by 360 degrees to the other side.
* a ring that goes round a pole (Antarctica) gains 360 degrees of longitude
  in one trip.  Unwrapped, it runs from one edge of the map to the other and
  is closed along the pole.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

Point = tuple[float, float]  # (lon, lat) in degrees
Ring = list[Point]

BEGIN = "<!-- land:begin -->"
END = "<!-- land:end -->"
UNITS = 10  # path units per degree


def decode_arcs(topology: dict[str, object]) -> list[Ring]:
    transform = topology.get("transform")
    if isinstance(transform, dict):
        (sx, sy), (tx, ty) = transform["scale"], transform["translate"]
    else:  # an unquantized topology holds degrees and no deltas
        sx = sy = 1.0
        tx = ty = 0.0
    arcs = topology["arcs"]
    assert isinstance(arcs, list)
    out = []
    for arc in arcs:
        x = y = 0
        points = []
        for position in arc:
            if isinstance(transform, dict):
                x += position[0]
                y += position[1]
            else:
                x, y = position[0], position[1]
            points.append((x * sx + tx, y * sy + ty))
        out.append(points)
    return out


def ring_points(indices: list[int], arcs: list[Ring]) -> Ring:
    points: Ring = []
    for index in indices:
        arc = arcs[index] if index >= 0 else arcs[~index][::-1]
        points.extend(arc if not points else arc[1:])
    return points


def polygons(geometry: dict[str, object]) -> list[list[list[int]]]:
    kind = geometry.get("type")
    arcs = geometry.get("arcs")
    if kind == "Polygon":
        return [arcs]  # type: ignore[list-item]
    if kind == "MultiPolygon":
        return arcs  # type: ignore[return-value]
    if kind == "GeometryCollection":
        out = []
        for child in geometry["geometries"]:  # type: ignore[attr-defined]
            out.extend(polygons(child))
        return out
    return []


def unwrap(ring: Ring) -> Ring:
    """Longitudes made continuous: no step is longer than 180 degrees."""
    out = [ring[0]]
    for lon, lat in ring[1:]:
        prev = out[-1][0]
        while lon - prev > 180:
            lon -= 360
        while lon - prev < -180:
            lon += 360
        out.append((lon, lat))
    return out


def close_round_pole(ring: Ring) -> Ring:
    """A ring that gains 360 degrees of longitude encloses a pole: close it
    along the pole instead of straight back across the map."""
    gain = ring[-1][0] - ring[0][0]
    if abs(gain) < 180:
        return ring
    # Which pole depends on the ring's winding convention; for land (only
    # Antarctica goes round a pole) the nearer pole is the one enclosed.
    mean_lat = sum(lat for _, lat in ring) / len(ring)
    pole = -90.0 if mean_lat < 0 else 90.0
    return [*ring, (ring[-1][0], pole), (ring[0][0], pole)]


def clip(ring: Ring, inside: Callable[[Point], bool], cut: float) -> Ring:
    """Sutherland-Hodgman against one vertical line lon = cut."""
    out: Ring = []
    for i, current in enumerate(ring):
        previous = ring[i - 1]
        if inside(current) != inside(previous):
            (x0, y0), (x1, y1) = previous, current
            t = (cut - x0) / (x1 - x0)
            out.append((cut, y0 + t * (y1 - y0)))
        if inside(current):
            out.append(current)
    return out


def on_map(ring: Ring) -> list[Ring]:
    """The pieces of an unwrapped ring within -180..180, shifted there."""
    pieces = []
    for shift in (-360.0, 0.0, 360.0):
        moved = [(lon + shift, lat) for lon, lat in ring]
        if max(lon for lon, _ in moved) <= -180 or min(lon for lon, _ in moved) >= 180:
            continue
        moved = clip(moved, lambda p: p[0] >= -180, -180.0)
        if moved:
            moved = clip(moved, lambda p: p[0] <= 180, 180.0)
        if len(moved) >= 3:
            pieces.append(moved)
    return pieces


def number_pairs(values: list[int]) -> str:
    """SVG numbers with as few separators as the grammar allows."""
    text = ""
    for value in values:
        item = str(value)
        text += item if not text or item.startswith("-") else " " + item
    return text


def path_data(rings: list[Ring]) -> str:
    parts = []
    for ring in rings:
        grid: list[tuple[int, int]] = []
        for lon, lat in ring:
            point = (round((lon + 180) * UNITS), round((90 - lat) * UNITS))
            if not grid or point != grid[-1]:
                grid.append(point)
        if len(grid) > 1 and grid[0] == grid[-1]:
            grid.pop()
        if len(grid) < 3:
            continue
        x0, y0 = grid[0]
        deltas = []
        for (ax, ay), (bx, by) in itertools.pairwise(grid):
            deltas += [bx - ax, by - ay]
        parts.append(f"M{x0} {y0}l{number_pairs(deltas)}z")
    return "".join(parts)


def land_rings(topology: dict[str, object]) -> list[Ring]:
    arcs = decode_arcs(topology)
    objects = topology["objects"]
    assert isinstance(objects, dict)
    land = objects.get("land") or next(iter(objects.values()))
    rings = []
    for polygon in polygons(land):
        for indices in polygon:
            points = ring_points(indices, arcs)
            if len(points) >= 3:
                rings.extend(on_map(close_round_pole(unwrap(points))))
    return rings


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    topology = json.loads(Path(argv[1]).read_text())
    page = Path(argv[2]) if len(argv) == 3 else \
        Path(__file__).resolve().parents[2] / "geodns" / "static" / "status.html"
    d = path_data(land_rings(topology))
    html = page.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(html):
        print(f"{page}: no {BEGIN} ... {END} markers", file=sys.stderr)
        return 1
    element = f'<path id="land" transform="scale(.1)" d="{d}"/>'
    page.write_text(pattern.sub(lambda _: BEGIN + element + END, html, count=1))
    print(f"{page}: {len(d)} bytes of land path, page now {page.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
