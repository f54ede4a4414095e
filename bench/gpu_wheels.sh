#!/usr/bin/env bash
# Download the wheels bench/gpu.py needs on a bare CUDA machine (torch, transformers, peft,
# accelerate and triton installed; no network) into .whl/, for CPython 3.12 on manylinux x86_64.
#
#   bash bench/gpu_wheels.sh                 # here, with pip and internet (62 MB, 41 of them pyarrow)
#   bash bench/gpu_wheels.sh --bitsandbytes  # plus bitsandbytes 0.50.2 for the qlora job (43 MB more)
#   bash bench/gpu_wheels.sh --bitsandbytes --pack   # and pack them into .whl/site.tar.xz (~44 MB)
#
# The wheels together (105 MB with bitsandbytes) exceed what travels to a lent GPU machine (64 MiB).
# --pack unzips them into one site folder, drops bitsandbytes' libraries for CUDA < 13, ROCm and XPU
# (the machine has CUDA 13) and pyarrow's tests and headers, and xz-compresses the rest: 44 MB.
# Carry .whl/ (it is git-ignored), or with --pack only .whl/site.tar.xz, and there:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#       && export PYTHONPATH=/tmp/site:$PWD                                  # the wheels, or
#   mkdir -p /tmp/site && tar -xJf .whl/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD
#   python3 bench/gpu.py --check
#
# bench/gpu_session.sh is the whole device check in one command (tests, benchmark, profile).
#
# The list was worked out from each wheel's METADATA (`unzip -p X.whl '*/METADATA' | grep
# ^Requires-Dist`); the check at the end re-reads it and names any requirement that is neither
# in .whl/ nor in ASSUMED (what torch, transformers 5.17, huggingface_hub 1.x, peft and accelerate
# already bring). Versions are chosen for transformers 5.17 / huggingface_hub < 2 / numpy 1.26+.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.whl
PY=${PYTHON:-python3}

WHEELS=(
  # TRL and its hard requirements missing there
  trl==1.16.0                        # TRL itself (transformers >= 4.56.2)
  datasets==4.8.5                    # TRL imports it; 4.8 accepts huggingface_hub 0.25-1.x (5.x wants >= 1.31)
  pyarrow==21.0.0                    # datasets, TRL: the big one (~42 MB), no way around it
  pandas==2.3.3                      # datasets, TRL; 2.3 works with numpy 1.26 and 2.x (3.x needs numpy 2)
  python-dateutil==2.9.0.post0       # pandas
  six==1.17.0                        # python-dateutil
  pytz==2025.2                       # pandas 2.x
  tzdata==2025.2                     # pandas 2.x
  dill==0.4.1                        # datasets (< 0.4.2)
  multiprocess==0.70.19              # datasets (< 0.70.20), pairs with dill 0.4.1
  xxhash==4.1.0                      # datasets
  requests==2.32.5                   # datasets 4.x (huggingface_hub 1.x dropped it)
  urllib3==2.6.3                     # requests
  charset-normalizer==3.4.4          # requests (idna, certifi come with httpx)
  # alignlab's own requirements missing there
  pydantic==2.14.4                   # alignlab.config
  pydantic-core==2.50.5              # pydantic 2.14.4 pins it exactly
  annotated-types==0.8.0             # pydantic
  typing-inspection==0.4.5           # pydantic
  typing-extensions==4.16.0          # pydantic 2.14 needs >= 4.16; torch only asks >= 4.10
  rich==15.0.0                       # alignlab.tracking (present if typer is, but cheap to be sure)
  markdown-it-py==4.3.0              # rich
  mdurl==0.1.2                       # markdown-it-py
  pygments==2.21.0                   # rich
  math-verify==0.9.0                 # alignlab's math reward (tests, the math task)
  latex2sympy2_extended==1.11.0      # math-verify 0.9.0 pins it
  antlr4-python3-runtime==4.13.2     # latex2sympy2_extended (sympy comes with torch)
  # the TRL + Liger baseline
  liger-kernel==0.8.5                # needs torch and triton only
)
BNB=0 PACK=0
for arg in "$@"; do
  case "$arg" in
    --bitsandbytes) BNB=1 ;;
    --pack) PACK=1 ;;
    *) echo "unknown option $arg (use --bitsandbytes, --pack)" >&2; exit 2 ;;
  esac
