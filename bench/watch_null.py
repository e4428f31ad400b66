"""False alerts of `cost_per_hour` on incident-free weeks, and how well its noise model fits.

Each seed generates the workload of `watch_eval.py` (four weeks, six features, 15 % hour-to-
hour traffic noise) with nothing injected, rolls it up, and judges its last seven days in
one catch-up cycle (the detector reads only the days before each judged day, so this is
what hour-by-hour cycles find). Printed:

- false alerts (new incidents, as `unitcost watch` would open them) for each `sigmas`;
- the spread of the one-hour z-score log(observed / baseline) / modelled deviation over
  every scope and judged hour, which is a standard normal variable if the model is right.

    .venv/bin/python bench/watch_null.py --weeks 36 --sigmas 3.5 3.75 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from unitcost.ledger.duckdb_store import DuckDBStore
from unitcost.watch.detectors.base import Context, Finding
from unitcost.watch.detectors.cost_hour import CostPerHour
from unitcost.watch.detectors.seasonal import expect
from unitcost.watch.incidents import Incidents
from unitcost.watch.rollup import hourly_frame, roll_up
from unitcost.watch.scope import ScopedValue
from unitcost.watch.synthetic import Workload

START = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday
DAYS = 28


def workload_frame(workload: Workload, path: Path) -> pd.DataFrame:
    """The workload's four weeks written at once to a ledger at `path`, as hourly rollups."""
    end = START + timedelta(days=DAYS)
    store = DuckDBStore(path)
    store.append(workload.events(START, end, ingested_at=end))
    roll_up(store)
    frame = hourly_frame(store, START, end).to_pandas()
    store.close()
    frame["hour"] = frame["hour"].astype("datetime64[ns, UTC]")
    return frame


def rollups(seed: int, workdir: Path) -> pd.DataFrame:
    return workload_frame(Workload(START, DAYS, seed), workdir / f"null-{seed}.duckdb")


def judge(frame: pd.DataFrame, sigmas: float) -> list[Finding]:
    detector = CostPerHour()
    end = START + timedelta(days=DAYS)
    hours = list(pd.date_range(end - timedelta(days=7), end, freq="h", tz="UTC", inclusive="left"))
    start = hours[0].to_pydatetime() - detector.lookback
    ctx = Context(
        store=None,  # type: ignore[arg-type]  # the detector reads the rollups only
        frame=frame,
        start=start,
        end=end,
        eval_hours=[h.to_pydatetime() for h in hours],
        data_start=START,
        settings=ScopedValue({**detector.defaults, "sigmas": sigmas}),
        state={},
    )
    return detector.detect(ctx)


def alerts(findings: list[Finding], workdir: Path, name: str) -> list[Finding]:
    """The findings that would open an incident (the real incident logic, in a scratch ledger)."""
    store = DuckDBStore(workdir / f"{name}.duckdb")
    incidents = Incidents(store, cooldown=timedelta(hours=1), resolve_after=timedelta(hours=3))
    opened = []
    for finding in sorted(findings, key=lambda f: f.at):
        if any(n.kind == "opened" for n in incidents.apply([finding], finding.at)):
            opened.append(finding)
    store.close()
    return opened


def one_hour_z(frame: pd.DataFrame) -> np.ndarray:
    """z of every judged hour of every org, team and feature series."""
    out = []
    index = pd.date_range(START, START + timedelta(days=DAYS), freq="h", tz="UTC", inclusive="left")
    for dims in CostPerHour.levels:

        def wide(column: str, dims: tuple[str, ...] = dims) -> pd.DataFrame:
            if not dims:
                return frame.groupby("hour")[column].sum().to_frame("org").reindex(index).fillna(0.0)
            sums = frame.groupby(["hour", *dims])[column].sum().unstack(list(dims))
            return sums.reindex(index).fillna(0.0)

        cost, sq = wide("cost"), wide("cost_sq")
        week = len(index) - 7 * 24
        e = expect(cost.to_numpy(), sq.to_numpy(), index, week, weeks=4)
        x = cost.to_numpy()[week:]
        sd = np.sqrt(e.own_var + e.base_var + e.level_var)[week:]
        with np.errstate(all="ignore"):
            z = np.log(x / e.base[week:]) / sd
        out.append(z[np.isfinite(z)])
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weeks", type=int, default=12, help="incident-free workloads (seeds)")
    parser.add_argument("--first-seed", type=int, default=201)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[3.5, 3.75, 4.0])
    args = parser.parse_args()
    started = time.perf_counter()
    false_alerts: dict[float, list[Finding]] = {s: [] for s in args.sigmas}
    zs = []
    with tempfile.TemporaryDirectory(prefix="unitcost-watch-null-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.weeks):
            frame = rollups(seed, Path(tmp))
            zs.append(one_hour_z(frame))
            for sigmas in args.sigmas:
                found = alerts(judge(frame, sigmas), Path(tmp), f"alerts-{seed}-{sigmas}")
                false_alerts[sigmas].extend(found)
            print(f"seed {seed}: " + ", ".join(f"{len(v)}" for v in false_alerts.values()), flush=True)
    print()
    print(f"| sigmas | false alerts in {args.weeks} weeks | per week |")
    print("|---:|---:|---:|")
    for sigmas, found in false_alerts.items():
        print(f"| {sigmas} | {len(found)} | {len(found) / args.weeks:.2f} |")
    z = np.concatenate(zs)
    normal = NormalDist()
    print()
    print(
        f"one-hour z over {len(z):,} scope-hours: mean {np.mean(z):+.3f}, standard deviation {np.std(z):.3f}"
    )
    for t in (2.0, 3.0, 3.5, 4.0):
        print(f"  P(z > {t}): {np.mean(z > t):.1e} (standard normal {1 - normal.cdf(t):.1e})")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
