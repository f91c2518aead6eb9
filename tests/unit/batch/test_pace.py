"""The batch runner's pace while live traffic is active: AIMD on the measured slowdown."""

from __future__ import annotations

from gateway.batch.pace import DECIDE_AFTER, MAX_QUIET_S, PROBE_S, Pace
from gateway.policy.batch import BatchConfig
from gateway.runtime.live import LiveTraffic

CONFIG = BatchConfig(
    concurrency=8, concurrency_while_live=2, live_latency_bound=1.5, live_quiet_s=0.5
)


def record(live: LiveTraffic, seconds: float, *, shared: bool, count: int = 1) -> None:
    for _ in range(count):
        (live.shared if shared else live.alone).append(seconds)
        live.shared_count += shared


def test_within_the_bound_the_limit_climbs_to_the_full_concurrency() -> None:
    live = LiveTraffic()
    pace = Pace(live)
    record(live, 1.0, shared=False, count=5)
    assert pace.while_live(CONFIG) == 2
    for expected in range(3, 9):
        record(live, 1.2, shared=True, count=DECIDE_AFTER)
        assert pace.while_live(CONFIG) == expected
    record(live, 1.2, shared=True, count=DECIDE_AFTER)
    assert pace.while_live(CONFIG) == 8  # never past batch.concurrency


def test_past_the_bound_it_halves_then_probes_again_from_zero() -> None:
    now = [0.0]
    live = LiveTraffic()
    pace = Pace(live, clock=lambda: now[0])
    record(live, 1.0, shared=False, count=5)
    pace.while_live(CONFIG)
    record(live, 2.0, shared=True, count=DECIDE_AFTER)
    assert pace.while_live(CONFIG) == 1
    record(live, 3.0, shared=True, count=DECIDE_AFTER)
    assert pace.while_live(CONFIG) == 0
    now[0] += PROBE_S - 1
    assert pace.while_live(CONFIG) == 0
    now[0] += 2
    assert pace.while_live(CONFIG) == 1


def test_it_decides_on_the_requests_since_its_last_change_only() -> None:
    live = LiveTraffic()
    pace = Pace(live)
    record(live, 1.0, shared=False, count=5)
    pace.while_live(CONFIG)
    record(live, 4.0, shared=True, count=DECIDE_AFTER)
    assert pace.while_live(CONFIG) == 1
    record(live, 1.1, shared=True, count=DECIDE_AFTER - 1)
    assert pace.while_live(CONFIG) == 1  # not enough new ones yet; the slow ones are not read
    record(live, 1.1, shared=True)
    assert pace.while_live(CONFIG) == 2


def test_without_a_measure_of_alone_or_without_a_bound_it_stays_as_configured() -> None:
    live = LiveTraffic()
    pace = Pace(live)
    record(live, 9.0, shared=True, count=10)
    assert pace.while_live(CONFIG) == 2  # nothing alone to compare with
    fixed = CONFIG.model_copy(update={"live_latency_bound": None})
    record(live, 1.0, shared=False, count=5)
    assert Pace(live).while_live(fixed) == 2


def test_live_traffic_sorts_requests_by_whether_batch_lines_ran() -> None:
    live = LiveTraffic()
    lines = [0]
    live.batch_lines = lambda: lines[0]
    live.leave(live.enter())
    entered = live.enter()
    lines[0] = 3  # a line started during the request
    live.leave(entered)
    assert (len(live.alone), len(live.shared), live.shared_count) == (1, 1, 1)


def test_past_the_bound_the_quiet_time_doubles_and_stays() -> None:
    live = LiveTraffic()
    pace = Pace(live)
    record(live, 1.0, shared=False, count=5)
    assert pace.quiet_s(CONFIG) == 0.5
    for expected in (1.0, 2.0, 4.0):
        record(live, 3.0, shared=True, count=DECIDE_AFTER)
        pace.while_live(CONFIG)
        assert pace.quiet_s(CONFIG) == expected
    record(live, 1.1, shared=True, count=DECIDE_AFTER)
    pace.while_live(CONFIG)
    assert pace.quiet_s(CONFIG) == 4.0  # within the bound: kept
    for _ in range(10):
        record(live, 3.0, shared=True, count=DECIDE_AFTER)
        pace.while_live(CONFIG)
    assert pace.quiet_s(CONFIG) == MAX_QUIET_S
    fixed = CONFIG.model_copy(update={"live_latency_bound": None})
    assert pace.quiet_s(fixed) == 0.5
