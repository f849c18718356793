"""Fast Importance Mining (the paper's Algorithm 2): the model-agnostic `driver` and one private-training
plug-in per model (`lstm` and `rnnrbm`)."""

from dltutorials_is.fim.driver import PrivateRun  # noqa: E402, F401  (FIM shards pickled before the
# driver moved into this package name `dltutorials_is.fim.PrivateRun`: an interrupted mining still resumes)
