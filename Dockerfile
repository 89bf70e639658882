# The project image: Dagster user code, run pods and GPU training pods all run it.
#   docker build -t ghcr.io/hkgai/hkgai-pipelines:0.1.0 .
# CUDA runtime base pinned by tag; torch's CUDA wheels bring their own CUDA libraries, the base
# brings the driver-facing runtime pieces and cuDNN. Nothing is downloaded at run time.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DAGSTER_DISABLE_TELEMETRY=1 \
    HKGAI_PROFILE=production \
    HKGAI_HOME=/mnt/hkgai

# python3-dev and g++: DeepSpeed compiles its ops just in time; git: DVC.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ git ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/hkgai
COPY pyproject.toml constraints.txt constraints-dvc.txt README.md params.yaml ./
COPY hkgai_pipelines ./hkgai_pipelines
COPY assets ./assets
COPY resources ./resources
COPY configs ./configs

# torch first, the CUDA build this time (the Makefile pins the CPU one for development); then
# DeepSpeed from its source distribution against it; then the project with its GPU extra,
# editable so that configs/ and the DeepSpeed configs resolve beside the code.
# constraints.txt pins everything else to the versions the tests ran with.
# DVC goes into a tool environment of its own, as with `make venv` (its antlr4 4.9 would break
# Dagster's asset selection), with the S3 remote support production pushes through; the link
# puts `dvc` on the PATH, and hkgai_pipelines/versioning.py finds /opt/venv/tools/dvc itself.
# The import check runs on the local profile: production's settings need the servers' addresses,
# which only the cluster gives.
# Ray with its `default` extra: the curation RayJob (resources/ray_jobs.py) runs this image as
# the Ray head, whose dashboard serves the job API KubeRay submits to and polls, and as the
# submitter pod, which runs `ray job submit`; both need it (the project itself needs only
# Ray's core, and embedded Ray runs without a job server). Same version as the project's pin.
RUN pip install --upgrade pip setuptools wheel \
 && pip install torch==2.13.0 \
 && grep -v '^torch==' constraints.txt > /tmp/constraints.txt \
 && pip install --no-build-isolation -c /tmp/constraints.txt deepspeed \
 && pip install -c /tmp/constraints.txt -e ".[gpu]" "ray[default]==2.60.0" \
 && python -m venv /opt/venv/tools/dvc \
 && /opt/venv/tools/dvc/bin/pip install -c constraints-dvc.txt "dvc[s3]" \
 && ln -s ../tools/dvc/bin/dvc /opt/venv/bin/dvc \
 && dvc version \
 && HKGAI_PROFILE=local python -c "import hkgai_pipelines.definitions"

# Non-root, with the uid the pod securityContexts name.
RUN useradd --uid 1000 --create-home hkgai && mkdir -p /mnt/hkgai && chown hkgai /mnt/hkgai
USER 1000

EXPOSE 3030
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "hkgai_pipelines.definitions"]
