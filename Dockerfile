# voxseg on NVIDIA GPUs: CUDA torch + MinkowskiEngine 0.5.4 built from PyPI's sdist for CUDA.
#
#   docker build -t voxseg:cu130 .       # compiling ME for 7 GPU archs is slow; for one GPU:
#   docker build -t voxseg:cu130 --build-arg TORCH_CUDA_ARCH_LIST=9.0 --build-arg MAX_JOBS=16 .
#   docker build -t voxseg:cu130 --build-arg PIP_INDEX_URL=https://pypi.example.org/simple .  # a mirror
#   docker run --rm --gpus all --shm-size=8g -v /path/to/SemanticKITTI:/data:ro \
#     -v "$PWD/runs:/opt/voxseg/runs" voxseg:cu130 tools/finetune.py \
#     --config configs/finetune/semantic_kitti_minkunet14a.yaml data.root=/data/dataset
#   docker run --rm --gpus all voxseg:cu130 -c "import MinkowskiEngine as M; M.print_diagnostics()"
#
# torch/CUDA pair: PyPI's torch 2.11.0 is a CUDA 13.0 build (as is 2.13.0, which pyproject pins),
# and the base is CUDA 13.0's devel image (nvcc and the CUDA headers and libraries for the build;
# cuDNN and the CUDA runtime come with the torch wheel) on Ubuntu 24.04 (GCC 13.3, Python 3.12).
# That is the verified build: MinkowskiEngine 0.5.4 patched by tools/install/patch_minkowski.py
# --cuda (the CUDA 13 edits included) built with CUDA 13.0, torch 2.11.0+cu130 and GCC 13.3 for
# sm_90. --build-arg TORCH_VERSION=2.13.0 keeps the same CUDA but is not verified with ME. Another
# pair: set TORCH_VERSION and TORCH_INDEX_URL (e.g. download.pytorch.org/whl/cu128) with a base
# of the same CUDA major version (torch refuses to build extensions with another).
FROM nvidia/cuda:13.0.1-devel-ubuntu24.04

ARG TORCH_VERSION=2.11.0
# empty: torch from pip's index (PIP_INDEX_URL), like everything else
ARG TORCH_INDEX_URL=
# The package index for every pip command (and for the MinkowskiEngine sdist): a mirror works.
ARG PIP_INDEX_URL=https://pypi.org/simple
# Turing to Blackwell (CUDA 13 builds from 7.5 on), PTX for newer GPUs.
ARG TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
ARG MAX_JOBS=4
ENV TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" MAX_JOBS=${MAX_JOBS} \
    DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:${PATH}

# Python 3.12 (Ubuntu 24.04's); OpenBLAS and ninja for ME's build; libusb, libGL and libEGL for
# open3d's import.
RUN apt-get update && apt-get install -y --no-install-recommends \
       python3.12 python3.12-dev python3.12-venv \
       build-essential ca-certificates git libopenblas-dev ninja-build \
       libusb-1.0-0 libgl1 libegl1 \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv \
    && pip install --no-cache-dir --upgrade pip setuptools wheel \
    && pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "${TORCH_INDEX_URL}"} "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir numpy \
    && python -c "import torch; assert torch.version.cuda, torch.__version__; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" \
    && echo "torch==${TORCH_VERSION}" > /opt/constraints.txt
# Every later pip install keeps this torch: one that would replace it fails instead.
ENV PIP_CONSTRAINT=/opt/constraints.txt

# MinkowskiEngine: patch_minkowski.py fetches the sdist through pip's index and checks its sha256
# (the one of tools/install/install.sh), then patches it for CUDA 12/13; built with --force_cuda
# (no GPU is visible during `docker build`; nvcc is all the build needs).
COPY tools/install/patch_minkowski.py /tmp/me/
RUN cd /tmp/me && sdist="$(python patch_minkowski.py fetch /tmp/me)" \
    && tar -xzf "${sdist}" && python patch_minkowski.py MinkowskiEngine-0.5.4 --cuda \
    && cd MinkowskiEngine-0.5.4 \
    && CFLAGS=-g0 python setup.py bdist_wheel --force_cuda --blas=openblas \
    && pip install --no-cache-dir --no-deps dist/*.whl && cd / && rm -rf /tmp/me

# voxseg. pyproject pins torch==2.13.0, which a plain `pip install .` would fetch in place of
# this torch (here: fail on the constraint); so install pyproject's other dependencies, read from
# its own list, then the package with --no-deps.
WORKDIR /opt/voxseg
COPY pyproject.toml ./
RUN python -c "import re, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']\
['dependencies']; skip = ('torch', 'minkowskiengine'); \
print(*[r for r in deps if re.match(r'[\w.-]+', r)[0].lower() not in skip], sep='\n')" > /tmp/req.txt \
    && pip install --no-cache-dir -r /tmp/req.txt && rm /tmp/req.txt
COPY . .
RUN pip install --no-cache-dir --no-deps . \
    && python -W ignore -c "import MinkowskiEngine as ME, open3d, voxseg, preprocessing; \
assert ME.is_cuda_available(), 'MinkowskiEngine was built without CUDA'"

# `docker run IMAGE tools/<tool>.py ...`: finetune, infer, evaluate, preprocess, make_synthetic, demo.
ENTRYPOINT ["python"]
CMD ["tools/finetune.py", "--help"]
