#!/bin/bash
# bench/gpu-check.sh [CASE_DIR] - on a machine with an NVIDIA GPU and a CUDA
# PyTorch: builds fedseg against that PyTorch's libtorch (-DTorch_DIR from
# torch.utils.cmake_prefix_path), runs `fedseg infer` on a real case on the
# CPU (fp32, bf16) and with --device cuda at --precision fp32, fp16 and bf16,
# and prints the time per case for each and the Dice (per region, and the
# voxel agreement) of each result against the CPU fp32 result.
# Two models: the default U-Net with untrained weights for the times (same
# FLOPs as a trained one; its labels are mostly background), and a small
# trained one (MODEL, default tests/model/fixtures/precision_small.safetensors)
# whose label maps have tumour regions, so that its Dice means something.
# Meant to fit in a few minutes: one build (targets fedseg and bench_core
# only), one CPU run per precision, a warm-up GPU run, three timed GPU runs
# per precision, one run per configuration with the small model. A failing
# configuration is reported and the others still run.
# Env: PYTHON (default python3), BUILD (default build-gpu), JOBS, MODEL.
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
small=${MODEL:-$src/tests/model/fixtures/precision_small.safetensors}
[ -s "$small" ] || { echo "gpu-check: small model not found: $small (MODEL)" >&2; exit 1; }
run() { # run WEIGHTS DEVICE PRECISION OUT -> seconds
	local s e
	s=$(date +%s.%N)
	"$build/node/fedseg" infer --model "$1" --case "$case1" --out "$4" \
		--device "$2" --precision "$3" 2> "$tmp/log" || {
		echo "gpu-check: $2 $3 FAILED: $(tail -n 1 "$tmp/log")" >&2; return 1; }
	e=$(date +%s.%N)
	echo "$s $e" | awk '{printf "%.2f", $2 - $1}'
}
cmp() { # cmp REF OTHER WHAT: voxel agreement and Dice per region
	$py - "$1" "$2" "$3" <<'PY'
import sys
import nibabel as nib, numpy as np
a = np.asanyarray(nib.load(sys.argv[1]).dataobj).astype(int)
b = np.asanyarray(nib.load(sys.argv[2]).dataobj).astype(int)
out = ["voxel agreement %.6f" % (a == b).mean()]
worst = 1.0
for name, labs in (("WT", (1, 2, 4)), ("TC", (1, 4)), ("ET", (4,))):
    x, y = np.isin(a, labs), np.isin(b, labs)
    if x.sum() + y.sum() == 0:
        out.append("%s empty" % name)
        continue
    d = 2 * (x & y).sum() / (x.sum() + y.sum())
    worst = min(worst, d)
    out.append("Dice %s %.5f" % (name, d))
# The untrained default model's logits have tiny class margins (measured on
# the CPU: bf16 ET Dice 0.987), so only the trained model gets a verdict.
verdict = ""
if "trained" in sys.argv[3] and "untrained" not in sys.argv[3]:
    verdict = " (within 0.005)" if worst >= 0.995 else " (OFF BY MORE THAN 0.005)"
print("gpu-check: %s vs CPU fp32: %s%s" % (sys.argv[3], ", ".join(out), verdict))
PY
}
cpu=$(run "$tmp/w.safetensors" cpu fp32 "$tmp/t-cpu-fp32.nii.gz")
echo "gpu-check: CPU fp32  $cpu s per case (whole command, $(nproc) cores)"
run "$small" cpu fp32 "$tmp/s-cpu-fp32.nii.gz" > /dev/null
if c16=$(run "$tmp/w.safetensors" cpu bf16 "$tmp/t-cpu-bf16.nii.gz"); then
	echo "gpu-check: CPU bf16  $c16 s per case (whole command, $(nproc) cores)"
	cmp "$tmp/t-cpu-fp32.nii.gz" "$tmp/t-cpu-bf16.nii.gz" "CPU bf16 (default model, untrained)"
	run "$small" cpu bf16 "$tmp/s-cpu-bf16.nii.gz" > /dev/null &&
		cmp "$tmp/s-cpu-fp32.nii.gz" "$tmp/s-cpu-bf16.nii.gz" "CPU bf16 (small trained model)"
fi
run "$tmp/w.safetensors" cuda fp32 "$tmp/warm.nii.gz" > /dev/null # warm-up (CUDA context, kernels)
for p in fp32 fp16 bf16; do
	g="" ok=1
	for i in 1 2 3; do
		t=$(run "$tmp/w.safetensors" cuda $p "$tmp/t-cuda-$p.nii.gz") || { ok=0; break; }
		g="$g $t"
	done
	[ $ok = 1 ] || continue
	echo "gpu-check: CUDA $p$g s per case (whole command, 3 runs after a warm-up)"
	cmp "$tmp/t-cpu-fp32.nii.gz" "$tmp/t-cuda-$p.nii.gz" "CUDA $p (default model, untrained)"
	run "$small" cuda $p "$tmp/s-cuda-$p.nii.gz" > /dev/null &&
		cmp "$tmp/s-cpu-fp32.nii.gz" "$tmp/s-cuda-$p.nii.gz" "CUDA $p (small trained model)"
done
echo "gpu-check: done"
