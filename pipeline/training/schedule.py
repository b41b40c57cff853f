"""Learning-rate schedules: linear warmup, then linear or polynomial decay (BERT's recipe).

`polynomial` decays from the peak over the steps after warmup; `polynomial_total` is NVIDIA's BERT
`PolyWarmUpScheduler`, (1 - step / total_steps) ** power over the whole run, so that the first step after
warmup is already below the peak (0.846 of it after a 28.43% warmup at power 0.5)."""

from __future__ import annotations

from dataclasses import dataclass

DECAYS = ("linear", "polynomial", "polynomial_total", "constant")


@dataclass(frozen=True)
class Schedule:
    total_steps: int
    warmup_steps: int
    decay: str = "linear"
    power: float = 1.0  # polynomial decay exponent; 1.0 is linear (NVIDIA's BERT recipe uses 0.5)
    end_ratio: float = 0.0  # final lr as a share of the peak lr

    def __post_init__(self) -> None:
        if self.decay not in DECAYS:
            raise ValueError(f"unknown lr decay {self.decay!r}; choose one of {DECAYS}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be between 0 and the total steps ({self.total_steps})"
            )
        if self.power <= 0 or not 0 <= self.end_ratio <= 1:
            raise ValueError(f"decay power must be > 0 and end ratio in [0, 1], got {self.power}, {self.end_ratio}")

    def factor(self, step: int) -> float:
        """Multiplier of the peak lr for optimizer step `step` (0-based): step 0 of a warmup gets 1/warmup."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        if self.decay == "polynomial_total":  # the progress of the whole run, counted as NVIDIA counts it
            shape = max(0.0, 1.0 - (step + 1) / self.total_steps) ** self.power
            return self.end_ratio + (1.0 - self.end_ratio) * shape
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        remaining = max(0.0, 1.0 - (step - self.warmup_steps) / decay_steps)
        shape = remaining if self.decay == "linear" else remaining**self.power
        return self.end_ratio + (1.0 - self.end_ratio) * shape
