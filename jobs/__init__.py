"""Platform jobs. Importing the package only repairs an inherited environment (see :mod:`jobs.platform.procs`)."""

from jobs.platform.procs import drop_missing_metrics_dirs as _drop_missing_metrics_dirs

_drop_missing_metrics_dirs()
