"""The `zantara` commands: the top layer, which puts the service, the training pipeline, the router and
the feedback store together (`zantara serve`, `rollout`, `retrain`, `eval`, ...). Nothing below imports
it."""
