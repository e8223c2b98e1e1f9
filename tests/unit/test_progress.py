"""Build progress: units counted across ninjas, and the time left from the measured rate."""

from __future__ import annotations

from attn_installer.install.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_time_left_comes_from_the_measured_rate_once_there_is_one():
    said: list[str] = []
    clock = Clock()
    p = Progress(said.append, units=73, estimate_minutes=22.5, clock=clock)
    clock.t = 30
    p.on_line("[1/73] nvcc flash_fwd_hdim128_bf16_sm90.cu")
    assert said[-1] == "  compiled 1/73 units (0:30 elapsed, estimate 22.5 min)"
    # the H200 run of issue #18: 21 of 73 units in 17 minutes -> about 42 minutes to go, not 22.5 in all
    for k in range(2, 22):
        clock.t = 17 * 60 * k / 21
        p.on_line(f"[{k}/73] nvcc unit{k}.cu")
    assert said[-1] == ("  compiled 21/73 units (17:00 elapsed, about 42 min left at the measured rate "
                        "(plan: 22.5 min in all))")


def test_units_of_several_ninjas_add_up_and_early_units_keep_the_plan_estimate():
    said: list[str] = []
    clock = Clock()
    p = Progress(said.append, units=10, estimate_minutes=5, clock=clock)
    for k in (1, 2):  # the first extension's ninja
        clock.t = 70 * k
        p.on_line(f"[{k}/2] c++ a{k}.cpp")
    assert said[-1].endswith("estimate 5 min)")  # 2 units: too few to measure a rate
    for k in (1, 2, 3):  # the second one's counter restarts
        clock.t = 140 + 70 * k
        p.on_line(f"[{k}/8] nvcc b{k}.cu")
    assert said[-1] == ("  compiled 5/10 units (5:50 elapsed, about 6 min left at the measured rate "
                        "(plan: 5 min in all))")
