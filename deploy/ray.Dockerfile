# Image of the Ray head and workers that run ATRA's fold fits (deploy/ray.md).
# Build from the repository root:
#   docker build -f deploy/ray.Dockerfile -t atra-ray:$(python -c 'import atra; print(atra.__version__)') .
# Ray, Python and every library are the versions of constraints.txt: the driver running
# `atra search --backend ray` must have the same (bit-identical results, Ray Client).
FROM rayproject/ray:2.60.0-py311
COPY --chown=ray:users pyproject.toml README.md constraints.txt /home/ray/atra-src/
COPY --chown=ray:users src /home/ray/atra-src/src
RUN pip install --no-cache-dir -c /home/ray/atra-src/constraints.txt '/home/ray/atra-src[distributed]'
