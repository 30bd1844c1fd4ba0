"""The export stage: ``exporter`` (export, validate, measure, publish), ``bench`` (models timed side by side),
``validate`` (parity and metric checks), ``fusion`` (does a shape's attention fuse), ``folders`` (model folders,
Hugging Face loading). The deployed path itself is :mod:`kdnas_deploy.runtime.deploy`; latency tables are read
through :mod:`kdnas_deploy.latency.table` only."""
