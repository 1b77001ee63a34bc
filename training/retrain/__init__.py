"""The weekly retrain: corrections since the parent adapter -> dataset -> training -> evaluation and
quality gates -> registry -> hot-load and canary through the running service (resumable, locked)."""
