# voxseg on NVIDIA GPUs: CUDA torch + MinkowskiEngine 0.5.4 built from PyPI's sdist for CUDA.
#
#   docker build -t voxseg:cu128 .       # compiling ME for 7 GPU archs is slow; for one GPU:
#   docker build -t voxseg:cu128 --build-arg TORCH_CUDA_ARCH_LIST=8.6 --build-arg MAX_JOBS=8 .
#   docker run --rm --gpus all --shm-size=8g -v /path/to/SemanticKITTI:/data:ro \
#     -v "$PWD/runs:/opt/voxseg/runs" voxseg:cu128 tools/finetune.py \
#     --config configs/finetune/semantic_kitti_minkunet14a.yaml data.root=/data/dataset
#   docker run --rm --gpus all voxseg:cu128 -c "import MinkowskiEngine as M; M.print_diagnostics()"
#
# torch/CUDA pair: pyproject pins torch==2.13.0, but PyPI's 2.13.0 (like 2.11.0) is a CUDA 13.0
# build, which MinkowskiEngine 0.5.4 is not patched for. 2.10.0 is the newest PyPI torch built on
# CUDA 12.8 (it requires nvidia-cuda-runtime-cu12==12.8.90), so the base is CUDA 12.8's devel
# image (nvcc for the build; cuDNN and the CUDA libraries come with the torch wheel). Another pair:
# set TORCH_VERSION and TORCH_INDEX_URL (e.g. download.pytorch.org/whl/cu128) with a matching base.
FROM nvidia/cuda:12.8.1-devel-ubuntu22.04

ARG TORCH_VERSION=2.10.0
ARG TORCH_INDEX_URL=https://pypi.org/simple
# Turing to Blackwell (torch's cu128 wheels start at 7.5), PTX for newer GPUs.
ARG TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
ARG MAX_JOBS=4
ENV TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" MAX_JOBS=${MAX_JOBS} \
    DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:${PATH}

# Python 3.11 (the project's) from deadsnakes; OpenBLAS and ninja for ME's build; libusb, libGL
# and libEGL for open3d's import.
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-dev python3.11-venv \
       build-essential ca-certificates curl git libopenblas-dev ninja-build \
       libusb-1.0-0 libgl1 libegl1 \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && pip install --no-cache-dir --upgrade pip setuptools wheel \
    && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir numpy \
    && echo "torch==${TORCH_VERSION}" > /opt/constraints.txt
# Every later pip install keeps this torch: one that would replace it fails instead.
ENV PIP_CONSTRAINT=/opt/constraints.txt

# MinkowskiEngine: the sdist and sha256 of tools/install/install.sh, patched for CUDA 12, built
# with --force_cuda (no GPU is visible during `docker build`; nvcc is all the build needs).
ARG ME_URL=https://files.pythonhosted.org/packages/21/5c/c543c4bc5fbe73ac3e38465b3da4f24a61f7a4ac5baec867e582e94aa551/MinkowskiEngine-0.5.4.tar.gz
ARG ME_SHA256=b1879c00d0b0b1d30ba622cce239886a7e3c78ee9da1064cdfe2f64c2ab15f94
COPY tools/install/patch_minkowski.py /tmp/me/
RUN cd /tmp/me && curl -fsSL --retry 3 -o me.tar.gz "${ME_URL}" \
    && echo "${ME_SHA256}  me.tar.gz" | sha256sum -c - \
    && tar -xzf me.tar.gz && python patch_minkowski.py MinkowskiEngine-0.5.4 --cuda \
    && cd MinkowskiEngine-0.5.4 \
    && CFLAGS=-g0 python setup.py bdist_wheel --force_cuda --blas=openblas \
    && pip install --no-cache-dir --no-deps dist/*.whl && cd / && rm -rf /tmp/me

# voxseg. pyproject pins torch==2.13.0, which a plain `pip install .` would fetch in place of
# this torch (here: fail on the constraint); so install pyproject's other dependencies, read from
# its own list, then the package with --no-deps.
WORKDIR /opt/voxseg
COPY pyproject.toml ./
RUN python -c "import re, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']\
['dependencies']; skip = ('torch', 'MinkowskiEngine'); \
print(*[r for r in deps if re.match(r'[\w.-]+', r)[0] not in skip], sep='\n')" > /tmp/req.txt \
    && pip install --no-cache-dir -r /tmp/req.txt && rm /tmp/req.txt
COPY . .
RUN pip install --no-cache-dir --no-deps . \
    && python -W ignore -c "import MinkowskiEngine, open3d, voxseg, preprocessing"

# `docker run IMAGE tools/<tool>.py ...`: finetune, infer, evaluate, preprocess, make_synthetic, demo.
ENTRYPOINT ["python"]
CMD ["tools/finetune.py", "--help"]
