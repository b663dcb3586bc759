# Image of the Dask scheduler and workers that run ATRA's fold fits (deploy/dask.md).
# Build from the repository root:
#   docker build -f deploy/dask.Dockerfile -t atra-dask:$(python -c 'import atra; print(atra.__version__)') .
# dask/distributed, Python and every library are the versions of constraints.txt: the client
# running `atra search --backend dask` must have the same (bit-identical results).
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 atra
COPY pyproject.toml README.md constraints.txt /opt/atra-src/
COPY src /opt/atra-src/src
RUN pip install --no-cache-dir -c /opt/atra-src/constraints.txt '/opt/atra-src[distributed]'
USER atra
WORKDIR /home/atra
# no entrypoint: the pod / service gives `dask scheduler` or `dask worker ...`
