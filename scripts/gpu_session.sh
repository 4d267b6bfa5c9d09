#!/usr/bin/env bash
# The GPU work queued for a session that is lent a GPU, in stages that each fit one device call
# (600 s at most; a session has 30 minutes of device time). Run from the repository root.
#
#   here:    bash scripts/gpu_session.sh export 6cf94e4   # kernels/ of each revision to A/B against,
#                                                          # into .ab/REV (git-excluded), in order
#            ../shared/tools/device-wheels.sh              # the GPU machine's missing packages, .whl/
#   device:  QUANTBENCH_GIT_COMMIT=<full hash> bash scripts/gpu_session.sh verify    (carry .whl .ab)
#            QUANTBENCH_GIT_COMMIT=<full hash> bash scripts/gpu_session.sh records   (carry .whl)
#            QUANTBENCH_GIT_COMMIT=<full hash> bash scripts/gpu_session.sh matmul    (carry .whl)
#            QUANTBENCH_GIT_COMMIT=<full hash> bash scripts/gpu_session.sh timing    (carry .whl)
#
# verify:  the kernel tests on the GPU (scripts/gpu_suite.py: the fast forms, quantize's codes, the
#          launchers' paths), then quantize at each exported revision against the working tree,
#          interleaved (scripts/ab_kernels.py): every revision at 8192^2 in export order, then at
#          28672 x 8192, as far as the budget goes.
# records: the default, formats and w8a8 configs under results/h200 (results/h100 on an H100),
#          each compared with the newest earlier record of its config (`quantbench compare`).
# matmul:  the matmul config, compared with the newest earlier matmul record.
# timing:  tests/gpu/test_timing_engines.py (the engines against a GPU sleep and a copy, host_us
#          and its F.linear anchor), then scripts/prove_timing.py.
# A device stage stops starting steps once STAGE_BUDGET_S (default 560) would be passed, and always
# ends by packing what it wrote (new run folders, logs) into one tar.gz under $OUT, the only file it
# leaves there; where machines are scarce, put two stages in one call, e.g.
#   export QUANTBENCH_GIT_COMMIT=<full hash>; STAGE_BUDGET_S=250 bash scripts/gpu_session.sh verify;
#   STAGE_BUDGET_S=320 bash scripts/gpu_session.sh records                        (carry .whl .ab)
# A session has device time for about three stages (the machine's start counts too): verify,
# records, matmul first; timing when a later session has time left.
# The GPU machine's copy of the checkout has no usable git history: the commit comes from the
# command (QUANTBENCH_GIT_COMMIT), the revisions to A/B against from .ab/.
set -uo pipefail

stage=${1:-}
OUT=${OUT:-out}
BUDGET=${STAGE_BUDGET_S:-560}

die() { echo "gpu_session: $*" >&2; exit 2; }

if [ "$stage" = export ]; then
    shift
    [ $# -ge 1 ] || die "export takes the revisions to A/B against, e.g. export 6cf94e4"
    revs=("$@") hashes=()
    for rev in "${revs[@]}"; do  # every revision is checked before anything is written
        hash=$(git rev-parse --short=7 --verify --quiet "$rev^{commit}") || die "$rev: not a commit here"
        hashes+=("$hash")
    done
    # git names the exclude file's path: .git may be a file (a worktree), and a clone made without
    # templates has no .git/info (CI's checkout had none)
    exclude=$(git rev-parse --git-path info/exclude) || die "not inside a git checkout"
    mkdir -p "$(dirname "$exclude")"
    grep -qx '/.ab/' "$exclude" 2>/dev/null || echo '/.ab/' >> "$exclude"
    rm -rf .ab && mkdir -p .ab
    for i in "${!hashes[@]}"; do
        rev=${revs[$i]} hash=${hashes[$i]}
        mkdir -p ".ab/$hash"
        git archive "$hash" kernels | tar -x -C ".ab/$hash" || die "git archive $hash kernels failed"
        echo "$hash" >> .ab/order  # verify takes them in this order, as its budget allows
        echo "exported $rev as .ab/$hash/kernels"
    done
    exit 0
fi

case "$stage" in
    verify|records|matmul|timing) ;;
    *) die "the stage is one of export, verify, records, matmul, timing; got '${stage}'" ;;
esac
[ -n "${QUANTBENCH_GIT_COMMIT:-}" ] || die "set QUANTBENCH_GIT_COMMIT to the commit being run (git rev-parse HEAD, here)"
command -v nvidia-smi > /dev/null || die "no nvidia-smi: the $stage stage runs on the GPU machine"
# else the harness would run on the CPU and write interpreter timings under results/h200
python3 -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' \
    || die "torch sees no CUDA GPU: the $stage stage runs on the GPU machine"

