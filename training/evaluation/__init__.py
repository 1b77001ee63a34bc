"""`zantara eval`: base vs adapters on a dataset's held-out split, metrics with intervals, quality gates."""
