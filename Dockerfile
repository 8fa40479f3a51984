# syntax=docker/dockerfile:1
# tcm-serve CPU image: tcm-server and tcm-client on Debian 12, with the models in models/.
#
#   docker build -t tcm-serve:cpu .
#   docker run --rm -p 50051:50051 -p 9464:9464 -p 8000:8000 tcm-serve:cpu
#
# gRPC on 50051, Prometheus metrics on 9464 (/metrics), the Open Inference Protocol's REST
# form on 8000. Extra arguments are tcm-server
# flags and override the defaults below (the last occurrence of a flag wins), e.g.
# `docker run ... tcm-serve:cpu --workers 2 --intra_op_threads 2`. See docs/DEPLOY.md.
# The GPU image is Dockerfile.gpu.

ARG DEBIAN_RELEASE=bookworm

# ---- build: the same steps as on a developer's machine (README.md) ----
FROM debian:${DEBIAN_RELEASE} AS build
WORKDIR /src
# The package list on its own first, so that a source change does not reinstall packages.
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
# `make build` runs scripts/install-deps.sh again (a no-op now), configures and builds the
# two programs the image ships (the tests are built and run by `make test`, not here).
RUN make build BUILD_TARGETS="tcm-server tcm-client"

# ---- runtime: the binaries, their shared libraries and the models ----
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# The Debian packages that tcm-server's and tcm-client's shared libraries come from
# (tests/deploy/dockerfile_test.py checks this list against the built binaries).
# libtorch1.13 brings its own dependencies; libopenblas0-pthread is the BLAS it should
# use (about 30 times the reference BLAS on matrix products); libgomp1 runs the
# OpenMP loops of the project's own kernels; libdnnl2 (oneDNN, which libtorch1.13 also
# depends on) runs the convolutions the server calls directly.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libtorch1.13 libdnnl2 libopenblas0-pthread \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 \
      libprometheus-cpp-core1.0 libpng16-16 libmicrohttpd12 libgnutls30 libgomp1 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 tcm \
 && useradd --system --uid 10001 --gid tcm --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tcm
COPY --from=build /src/build/bin/tcm-server /src/build/bin/tcm-client /usr/local/bin/
COPY --from=build /src/models /models

LABEL org.opencontainers.image.title="tcm-serve" \
      org.opencontainers.image.description="gRPC service for Truncated Consistency Models (CPU)"
USER 10001:10001
EXPOSE 50051 9464 8000
# SERVING once every model has loaded and run its warm-up batch; NOT_SERVING while draining.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["tcm-client", "--server", "localhost:50051", "--health", "--timeout", "4"]
ENTRYPOINT ["tcm-server", "--port", "50051", "--metrics_port", "9464", "--http_port", "8000", "--model_repository", "/models", \
            "--default_model", "fashion-mnist-tcm"]
