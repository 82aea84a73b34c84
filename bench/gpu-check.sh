#!/bin/bash
# bench/gpu-check.sh [CASE_DIR] - on a machine with an NVIDIA GPU and a CUDA
# PyTorch: builds fedseg against that PyTorch's libtorch (-DTorch_DIR from
# torch.utils.cmake_prefix_path), runs `fedseg infer` on a real case on the
# CPU and with --device cuda, prints the time per case for each and the Dice
# (per label, and the voxel agreement) of the GPU result against the CPU
# result. Meant to fit in a few minutes: one build (targets fedseg and
# bench_core only), one CPU run, a warm-up GPU run and three timed GPU runs.
# Env: PYTHON (default python3), BUILD (default build-gpu), JOBS.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
build=${BUILD:-$src/build-gpu}
jobs=${JOBS:-$(nproc)}
data="${FEDSEG_DATA:-$src/../shared/data}"
case1=${1:-$data/brats2021/BraTS2021_00000}
[ -d "$case1" ] || { echo "gpu-check: case not found: $case1 (argument or FEDSEG_DATA)" >&2; exit 1; }
prefix=$($py -c 'import torch; print(torch.utils.cmake_prefix_path)') || {
	echo "gpu-check: $py cannot import torch" >&2; exit 1; }
$py -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
tdir="$prefix/Torch"
[ -f "$tdir/TorchConfig.cmake" ] || { echo "gpu-check: no TorchConfig.cmake under $tdir" >&2; exit 1; }
# pip wheels are built with the pre-C++11 ABI or the new one: follow torch.
abi=$($py -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
t0=$(date +%s)
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTorch_DIR="$tdir" \
	-DCMAKE_CXX_FLAGS="-D_GLIBCXX_USE_CXX11_ABI=$abi" > "$build.cmake.log" 2>&1 || {
	tail -30 "$build.cmake.log" >&2; exit 1; }
cmake --build "$build" --target fedseg bench_core -j"$jobs" > "$build.build.log" 2>&1 || {
	grep -E "error" "$build.build.log" | head -20 >&2; exit 1; }
echo "gpu-check: built in $(( $(date +%s) - t0 )) s"
ldd "$build/node/fedseg" | grep -E "torch_cuda|c10_cuda" || echo "gpu-check: warning: fedseg does not link libtorch_cuda" >&2
tmp=$(mktemp -d /tmp/fedseg-gpu.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# the default model (untrained weights: same FLOPs as a trained one)
"$build/bench/bench_core" --only infer --repeats 1 --case "$case1" \
	--save-weights "$tmp/w.safetensors" > "$tmp/bare.jsonl"
[ -s "$tmp/w.safetensors" ] || { echo "gpu-check: could not write weights" >&2; exit 1; }
run() { # run DEVICE OUT -> seconds
	local s e
	s=$(date +%s.%N)
	"$build/node/fedseg" infer --model "$tmp/w.safetensors" --case "$case1" \
		--out "$2" --device "$1" 2> "$tmp/log" || { cat "$tmp/log" >&2; return 1; }
	e=$(date +%s.%N)
	echo "$s $e" | awk '{printf "%.2f", $2 - $1}'
}
cpu=$(run cpu "$tmp/cpu.nii.gz")
echo "gpu-check: CPU  $cpu s per case (whole command, $(nproc) cores)"
run cuda "$tmp/gpu.nii.gz" > /dev/null # warm-up (CUDA context, kernels)
g=""
for i in 1 2 3; do g="$g $(run cuda "$tmp/gpu.nii.gz")"; done
echo "gpu-check: CUDA$g s per case (whole command, 3 runs after a warm-up)"
$py - "$tmp/cpu.nii.gz" "$tmp/gpu.nii.gz" <<'PY'
import sys
import nibabel as nib, numpy as np
a = np.asanyarray(nib.load(sys.argv[1]).dataobj)
b = np.asanyarray(nib.load(sys.argv[2]).dataobj)
print("gpu-check: voxel agreement GPU vs CPU: %.6f" % (a == b).mean())
for lab in sorted(set(np.unique(a).tolist()) | set(np.unique(b).tolist())):
    if lab == 0:
        continue
    x, y = a == lab, b == lab
    d = 2 * (x & y).sum() / max(1, x.sum() + y.sum())
    print("gpu-check: Dice label %d GPU vs CPU: %.5f" % (lab, d))
PY
