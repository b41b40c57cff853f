"""Learning-rate schedule factors: linear warmup, then linear, polynomial or constant."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.training.schedule import Schedule


def factors(schedule: Schedule, steps: int) -> list[float]:
    return [schedule.factor(step) for step in range(steps)]


def test_linear_warmup_then_linear_decay_to_zero():
    schedule = Schedule(total_steps=10, warmup_steps=2)
    expected = [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0, 0.0, 0.0]
    assert factors(schedule, 13) == pytest.approx(expected, abs=1e-12)
    assert schedule.factor(1000) == 0.0


def test_linear_decay_to_an_end_ratio_without_warmup():
    schedule = Schedule(total_steps=10, warmup_steps=0, end_ratio=0.1)
    assert schedule.factor(0) == 1.0
    assert schedule.factor(5) == pytest.approx(0.55)
    assert schedule.factor(9) == pytest.approx(0.19)
    assert schedule.factor(10) == pytest.approx(0.1)
    assert schedule.factor(50) == pytest.approx(0.1)


def test_polynomial_decay():
    root = Schedule(total_steps=10, warmup_steps=2, decay="polynomial", power=0.5)  # NVIDIA's BERT recipe
    assert root.factor(0) == 0.5
    assert root.factor(2) == 1.0
    assert root.factor(4) == pytest.approx(math.sqrt(0.75))
    assert root.factor(6) == pytest.approx(math.sqrt(0.5))
    assert root.factor(9) == pytest.approx(math.sqrt(0.125))
    assert root.factor(10) == 0.0

    square = Schedule(total_steps=12, warmup_steps=4, decay="polynomial", power=2.0, end_ratio=0.2)
    assert square.factor(3) == 1.0
    assert square.factor(6) == pytest.approx(0.2 + 0.8 * 0.75**2)
    assert square.factor(8) == pytest.approx(0.4)
    assert square.factor(12) == pytest.approx(0.2)


def test_polynomial_over_the_whole_run_is_nvidias_poly_warmup():
    """NVIDIA's PolyWarmUpScheduler: lr = peak * p / warmup below the warmup share, else peak * (1 - p) ** 0.5,
    with p = (step + 1) / total (their scheduler counts the step being taken)."""
    schedule = Schedule(total_steps=10, warmup_steps=3, decay="polynomial_total", power=0.5)
    assert [schedule.factor(s) for s in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert schedule.factor(3) == pytest.approx(math.sqrt(1 - 4 / 10))  # below the peak right after warmup
    assert schedule.factor(6) == pytest.approx(math.sqrt(1 - 7 / 10))
    assert schedule.factor(9) == 0.0 and schedule.factor(12) == 0.0
    phase1 = Schedule(total_steps=7038, warmup_steps=round(0.2843 * 7038), decay="polynomial_total", power=0.5)
    assert phase1.factor(phase1.warmup_steps) == pytest.approx(0.846, abs=5e-4)
    from_the_peak = Schedule(total_steps=7038, warmup_steps=phase1.warmup_steps, decay="polynomial", power=0.5)
    assert from_the_peak.factor(phase1.warmup_steps) == 1.0  # the other shape: 13% more over phase 1
    area = sum(from_the_peak.factor(s) for s in range(7038)) / sum(phase1.factor(s) for s in range(7038))
    assert 1.1 < area < 1.25


def test_polynomial_of_power_one_is_linear():
    linear = Schedule(total_steps=20, warmup_steps=3, end_ratio=0.05)
    polynomial = Schedule(total_steps=20, warmup_steps=3, decay="polynomial", power=1.0, end_ratio=0.05)
    assert factors(polynomial, 25) == pytest.approx(factors(linear, 25))


def test_constant_after_warmup():
    schedule = Schedule(total_steps=10, warmup_steps=4, decay="constant")
    assert factors(schedule, 12) == [0.25, 0.5, 0.75] + [1.0] * 9


def test_warmup_of_all_steps():
    schedule = Schedule(total_steps=4, warmup_steps=4)
    assert factors(schedule, 4) == [0.25, 0.5, 0.75, 1.0]


def test_lambda_lr_applies_the_factor_of_each_optimizer_step():
    """The trainer hands `factor` to LambdaLR, stepped once per optimizer step: step i runs at peak x factor(i)."""
    schedule = Schedule(total_steps=6, warmup_steps=2, decay="polynomial", power=0.5)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)
    used = []
    for _ in range(6):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert used == pytest.approx([0.1 * f for f in factors(schedule, 6)])
    assert used[:3] == pytest.approx([0.05, 0.1, 0.1])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"decay": "cosine"}, r"unknown lr decay 'cosine'; choose one of \('linear', 'polynomial', 'polynomial_total'"),
        ({"warmup_steps": 11}, r"warmup_steps \(11\) must be between 0 and the total steps \(10\)"),
        ({"warmup_steps": -1}, r"warmup_steps \(-1\) must be between 0"),
        ({"power": 0.0}, "decay power must be > 0"),
        ({"end_ratio": 1.5}, r"end ratio in \[0, 1\]"),
        ({"end_ratio": -0.1}, r"end ratio in \[0, 1\]"),
    ],
)
def test_impossible_schedules_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        Schedule(**{"total_steps": 10, "warmup_steps": 2, **arguments})
