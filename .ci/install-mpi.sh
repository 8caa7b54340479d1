#!/usr/bin/env bash
# What data-parallel training over MPI (the cargo feature `mpi`) needs, from Debian's
# packages: OpenMPI (mpirun and the library; the mpi crate finds it through `mpicc -show`)
# and libclang, with which the mpi crate generates its bindings. About 20 s.
set -euo pipefail
if command -v mpirun >/dev/null && command -v mpicc >/dev/null \
   && ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1; then
  echo "MPI already installed: $(mpirun --version 2>/dev/null | head -1)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends openmpi-bin libopenmpi-dev libclang-dev
echo "installed $(mpirun --version 2>/dev/null | head -1)"