done

mkdir -p "$OUT"
rm -f "$OUT"/*.whl "$OUT"/site.tar.xz  # the folder holds exactly this list
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$OUT" "${WHEELS[@]}"
if (( BNB )); then  # the qlora job (the issue's version); its wheel is tagged manylinux_2_24
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" --platform manylinux_2_24_x86_64 -d "$OUT" bitsandbytes==0.50.2
fi

"$PY" - "$OUT" <<'EOF'
import re, sys, zipfile
from pathlib import Path
try:
    from packaging.markers import Marker
except ImportError:
    from pip._vendor.packaging.markers import Marker
TARGET = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux", "platform_system": "Linux",
          "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "extra": ""}

ASSUMED = {  # on the GPU machine already: torch 2.11 (+triton), transformers 5.17, peft, accelerate and their requirements
    "torch", "triton", "transformers", "peft", "accelerate", "huggingface-hub", "tokenizers", "safetensors", "numpy",
    "packaging", "pyyaml", "regex", "tqdm", "typer", "typer-slim", "click", "shellingham", "filelock", "fsspec",
    "hf-xet", "httpx", "httpcore", "h11", "anyio", "idna", "certifi", "sniffio", "psutil", "sympy", "mpmath",
    "networkx", "jinja2", "markupsafe", "setuptools",
}
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
have = {norm(w.name.split("-")[0]) for w in wheels}
missing, total = {}, 0
for w in wheels:
    total += w.stat().st_size
    meta = next(n for n in zipfile.ZipFile(w).namelist() if n.endswith(".dist-info/METADATA"))
    for line in zipfile.ZipFile(w).read(meta).decode().splitlines():
        if not line.startswith("Requires-Dist:") or "extra ==" in line:
            continue
        spec = line.split(":", 1)[1].strip()
        if ";" in spec and not Marker(spec.split(";", 1)[1]).evaluate(TARGET):
            continue  # not for CPython 3.12 on Linux x86_64
        name = norm(re.match(r"[A-Za-z0-9_.\-]+", spec).group(0))
        if name not in have and name not in ASSUMED:
            missing.setdefault(name, []).append(w.name.split("-")[0])
for w in wheels:
    print(f"  {w.stat().st_size / 2**20:7.2f} MB  {w.name}")
print(f"{len(wheels)} wheels, {total / 2**20:.1f} MB in {sys.argv[1]}/")
if missing:
    print("requirements neither downloaded nor assumed present:", ", ".join(f"{k} (for {', '.join(v)})" for k, v in missing.items()))
    sys.exit(1)
print("every requirement is downloaded or assumed present on the GPU machine")
EOF

if (( PACK )); then
  STAGE=$(mktemp -d)
  trap 'rm -rf "$STAGE"' EXIT
  for w in "$OUT"/*.whl; do "$PY" -m zipfile -e "$w" "$STAGE"; done  # a wheel is a zip of site-packages
  find "$STAGE/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name '*_cpu.so' ! -name '*_cuda13*.so' -delete 2>/dev/null || true
  rm -rf "$STAGE/pyarrow/tests" "$STAGE/pyarrow/include" "$STAGE/pyarrow/src"
  tar -C "$STAGE" -cf - . | xz -6 -T0 > "$OUT/site.tar.xz"
  echo "packed $(du -m "$OUT/site.tar.xz" | cut -f1) MB into $OUT/site.tar.xz (carry that file alone)"
fi
