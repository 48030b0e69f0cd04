"""reasoning360: a Slurm-first sweep suite for SFT x RL research on LLM reasoning."""

__version__ = "0.1.0"
