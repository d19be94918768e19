"""Ray Tune sweeps of stage-2 methods and hyperparameters (``tune.sweep.run_sweep``), tracked in MLflow."""