short=${QUANTBENCH_GIT_COMMIT:0:7}
# the logs are written outside $OUT and come back only in the tar: a call brings back 8 files at most
logs_root=/tmp/gpu_session logs="/tmp/gpu_session/$stage-$short"
mkdir -p "$logs" "$OUT"
started=$(date -u +%Y%m%dT%H%M%SZ)
touch "$logs/.started"

if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site || die "installing .whl failed"
fi
python3 -m pip install -q -e . --no-deps --no-build-isolation > "$logs/pip.log" 2>&1 \
    || { tail -n 20 "$logs/pip.log" >&2; die "pip install -e . failed (its last lines above)"; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw --format=csv > "$logs/gpu.txt"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
case "$card" in  # a record's folder names its card
    *H200*) results=results/h200 ;;
    *H100*) results=results/h100 ;;
    *) die "neither an H200 nor an H100: $card" ;;
esac

# step NAME SECONDS COMMAND...: runs COMMAND under a time limit no later than the stage's budget
step() {
    local name=$1 limit=$2; shift 2
    local left=$(( BUDGET - SECONDS ))
    if [ "$left" -lt 30 ]; then
        echo "$name: not started, $left s of the stage's budget left" | tee -a "$logs/steps.txt"
        return
    fi
    [ "$limit" -le "$left" ] || limit=$left
    local t0=$SECONDS
    timeout "$limit" "$@" > "$logs/$name.log" 2>&1
    echo "$name: rc $? in $(( SECONDS - t0 )) s (limit $limit s)" | tee -a "$logs/steps.txt"
}

# record CONFIG: a run of configs/CONFIG.yaml under $results, compared with the newest earlier one
record() {
    local config=$1 limit=$2 before after
    before=$(ls -d "$results/$config"-20* 2> /dev/null | tail -1)
    step "run-$config" "$limit" python3 -m quantbench.harness.cli run "configs/$config.yaml" --out "$results" --no-progress
    after=$(ls -d "$results/$config"-20* 2> /dev/null | tail -1)
    if [ -n "$before" ] && [ -n "$after" ] && [ "$after" != "$before" ]; then
        step "compare-$config" 60 python3 -m quantbench.harness.cli compare "$before" "$after" --out "$logs/compare-$config"
    fi
}

case "$stage" in
    verify)
        # the suite's own limit inside the step's, so that a cut job still writes summary.md; 8 jobs,
        # since compiling the kernels is most of the time and takes the CPUs
        suite_s=$(( BUDGET - SECONDS - 40 )); [ "$suite_s" -le 300 ] || suite_s=300
        step gpu-suite $(( suite_s + 30 )) python3 scripts/gpu_suite.py tests/gpu/test_fast_forms.py \
            tests/test_quantize.py tests/test_unclamped_codes.py tests/gpu/test_kernel_paths.py --jobs 8 \
            --timeout "$suite_s" --out "$logs/test-gpu"
        # the revisions in the order they were exported (the first is the one that matters most)
        for name in $(cat .ab/order 2> /dev/null); do
            step "ab-$name-8192" 100 python3 scripts/ab_kernels.py ".ab/$name" --op quantize
        done
        for name in $(cat .ab/order 2> /dev/null); do
            step "ab-$name-28672x8192" 100 python3 scripts/ab_kernels.py ".ab/$name" --op quantize --shape 28672 8192
        done
        ;;
    records)
        record default 260
        record formats 200
        record w8a8 80
        ;;
    matmul)
        record matmul 400
        ;;
    timing)
        # alone on the GPU: these time things
        QUANTBENCH_TEST_DEVICE=cuda step timing-engines 240 python3 -m pytest -q -rfs -p no:cacheprovider \
            tests/gpu/test_timing_engines.py
        step prove-timing 280 python3 scripts/prove_timing.py "$results/prove-timing-$started"
        ;;
esac

# the run folders made in this stage, and its logs, in one file
made=$(find "$results" -mindepth 1 -maxdepth 1 -type d -newer "$logs/.started" 2> /dev/null)
tar -czf "$OUT/$stage-$short.tar.gz" $made -C "$logs_root" "$stage-$short"
[ ! -f "$logs/test-gpu/summary.md" ] || tail -n 25 "$logs/test-gpu/summary.md"
echo "packed into $OUT/$stage-$short.tar.gz: ${made:-no run folder} and the logs, $stage-$short/ ($SECONDS s in all)"
