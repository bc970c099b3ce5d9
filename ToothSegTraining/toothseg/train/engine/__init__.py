"""The training engine: trainer, schedules, the multi-stage pipeline."""
