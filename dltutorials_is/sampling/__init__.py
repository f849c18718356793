"""What each update trains on and how much each sample weighs: the tutorials' samplers, IS-SGD with a
fixed P, online importance sampling, and the exact gradient-variance diagnostic. Nothing here knows a model."""
