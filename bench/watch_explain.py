"""Why `cost_per_hour` sees an injected cost spike when it does: the numbers behind each hour.

For each seed of `watch_eval.py` (same workload, same incidents), the whole month is rolled up
and judged as one catch-up cycle (the detector reads only the days before each judged day, so
this is what the hourly cycles see), and for the spiked feature:

- one summary line: the modelled noise of one hour (standard deviation of log cost), the
  z-score a doubling would have if that hour's noise were exactly average (log 2 / noise),
  the ratio observed / baseline of each incident hour, and the best z-score available at the
  end of each hour (any window of 1, 2 or 3 hours ending then);
- with --detail, every scope that contains the feature (org, team, feature), hour by hour from
  the hour before the incident to the hour after: cost, baseline, ratio, calls, the parts of
  the noise (traffic dispersion δ, compound-Poisson κ / baseline, the baseline's own error),
  and the z-score of each window (* = flagged at the default settings).

    .venv/bin/python bench/watch_explain.py --seeds 18
    .venv/bin/python bench/watch_explain.py --seeds 1 --first-seed 2 --detail
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from unitcost.watch.detectors.base import Context
from unitcost.watch.detectors.cost_hour import CONTEXT_HOURS, CostPerHour
from unitcost.watch.scope import ScopedValue
from unitcost.watch.synthetic import Incident, Workload, default_incidents
from watch_eval import DAYS, EVAL_HOURS, START, compatible
from watch_null import workload_frame

END = START + timedelta(days=DAYS)
WIDTHS = (1, 2, 3)


def rollups(seed: int, workdir: Path) -> tuple[pd.DataFrame, list[Incident]]:
    eval_start = END - timedelta(hours=EVAL_HOURS)
    workload = Workload(START, DAYS, seed)
    workload.incidents = default_incidents(np.random.default_rng(seed), eval_start, EVAL_HOURS - 26)
    frame = workload_frame(workload, workdir / f"explain-{seed}.duckdb")
    for dim in ("team", "feature", "model", "provider", "app"):
        frame[dim] = frame[dim].astype(object)
    return frame, workload.incidents


def explain(seed: int, workdir: Path, detail: bool) -> None:
    frame, incidents = rollups(seed, workdir)
    spike = next(i for i in incidents if i.kind == "cost_spike")
    detector = CostPerHour()
    judged = pd.date_range(END - timedelta(hours=EVAL_HOURS), END, freq="h", tz="UTC", inclusive="left")
    ctx = Context(
        store=None,  # type: ignore[arg-type]  # the detector reads the rollups only
        frame=frame,
        start=judged[0].to_pydatetime() - detector.lookback,
        end=END,
        eval_hours=[h.to_pydatetime() for h in judged],
        data_start=START,
        settings=ScopedValue(dict(detector.defaults)),
        state={},
    )
    index = ctx.hours()
    first = int(index.searchsorted(judged[0])) - CONTEXT_HOURS
    weeks = int(detector.defaults["weeks"])
    # The detector's own per-level computation (baseline, noise, windows), read for display.
    levels = [detector._level(ctx, dims, index, first, weeks, list(WIDTHS)) for dims in detector.levels]
    calls = [ctx.pivot("calls", dims) for dims in detector.levels]
    i0 = int(index.searchsorted(pd.Timestamp(spike.start)))
    finest = levels[-1]
    j = next(k for k, s in enumerate(finest.scopes) if s.as_dict().get("feature") == spike.feature.feature)
    e = finest.expectation
    noise = float(np.sqrt(e.own_var[i0, j] + e.base_var[i0, j] + e.level_var[i0, j]))
    ratios = [finest.cost[i0 + k, j] / e.base[i0 + k, j] for k in range(spike.hours)]
    best = [
        max(float(finest.windows[w].z[i0 + k, j]) for w in WIDTHS if w <= k + 1) for k in range(spike.hours)
    ]
    print(
        f"seed {seed:3d} {spike.feature.team}/{spike.feature.feature} x{spike.magnitude:g} from "
        f"{spike.start:%a %d %H:%M}: noise of one hour {noise:.3f}, a doubling is z {np.log(2) / noise:.2f}; "
        f"observed/baseline {' '.join(f'{r:.2f}' for r in ratios)}; best z by hour "
        f"{' '.join(f'{z:.2f}' for z in best)}",
        flush=True,
    )
    if not detail:
        return
    for li, level in enumerate(levels):
        for j, scope in enumerate(level.scopes):
            if not compatible(scope.as_dict(), spike):
                continue
            x = level.expectation
            print(
                f"  {scope.label}: traffic dispersion δ {x.dispersion[i0, j]:.3f}, "
                f"lag-one correlation {x.rho[i0, j]:.2f}, weekday level variance {x.level_var[i0, j]:.4f}"
            )
            for i in range(i0 - 1, i0 + spike.hours + 1):
                kappa = x.own_var[i, j] - x.dispersion[i, j] ** 2
                sd = np.sqrt(x.own_var[i, j] + x.base_var[i, j] + x.level_var[i, j])
                zs = " ".join(
                    f"z{w}h {level.windows[w].z[i, j]:6.2f}{'*' if level.windows[w].flagged[i, j] else ' '}"
                    for w in WIDTHS
                )
                print(
                    f"    {index[i]:%a %H:%M} cost {level.cost[i, j]:8.2f} baseline {x.base[i, j]:8.2f} "
                    f"ratio {level.cost[i, j] / x.base[i, j]:5.2f} calls {calls[li].iloc[i, j]:5.0f} "
                    f"noise {sd:.3f} (κ/baseline {kappa:.4f}, baseline {x.base_var[i, j]:.4f}) {zs}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--detail", action="store_true", help="every scope and hour, not one line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="unitcost-watch-explain-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            explain(seed, Path(tmp), args.detail)


if __name__ == "__main__":
    main()
