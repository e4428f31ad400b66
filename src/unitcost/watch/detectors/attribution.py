"""Which scope an excess belongs to: the organisation, a team, or a feature of a team.

Take the fewest children of the scope that account for at least `share` of its excess. If
they rose alone (the rest of the scope rose by less than half as much relative to its
usual cost, or by less than the minimum excess), the excess is theirs: one child takes the
finding and hands it further down the same way; several each take it if anomalous on their
own (several incidents at once). Otherwise the change is broad (every child rose, or the
rest rose too): it stays on the scope, and its children's findings of the same hour are
parts of it, not incidents of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..scope import Scope

Node = tuple[int, int]
"""(level, series): level 0 is the organisation, each next level splits the one before."""


@dataclass(frozen=True)
class Window:
    """What a scope cost over the judged hours, and what it usually costs."""

    observed: float
    usual: float

    @property
    def excess(self) -> float:
        return self.observed - self.usual


@dataclass(frozen=True)
class Owner:
    node: Node
    broad: bool
    """True when the excess stays on a scope that has children: it then covers them."""


class ScopeTree:
    def __init__(self, levels: Sequence[Sequence[Scope]]) -> None:
        self.levels = levels
        self.children: dict[Node, list[Node]] = {}
        for li in range(1, len(levels)):
            parents = {scope: j for j, scope in enumerate(levels[li - 1])}
            for j, scope in enumerate(levels[li]):
                parent = next((parents[p] for p in _ancestors(scope) if p in parents), None)
                if parent is not None:
                    self.children.setdefault((li - 1, parent), []).append((li, j))

    def explain(
        self,
        node: Node,
        window: Callable[[Node], Window],
        flagged: Callable[[Node], bool],
        share: float,
        min_excess: float,
    ) -> list[Owner]:
        """The narrowest scopes that explain the excess of `node` over one window. When several
        children share it, only those anomalous on their own (`flagged`) are reported: the others
        are ordinary hours that happen to be up."""
        total = window(node).excess
        children = self.children.get(node, [])
        if total <= 0 or not children:
            return [Owner(node, broad=False)]
        ranked = sorted(children, key=lambda c: window(c).excess, reverse=True)
        picked: list[Node] = []
        for child in ranked:
            if sum(window(c).excess for c in picked) >= share * total or window(child).excess <= 0:
                break
            picked.append(child)
        if sum(window(c).excess for c in picked) < share * total:
            return [Owner(node, broad=True)]
        rest = [c for c in children if c not in picked]
        every_child_rose = not rest and len(picked) > 1
        if every_child_rose or rest_rose(sum_windows(window, picked), sum_windows(window, rest), min_excess):
            return [Owner(node, broad=True)]
        if len(picked) > 1:
            picked = [c for c in picked if flagged(c)]
            if not picked:
                return [Owner(node, broad=True)]
        return [
            owner for child in picked for owner in self.explain(child, window, flagged, share, min_excess)
        ]

    def inside(self, node: Node) -> set[Node]:
        """Every node below `node`."""
        out: set[Node] = set()
        stack = list(self.children.get(node, []))
        while stack:
            child = stack.pop()
            out.add(child)
            stack.extend(self.children.get(child, []))
        return out


def sum_windows(window: Callable[[Node], Window], nodes: Sequence[Node]) -> Window:
    return Window(sum(window(n).observed for n in nodes), sum(window(n).usual for n in nodes))


def rest_rose(picked: Window, rest: Window, min_excess: float) -> bool:
    """Whether the rest of a scope rose with the children that explain most of its excess, by at
    least half as much in relative terms and by min_excess in money: then the change is broad."""
    if rest.usual <= 0 or picked.usual <= 0 or rest.excess < min_excess:
        return False
    return rest.excess / rest.usual >= 0.5 * picked.excess / picked.usual


def _ancestors(scope: Scope) -> list[Scope]:
    """The scopes one dimension wider, most specific first (team+feature -> team)."""
    dims = list(scope.dims)
    return [Scope(tuple(dims[:k] + dims[k + 1 :]), scope.tags) for k in reversed(range(len(dims)))]
